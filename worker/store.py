"""The ``tenants`` row: the one module that writes it, for the hooks, the runs and the reconciler.

Each function is one intention (create, ask for a retry, start an attempt, take over a chain,
...), and each write is guarded by what the caller saw: a provisioning run never writes a
tenant that is being deleted (the operator does not wait for the run's lock), the reconciler
moves a row only from the state it found it in. Stored errors pass through :func:`clean_error`
(secrets removed, no NUL, bounded); times come from the caller, on the database's clock
(``worker.clock``). Nothing here commits unless its docstring says so: the caller's to do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, bindparam, case, delete, func, select, text
from sqlalchemy import update as sql_update
from sqlalchemy.engine import Row
from sqlalchemy.sql.dml import Update

from worker import events
from worker.clock import DATABASE_NOW
from worker.db import autocommit
from worker.models import tenants
from worker.redaction import redact_capped
from worker.states import RESERVED_ONLY, STATES, Adoption, ProvisioningState, Reason

MAX_STORED_ERROR = 500
_ROW = tenants.c
_DELETING = _ROW.influxdb_state == ProvisioningState.DEPROVISIONING
_NAME_TAKEN = _ROW.influxdb_error_reason == Reason.NAME_TAKEN
_WAITING = _ROW.influxdb_state == ProvisioningState.WAITING_FOR_CAPACITY
_RESERVED_ONLY = and_(*(_ROW[name].is_not_distinct_from(v) for name, v in RESERVED_ONLY.items()))
_NOW = DATABASE_NOW.label("read_at")  # a run's clock starts from it (worker.clock)
_CREATE = text("SELECT tenant_create(:id, :name, :retention, :actor, :route, CAST(:data AS jsonb))")


def clean_error(message: str, secrets: Iterable[str]) -> str:
    """``message`` fit for storage: secrets removed, no NUL, bounded length. Cut before it
    is redacted (``redact_capped``): a server's megabyte of error costs what 500 characters do."""
    return redact_capped(message, secrets, MAX_STORED_ERROR).replace("\x00", "")


# -- reading ----------------------------------------------------------------------------------


def load(conn: Connection, tenant_id: str) -> Row[Any] | None:
    """The tenant's row (a committed read) and ``read_at``, the database's time then; or None."""
    with autocommit(conn):
        row = conn.execute(select(tenants, _NOW).where(_ROW.tenant_id == tenant_id)).first()
    conn.commit()
    return row


def page(conn: Connection, after: str, size: int, columns: Sequence[str]) -> list[Any]:
    """Up to ``size`` rows with ids after ``after``, by id (keyset pagination), with only
    ``columns``; committed."""
    rows = conn.execute(
        select(*(_ROW[name] for name in columns))
        .where(_ROW.tenant_id > after)
        .order_by(_ROW.tenant_id)
        .limit(size)
    ).all()
    conn.commit()
    return list(rows)


def count_by_state(conn: Connection) -> dict[str, int]:
    """Tenants per provisioning state, every state present (zero included)."""
    counts = dict.fromkeys(STATES, 0)
    query = select(_ROW.influxdb_state, func.count()).group_by(_ROW.influxdb_state)
    counts.update({state: int(count) for state, count in conn.execute(query)})
    return counts


def listing(conn: Connection, state: str | None, limit: int) -> list[Row[Any]]:
    """Rows by id, optionally only those in ``state``."""
    query = select(tenants).order_by(_ROW.tenant_id).limit(limit)
    if state is not None:
        query = query.where(_ROW.influxdb_state == state)
    return list(conn.execute(query).all())


# -- the hooks: what operators ask for --------------------------------------------------------


def create(
    conn: Connection,
    tenant_id: str,
    name: str,
    retention_period: str | None,
    *,
    actor: str | None,
    route: str,
    data: Mapping[str, Any],
) -> None:
    """A new tenant, ``pending`` and queued, and its ``operator.created`` event: one statement
    (migration 0015), committed unless a transaction is open. IntegrityError if it exists."""
    row = {"id": tenant_id, "name": name, "retention": retention_period, "route": str(route)}
    row |= {"actor": events.clean_actor(actor), "data": events.encode(data)}
    with autocommit(conn):
        conn.execute(_CREATE, row)


