"""What the operator UI calls: create a tenant, ask for (re-)provisioning, read its status.

Requests never wait for InfluxDB: ``create_tenant`` commits the tenant as ``pending`` and
enqueues the provisioning task; ``tenant_influxdb_status`` bounds its live check by a short
timeout and never raises for InfluxDB's sake.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from datetime import datetime, timedelta
from typing import Any

from psycopg.errors import UniqueViolation
from sqlalchemy import Connection, select
from sqlalchemy.engine import Row
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from api_hooks.errors import (
    InvalidRetentionPeriod,
    InvalidTenantId,
    InvalidTenantName,
    TenantBusy,
    TenantExists,
    TenantNotFound,
    UnknownNode,
)
from api_hooks.shapes import (
    CreatedTenant,
    DeletedTenant,
)
from worker import events, node_marks, store
from worker.clock import database_clock
from worker.db import get_engine
from worker.events import OperatorAction, Route
from worker.models import influxdb_nodes
from worker.nodes import shared_pool
from worker.placement import lock_for_move, reserved_only
from worker.queues import Job
from worker.runs import new_chain, new_task_id, tenant_lock
from worker.settings import RETENTION_PERIOD_RULE, get_settings
from worker.settings_rules import retention_period_ok
from worker.states import ProvisioningState
from worker.tasks import enqueue, publish

TENANT_ID_MAX_LENGTH = 54  # "telemetry_" + 54 = 64 bytes, the portable InfluxDB name limit
TENANT_NAME_MAX_LENGTH = 200
TENANT_ID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_-]*$"
_TENANT_ID_FIRST = re.compile(r"[A-Za-z0-9]")
_TENANT_ID_REST = re.compile(r"[A-Za-z0-9_-]*")
# Who acts when a hook is called directly, without saying (see docs/events.md, "Actors").
PYTHON_ACTOR = "python"

logger = logging.getLogger(__name__)


def validate_tenant_id(tenant_id: object) -> str:
    """Return ``tenant_id`` if it may name a tenant; raise InvalidTenantId naming the rule."""
    if not isinstance(tenant_id, str):
        raise InvalidTenantId("tenant_id must be a string")
    if not tenant_id:
        raise InvalidTenantId("tenant_id must not be empty")
    if len(tenant_id) > TENANT_ID_MAX_LENGTH:
        raise InvalidTenantId(
            f"tenant_id must be at most {TENANT_ID_MAX_LENGTH} characters (got {len(tenant_id)})"
        )
    if not _TENANT_ID_FIRST.fullmatch(tenant_id[0]):
        raise InvalidTenantId("tenant_id must start with an ASCII letter or digit")
    if not _TENANT_ID_REST.fullmatch(tenant_id):
        raise InvalidTenantId(
            "tenant_id may contain only ASCII letters, digits, '_' and '-' "
            f"(pattern {TENANT_ID_PATTERN})"
        )
    return tenant_id


def validate_tenant_name(name: object) -> str:
    """Return the stripped display name; raise InvalidTenantName when it is unusable.

    Names are free text shown to operators, so text that could mislead or break a page is
    refused: control characters, line separators, invisible format characters (bidi
    overrides such as U+202E among them; tag characters outside a flag), lone surrogates (not
    UTF-8), and a name with nothing visible in it.
    """
    if not isinstance(name, str):
        raise InvalidTenantName("name must be a string")
    stripped = name.strip(_SPACES)  # not str.strip(): it drops control characters at the edges
    if not stripped:
        raise InvalidTenantName("name must not be empty")
    if len(stripped) > TENANT_NAME_MAX_LENGTH:
        raise InvalidTenantName(f"name must be at most {TENANT_NAME_MAX_LENGTH} characters")
    flags = _flag_tags(stripped)
    for at, ch in enumerate(stripped):
        category = unicodedata.category(ch)
        if category == "Cs":
            raise InvalidTenantName("name must be valid Unicode text (it holds a lone surrogate)")
        if category in ("Cc", "Zl", "Zp"):
            raise InvalidTenantName(
                f"name must not contain control characters or line breaks (U+{ord(ch):04X})"
            )
        # (joiners: emoji sequences need them; tag characters: only a flag's)
        if category == "Cf" and ch not in "\u200c\u200d" and at not in flags:
            raise InvalidTenantName(
                "name must not contain invisible formatting or bidirectional control "
                f"characters (U+{ord(ch):04X})"
            )
    if not any(unicodedata.category(ch)[0] in "LNPS" and ch not in _BLANK for ch in stripped):
        raise InvalidTenantName("name must show a letter, digit, punctuation mark or symbol")
    return stripped


# Unicode's space separators (category Zs): what may surround a name and is dropped.
_SPACES = " \u00a0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u202f\u205f\u3000"
# Letters and symbols drawn as nothing: Hangul fillers, the blank Braille pattern.
_BLANK = "\u115f\u1160\u3164\uffa0\u2800"
# Tag characters are drawn as nothing: allowed only as a flag's (U+1F3F4, up to six letters,
# the cancel tag U+E007F), where any other run would carry text a page does not show.
_TAG_RUN = re.compile("[\U000e0020-\U000e007f]+")
_FLAG_TAGS = re.compile("[\U000e0020-\U000e007e]{1,6}\U000e007f")


def _flag_tags(name: str) -> set[int]:
    """Where a flag's tag characters stand in ``name``: runs right after U+1F3F4 of one to six
    tag letters and the cancel tag."""
    return {
        at
        for run in _TAG_RUN.finditer(name)
        if run.start() and name[run.start() - 1] == "\U0001f3f4" and _FLAG_TAGS.fullmatch(run[0])
        for at in range(*run.span())
    }


def validate_retention_period(retention_period: object) -> str | None:
    """Return the retention period (None: the default); raise InvalidRetentionPeriod.

    Only what InfluxDB 3 Core accepts at creation passes: ``30d``, ``12h``, ``2w``, ``3mo``,
    ``1y``. Minutes, seconds and compound values (``90m``, ``1d12h``) are refused here rather
    than failing later in the worker.
    """
    if retention_period is None:
        return get_settings().influxdb_retention_period
    if not isinstance(retention_period, str) or not retention_period_ok(retention_period):
        raise InvalidRetentionPeriod(
            f"retention_period must be {RETENTION_PERIOD_RULE}, e.g. 30d, 12h, 2w, 3mo or 1y "
            "(InfluxDB 3 Core takes no minutes and no compound values such as 1d12h)"
        )
    return retention_period


def create_tenant(
    tenant_id: str,
    name: str,
    retention_period: str | None = None,
    *,
    actor: str | None = PYTHON_ACTOR,
    route: str = Route.PYTHON,
) -> CreatedTenant:
    """Store the tenant as ``pending`` and enqueue its provisioning; never waits for InfluxDB.

    ``retention_period`` (e.g. ``"30d"``) is passed when the database is created; None takes
    INFLUXDB_RETENTION_PERIOD (unset: keep data forever). If the broker is down the tenant is
    still created and ``influxdb.queued`` is False: the reconciler enqueues it later.
    ``actor`` and ``route`` name who asked, in the events of the change (docs/events.md).
    Raises InvalidTenantId, InvalidTenantName, InvalidRetentionPeriod, TenantExists.
    """
    tenant_id = validate_tenant_id(tenant_id)
    name = validate_tenant_name(name)
    retention = validate_retention_period(retention_period)
    database = get_settings().database_name(tenant_id)
    details = {"name": name, "retention_period": retention, "database": database}
    try:
        with get_engine().connect() as conn:
            store.create(conn, tenant_id, name, retention, actor=actor, route=route, data=details)
    except IntegrityError as exc:
        with get_engine().connect() as conn:
            row = store.load(conn, tenant_id)
        if row is None or not isinstance(exc.orig, UniqueViolation):
            # A rule of the UI's own table (a NOT NULL column, a foreign key, a unique name):
            # the id is free, and "exists" would be wrong (a retry fails the same way)
            raise
        message = f"tenant {tenant_id!r} already exists"
        if row is not None and row.influxdb_state == ProvisioningState.DEPROVISIONING:
            # Its id is free once its database is gone: say so, not just "exists".
            message += ": it is being deleted; create it again once its deletion has finished"
        raise TenantExists(message) from exc
    # Only after the commit: a worker must find the row the message names.
    queued = publish(tenant_id, Job.PROVISION)
    if not queued:
        # "Never queued" is the reconciler's cue to enqueue it at its next run. Postgres lost
        # too: the tenant is stored all the same (a 503 would say nothing was), and its row's
        # enqueued_at, the insert's, sends it a grace later.
        try:
            with get_engine().begin() as conn:
                store.mark_enqueued(conn, [tenant_id], None)
        except (DBAPIError, PoolTimeout):
            logger.warning("tenant %s: stored, not queued; the reconciler sends it", tenant_id)
    return {
        "tenant_id": tenant_id,
        "name": name,
        "status": "created",
        "influxdb": {
            "state": ProvisioningState.PENDING.value,
            "queued": queued,
            "database": database,
        },
    }


def request_provisioning(
    tenant_id: str, *, actor: str | None = PYTHON_ACTOR, route: str = Route.PYTHON
) -> bool:
    """Run provisioning now (an operator's retry); True when the message was published.

    A ``failed`` tenant goes back to ``pending`` with a fresh attempt budget. A tenant with a
    scheduled retry runs now, and this message *replaces* the scheduled one (one retry chain
    per tenant: pressing retry five times during an outage never starts five chains). A
    provisioned one is only re-verified; one being deleted gets its deletion run now.
    ``actor`` and ``route``: who asked (docs/events.md). Raises TenantNotFound.
    """
    tenant_id = validate_tenant_id(tenant_id)
    task_id = new_task_id()
    with get_engine().begin() as conn:
        events.acting(conn, actor, route)
        row = store.lock_for_request(conn, tenant_id)
        if row is None:
            raise TenantNotFound(f"tenant {tenant_id!r} does not exist")
        store.request_retry(conn, row, new_chain(task_id), database_clock(conn)())
        job = (
            Job.DEPROVISION
            if row.influxdb_state == ProvisioningState.DEPROVISIONING
            else Job.PROVISION
        )
        details = {"previous_state": row.influxdb_state, "job": job.value}
        events.record(conn, tenant_id, OperatorAction.RETRY, details)
    # The message names itself only where it took over a scheduled retry's chain (it then goes
    # with the retries); anything else is new work, queued behind what came before.
    hands_on = row.influxdb_state != ProvisioningState.FAILED and row.influxdb_retry_chain
    return enqueue(tenant_id, job, task_id if hands_on else None)


def adopt_database(
    tenant_id: str,
    node: str | None = None,
    *,
    actor: str | None = PYTHON_ACTOR,
    route: str = Route.PYTHON,
) -> bool:
    """Declare the database of the tenant's name on ``node`` (default: the tenant's recorded
    server) the tenant's own, whoever made it, and provision with it; True when queued.

    For a tenant stopped as ``name_taken`` after the operator checked that the data there is
    this tenant's. Its marker is rewritten with the tenant's incarnation. Raises
    TenantNotFound, UnknownNode (not in the pool, or none given for a tenant without one) and
    TenantBusy (provisioned, unless its server left the nodes file and ``node`` is given;
    being provisioned or being deleted). ``actor`` and ``route``:
    who asked (docs/events.md).
    """
    tenant_id = validate_tenant_id(tenant_id)
    if node is not None and shared_pool().node(node) is None:
        raise UnknownNode(f"node {node!r} is not in the node pool")
    with get_engine().begin() as conn:
        events.acting(conn, actor, route)
        # Moving its slot: the servers' rows before the tenant's, as a placer takes them.
        row = (
            lock_for_move(conn, tenant_id, node)
            if node
            else store.lock_for_request(conn, tenant_id)
        )
        if row is None:
            raise TenantNotFound(f"tenant {tenant_id!r} does not exist")
        # A provisioned tenant may move off a server that left the nodes file (runbook, "Node
        # not configured"): its database copied to ``node`` first.
        leaving = row.influxdb_node is not None and shared_pool().node(row.influxdb_node) is None
        moving = row.influxdb_state == ProvisioningState.PROVISIONED and node and leaving
        if row.influxdb_state not in _ADOPTABLE_STATES and not moving:
            raise TenantBusy(
                f"tenant {tenant_id!r} is {row.influxdb_state}: only a failed, pending or "
                "waiting tenant can adopt a database (a provisioned one only to move off a "
                "server that left the nodes file)"
            )
        home = node or (None if reserved_only(row) else row.influxdb_node)  # a slot: not a home
        if home is None:
            raise UnknownNode(
                f"tenant {tenant_id!r} has no server yet: name the node that holds its database"
            )
        now = database_clock(conn)()
        store.request_adoption(conn, tenant_id, home, now)
        details = {"node": home, "previous_state": row.influxdb_state}
        events.record(conn, tenant_id, OperatorAction.ADOPT, details)
        handed = _hand_on(conn, row, now) if row.influxdb_node != home else ()
    for waiting in handed:
        enqueue(waiting, Job.PROVISION)
    return enqueue(tenant_id, Job.PROVISION)


def _hand_on(conn: Connection, row: Row[Any], now: datetime) -> tuple[str, ...]:
    """Where the request let go of a slot only reserved for the tenant (its capacity wait had
    just ended), the slot goes to the next tenant in line in the request's transaction, as a
    deletion's does (``worker.node_marks.hand_over``): their ids, to queue once committed."""
    if not reserved_only(row):
        return ()
    node = shared_pool().node(row.influxdb_node)
    return node_marks.hand_over(conn, node, now) if node else ()


