"""The ``tenants`` row: the one place that reads it for a run and writes it during one.

Every write of a provisioning or deprovisioning run goes through :func:`update`, which is
guarded: once the operator asked for deletion (without waiting for the tenant's lock), nothing
a provisioning run writes may turn the tenant back into a live one. Stored errors pass through
:func:`clean_error` (secrets removed, no NUL, bounded), and time comes from an injectable clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy import update as sql_update
from sqlalchemy.engine import Row

from worker.models import provisioning_attempts, tenants
from worker.redaction import redact
from worker.states import AttemptOutcome, ProvisioningState, Reason

Clock = Callable[[], datetime]
MAX_STORED_ERROR = 500


def utcnow() -> datetime:
    """The default clock: aware UTC now."""
    return datetime.now(UTC)


def clean_error(message: str, secrets: Iterable[str]) -> str:
    """``message`` fit for storage: secrets removed, no NUL, bounded length."""
    message = redact(message, secrets).replace("\x00", "")
    return message if len(message) <= MAX_STORED_ERROR else message[:MAX_STORED_ERROR] + "..."


def load(conn: Connection, tenant_id: str) -> Row[Any] | None:
    """The tenant's row (a committed read), or None."""
    row = conn.execute(select(tenants).where(tenants.c.tenant_id == tenant_id)).first()
    conn.commit()
    return row


def update(
    conn: Connection,
    tenant_id: str,
    *,
    deleting: bool = False,
    expect: Mapping[str, Any] | None = None,
    **values: Any,
) -> bool:
    """Set ``values`` on the tenant's row; does not commit. False when no row was changed.

    A provisioning run (``deleting=False``) never writes a tenant that is being deleted; a
    deprovisioning run (``deleting=True``) writes only a tenant that is. ``expect`` makes the
    write a compare-and-set: each named column must still hold the given value (NULL too).
    """
    state = tenants.c.influxdb_state
    guards = [
        state == ProvisioningState.DEPROVISIONING
        if deleting
        else state != ProvisioningState.DEPROVISIONING
    ]
    for name, value in (expect or {}).items():
        guards.append(tenants.c[name].is_not_distinct_from(value))
    changed = conn.execute(
        sql_update(tenants).where(tenants.c.tenant_id == tenant_id, *guards).values(**values)
    )
    return bool(changed.rowcount)


def log_attempt(
    conn: Connection,
    tenant_id: str,
    number: int,
    started: datetime,
    finished: datetime,
    outcome: AttemptOutcome,
    reason: Reason | None,
    retry_at: datetime | None = None,
) -> None:
    """Append one attempt to ``provisioning_attempts``; does not commit."""
    conn.execute(
        insert(provisioning_attempts).values(
            tenant_id=tenant_id,
            attempt=number,
            started_at=started,
            finished_at=finished,
            outcome=outcome.value,
            reason=None if reason is None else reason.value,
            retry_at=retry_at,
        )
    )