def mark_enqueued(
    conn: Connection, tenant_ids: Sequence[str], now: datetime | ColumnElement[datetime] | None
) -> None:
    """Record when messages were published (None: never, the reconciler's cue to publish)."""
    if not tenant_ids:
        return
    conn.execute(
        sql_update(tenants)
        .where(_ROW.tenant_id.in_(bindparam("ids", expanding=True)))
        .values(influxdb_enqueued_at=now),
        {"ids": list(tenant_ids)},
    )


def lock_for_request(conn: Connection, tenant_id: str, skip: bool = False) -> Row[Any] | None:
    """The row, locked until the caller's transaction ends (``skip``: None if held elsewhere)."""
    return conn.execute(
        select(tenants).where(_ROW.tenant_id == tenant_id).with_for_update(skip_locked=skip)
    ).first()


def request_retry(conn: Connection, row: Row[Any], chain: str, now: datetime) -> None:
    """An operator retry of a locked row: a failed tenant starts a new episode; a scheduled
    retry is handed to the message ``chain`` (replaced, never doubled)."""
    if row.influxdb_state == ProvisioningState.FAILED:
        values: dict[str, Any] = {
            "influxdb_state": ProvisioningState.PENDING,
            "influxdb_attempts": 0,
            "influxdb_next_attempt_at": None,
            "influxdb_retry_chain": None,
        }
    elif row.influxdb_retry_chain is not None:
        values = {"influxdb_retry_chain": chain}
    else:
        return
    deleting = row.influxdb_state == ProvisioningState.DEPROVISIONING  # a deletion's chain too
    values["influxdb_updated_at"] = now
    conn.execute(update_statement(row.tenant_id, deleting=deleting, **values))


def request_adoption(conn: Connection, tenant_id: str, node: str, now: datetime) -> None:
    """The operator declared the database on ``node`` the tenant's: provision with it."""
    conn.execute(
        sql_update(tenants)
        .where(_ROW.tenant_id == tenant_id)
        .values(
            influxdb_state=ProvisioningState.PENDING,
            influxdb_node=node,
            influxdb_adopt=Adoption.ANY,
            influxdb_attempts=0,
            influxdb_create_sent_to=None,
            influxdb_next_attempt_at=None,
            influxdb_retry_chain=None,
            influxdb_error_reason=None,
            influxdb_last_error=f"adoption of the database on node {node} requested",
            influxdb_updated_at=now,
        )
    )


def request_deletion(conn: Connection, tenant_id: str, now: datetime) -> bool:
    """The tenant goes to ``deprovisioning`` at once (a scheduled provisioning retry is void;
    a ``name_taken`` one never owned its database's name); False when there is no such tenant."""
    found = conn.execute(
        sql_update(tenants)
        .where(_ROW.tenant_id == tenant_id)
        .values(
            influxdb_state=ProvisioningState.DEPROVISIONING,
            # A deletion asked again keeps its wait; a new one starts its own.
            influxdb_delete_after=case((_DELETING, _ROW.influxdb_delete_after), else_=None),
            influxdb_attempts=0,
            influxdb_provisioned_at=case((_NAME_TAKEN, None), else_=_ROW.influxdb_provisioned_at),
            influxdb_node=case((_RESERVED_ONLY, None), else_=_ROW.influxdb_node),  # nothing there
            influxdb_error_reason=None,
            influxdb_last_error=None,
            influxdb_next_attempt_at=None,
            influxdb_retry_chain=None,
            influxdb_updated_at=now,
        )
    )
    return bool(found.rowcount)


# -- the runs ---------------------------------------------------------------------------------