_ADOPTABLE_STATES = frozenset(
    {
        ProvisioningState.FAILED,
        ProvisioningState.PENDING,
        ProvisioningState.RETRYING,
        ProvisioningState.WAITING_FOR_CAPACITY,
    }
)


def delete_tenant(
    tenant_id: str, *, actor: str | None = PYTHON_ACTOR, route: str = Route.PYTHON
) -> DeletedTenant:
    """Start deprovisioning: the tenant goes to ``deprovisioning`` at once, a task soft-deletes
    its database and then removes the tenant, freeing its node slot and its id.

    Idempotent: deleting a tenant already being deleted queues the work again. If the broker
    is down, ``influxdb.queued`` is False and the reconciler finishes it. ``actor`` and
    ``route``: who asked (docs/events.md). Raises TenantNotFound.
    """
    tenant_id = validate_tenant_id(tenant_id)
    database = get_settings().database_name(tenant_id)
    with get_engine().begin() as conn:
        events.acting(conn, actor, route)
        row, now = store.lock_for_request(conn, tenant_id), database_clock(conn)()
        found = store.request_deletion(conn, tenant_id, now)
        if found:
            events.record(conn, tenant_id, OperatorAction.DELETE, {"database": database})
        handed = _hand_on(conn, row, now) if row is not None else ()
    if not found:
        raise TenantNotFound(f"tenant {tenant_id!r} does not exist")
    for waiting in handed:
        enqueue(waiting, Job.PROVISION)
    queued = enqueue(tenant_id, Job.DEPROVISION)
    return {
        "tenant_id": tenant_id,
        "influxdb": {
            "state": ProvisioningState.DEPROVISIONING.value,
            "queued": queued,
            "database": database,
        },
    }