def update(conn: Connection, tenant_id: str, **options: Any) -> bool:
    """Send :func:`update_statement`; False when no row was changed."""
    return bool(conn.execute(update_statement(tenant_id, **options)).rowcount)


def update_statement(
    tenant_id: str,
    *,
    deleting: bool = False,
    expect: Mapping[str, Any] | None = None,
    **values: Any,
) -> Update:
    """Set ``values`` on the tenant's row during a run (:func:`update` sends it alone).

    A provisioning run (``deleting=False``) never writes a tenant that is being deleted; a
    deprovisioning run (``deleting=True``) writes only a tenant that is. ``expect`` makes the
    write a compare-and-set: each named column must still hold the given value (NULL too).
    """
    guards = [_DELETING if deleting else ~_DELETING]
    for name, value in (expect or {}).items():
        guards.append(_ROW[name].is_not_distinct_from(value))
    return sql_update(tenants).where(_ROW.tenant_id == tenant_id, *guards).values(**values)


def settle(
    conn: Connection,
    tenant_id: str,
    state: ProvisioningState,
    reason: Reason,
    message: str,
    now: datetime,
    *,
    deleting: bool = False,
    **values: Any,
) -> bool:
    """End a run without starting an attempt: ``state``, with the reason shown and no retry
    scheduled (guarded as :func:`update`)."""
    return update(
        conn,
        tenant_id,
        deleting=deleting,
        influxdb_state=state,
        influxdb_error_reason=reason,
        influxdb_last_error=message,
        influxdb_next_attempt_at=None,
        influxdb_retry_chain=None,
        influxdb_updated_at=now,
        **values,
    )


def reserve_slot(conn: Connection, tenant_id: str, node: str) -> None:
    """Placement's reservation: the tenant, pending and not placed, holds a slot on ``node``."""
    unplaced = {"influxdb_state": ProvisioningState.PENDING, "influxdb_node": None}
    conn.execute(update_statement(tenant_id, expect=unplaced, influxdb_node=node))


def remove(conn: Connection, tenant_id: str) -> None:
    """The end of a deletion: the row goes, and with it the slot and the id."""
    conn.execute(delete(tenants).where(_ROW.tenant_id == tenant_id))


# -- the reconciler ---------------------------------------------------------------------------


def take_over(conn: Connection, row: Row[Any], chain: str, now: datetime) -> bool:
    """Hand an overdue scheduled retry to the message ``chain``, if nothing moved since."""
    return bool(
        conn.execute(
            sql_update(tenants)
            .where(
                _ROW.tenant_id == row.tenant_id,
                _ROW.influxdb_state == row.influxdb_state,
                _ROW.influxdb_retry_chain.is_not_distinct_from(row.influxdb_retry_chain),
            )
            .values(influxdb_retry_chain=chain, influxdb_updated_at=now)
        ).rowcount
    )


def to_pending(
    conn: Connection,
    tenant_ids: Sequence[str],
    expected: ProvisioningState,
    still_true: Any,
    *,
    reason: Reason,
    message: str,
    new_episode: bool,
    now: datetime,
    adopt: Adoption | None = None,
) -> list[str]:
    """Move rows found in ``expected`` back to ``pending``; the ids that moved. The state is
    re-checked under the row lock (skipping rows a worker holds): a worker may have moved the
    tenant since it was read. ``new_episode`` restores the attempt budget; ``adopt``: which
    database of its name the run may take (``worker.identity``)."""
    locked = list(
        conn.execute(
            select(_ROW.tenant_id)
            .where(_ROW.tenant_id.in_(list(tenant_ids)))
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    if not locked:
        return []
    moved = conn.execute(
        sql_update(tenants)
        .where(_ROW.tenant_id.in_(locked), _ROW.influxdb_state == expected, still_true)
        .values(
            influxdb_state=ProvisioningState.PENDING,
            influxdb_error_reason=reason,
            influxdb_last_error=message[:MAX_STORED_ERROR],
            influxdb_next_attempt_at=None,
            influxdb_retry_chain=None,
            influxdb_updated_at=now,
            **({"influxdb_attempts": 0} if new_episode else {}),
            **({"influxdb_adopt": adopt} if adopt else {}),
        )
        .returning(_ROW.tenant_id)
    ).scalars()
    return sorted(moved)


def record_homes(conn: Connection, homes: Mapping[str, tuple[str, Any]]) -> list[str]:
    """Rows without a server: the server where their database was found (tenant -> node, and
    the incarnation it was found for: not an id deleted and made again since). Only rows no
    transaction holds (a run locating one meanwhile starts over); returns those."""
    found = select(_ROW.tenant_id, _ROW.influxdb_incarnation).where(
        _ROW.tenant_id.in_(list(homes)), _ROW.influxdb_node.is_(None)
    )
    rows = conn.execute(found.order_by(_ROW.tenant_id).with_for_update(skip_locked=True))
    free = [tenant_id for tenant_id, seen in rows if seen == homes[tenant_id][1]]
    if free:
        conn.execute(
            sql_update(tenants)
            .where(_ROW.tenant_id == bindparam("id"), _ROW.influxdb_node.is_(None))
            .values(influxdb_node=bindparam("node")),
            [{"id": tenant_id, "node": homes[tenant_id][0]} for tenant_id in free],
        )
    return free


def give_new_homes(conn: Connection, tenant_ids: Sequence[str], now: datetime) -> list[str]:
    """Rows from before the worker confirmed absent everywhere: placed as new from now on."""
    return list(
        conn.execute(
            sql_update(tenants)
            .where(
                _ROW.tenant_id.in_(list(tenant_ids)),
                _ROW.influxdb_node.is_(None),
                _ROW.influxdb_adopt == Adoption.UNMARKED,
            )
            .values(influxdb_adopt=None, influxdb_updated_at=now)
            .returning(_ROW.tenant_id)
        ).scalars()
    )


def fail_unplaced(
    conn: Connection, row: Row[Any], reason: Reason, message: str, now: datetime
) -> None:
    """A row from before the worker that cannot be placed (found on several servers), as read:
    not one made again with its id since (a new incarnation, placed as new)."""
    conn.execute(
        sql_update(tenants)
        .where(
            _ROW.tenant_id == row.tenant_id,
            _ROW.influxdb_incarnation == row.influxdb_incarnation,
            _ROW.influxdb_state == ProvisioningState.PENDING,
            _ROW.influxdb_node.is_(None),
            _ROW.influxdb_adopt == Adoption.UNMARKED,
        )
        .values(
            influxdb_state=ProvisioningState.FAILED,
            influxdb_provisioned_at=None,  # not proven the owner of any database of its name
            influxdb_error_reason=reason,
            influxdb_last_error=message[:MAX_STORED_ERROR],
            influxdb_updated_at=now,
        )
    )


def end_waits(conn: Connection, count: int, now: datetime) -> list[str]:
    """The ``count`` oldest tenants waiting for capacity go back to ``pending`` with a fresh
    budget (the wait ended the last episode); their ids, oldest first."""
    # Two statements on purpose: in ``UPDATE ... WHERE id IN (SELECT ... LIMIT n FOR UPDATE
    # SKIP LOCKED)`` Postgres may run the subquery more than once, and move more than n rows.
    oldest = list(
        conn.execute(
            select(_ROW.tenant_id)
            .where(_WAITING)
            .order_by(_ROW.created_at, _ROW.tenant_id)
            .limit(count)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    if not oldest:
        return []
    moved = conn.execute(
        sql_update(tenants)
        .where(_ROW.tenant_id.in_(oldest), _WAITING)
        .values(
            influxdb_state=ProvisioningState.PENDING, influxdb_attempts=0, influxdb_updated_at=now
        )
        .returning(_ROW.tenant_id)
    ).scalars()
    # In the select's order: a UI's table may hold a NULL created_at (last in Postgres' order;
    # a sort in Python would raise)
    return sorted(moved, key=oldest.index)