def forget_tenant(
    tenant_id: str, *, actor: str | None = PYTHON_ACTOR, route: str = Route.PYTHON
) -> str:
    """Remove a tenant being deleted whose server left the nodes file for good, touching no
    server; the name of that server (its database, if the server ever comes back, is an
    orphan there). For operators (``tenantctl forget``): a deletion waits for its server
    otherwise, and a dead one never returns. Raises TenantNotFound, and TenantBusy for a tenant
    not being deleted, whose server is in the nodes file (this process's, or the one the
    workers last wrote down: its deletion goes on), or that a run holds now.
    """
    tenant_id = validate_tenant_id(tenant_id)
    with get_engine().connect() as conn, tenant_lock(conn, tenant_id) as free:
        if not free:
            raise TenantBusy(f"a run holds tenant {tenant_id!r} now: try again in a moment")
        events.acting(conn, actor, route)
        row = store.lock_for_request(conn, tenant_id)
        if row is None:
            raise TenantNotFound(f"tenant {tenant_id!r} does not exist")
        node = row.influxdb_node
        if row.influxdb_state != ProvisioningState.DEPROVISIONING or node is None:
            raise TenantBusy(
                f"tenant {tenant_id!r} is {row.influxdb_state}: only a tenant being deleted, "
                "waiting for a server that left the nodes file, can be forgotten (delete it first)"
            )
        # Gone for good: in no nodes file (here, or the one last written down), and listed by
        # no reconcile run for an hour (a file out of date somewhere cannot make a live one so).
        seen = conn.execute(
            select(influxdb_nodes.c.configured, influxdb_nodes.c.observed_at).where(
                influxdb_nodes.c.name == node
            )
        ).first()
        recently = database_clock(conn)() - timedelta(hours=1)
        alive = seen is not None and (seen.configured or (seen.observed_at or recently) > recently)
        if shared_pool().node(node) is not None or alive:
            raise TenantBusy(
                f"tenant {tenant_id!r} is on node {node}, which is in a nodes file or answered a "
                "listing within the hour: its deletion goes on there (forget is for a server "
                "gone for good)"
            )
        events.record(conn, tenant_id, OperatorAction.FORGET, {"node": node})
        events.kept_on(conn, node)  # its tenant.deprovisioned says the data may be there
        store.remove(conn, tenant_id)
        conn.commit()
    return str(node)
