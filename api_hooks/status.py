"""What operators and the UI read about tenants: the stored state, plus a bounded live check.

Reading never waits on InfluxDB for long: the live check is bounded by LIVE_CHECK_TIMEOUT
(default 2 s) and never raises; a slow or failing server shows in ``live.error``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.engine import Row

from api_hooks.errors import InvalidTenantId, TenantNotFound
from api_hooks.shapes import (
    InfluxDBStatus,
    LiveStatus,
    NodeReport,
    TenantStatsBody,
    TenantSummary,
)
from api_hooks.tenants import validate_tenant_id
from worker import store
from worker.db import get_engine
from worker.nodes import shared_pool
from worker.placement import NodeUsage, node_rows, reserved_only, tenants_per_node, usage
from worker.redaction import redact_url
from worker.settings import get_settings
from worker.states import RESUMABLE_REASONS, STATES, Adoption, ProvisioningState, Reason


def list_tenants(state: str | None = None, limit: int = 100) -> list[TenantSummary]:
    """Tenants ordered by id, optionally only those in ``state``, at most ``limit`` (1 or
    more); ValueError for a bad state or limit."""
    if state is not None and state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)} (got {state!r})")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a whole number of at least 1 (got {limit!r})")
    with get_engine().connect() as conn:
        rows = store.listing(conn, state, limit)
    return [
        {
            "tenant_id": row.tenant_id,
            "name": row.name,
            "state": row.influxdb_state,
            "node": row.influxdb_node,
            "attempts": row.influxdb_attempts,
            "error_reason": row.influxdb_error_reason,
            "created_at": _iso(row.created_at),
            "updated_at": _iso(row.influxdb_updated_at),
        }
        for row in rows
    ]


def tenant_influxdb_status(tenant_id: str, live: bool = True) -> InfluxDBStatus:
    """Provisioning state from Postgres and, with ``live``, a bounded check of InfluxDB.

    The live check waits at most the configured LIVE_CHECK_TIMEOUT (default 2 s) and never
    raises: a slow or failing InfluxDB shows up in ``live.error``. Raises TenantNotFound.
    """
    return _influxdb_status(_row(tenant_id), live)


def tenant_stats(tenant_id: str, live: bool = True) -> TenantStatsBody:
    """What the UI's tenant stats page returns: the tenant's id, name and status, and its
    ``influxdb`` block (``tenant_influxdb_status``). Raises TenantNotFound."""
    row = _row(tenant_id)
    return {
        "tenant_id": row.tenant_id,
        "name": row.name,
        "status": row.status,
        "influxdb": _influxdb_status(row, live),
    }


def node_report() -> list[NodeReport]:
    """Every server of the pool, then every server that left the nodes file while tenants
    live there (said plainly, never hidden): limit, tenants placed, what was last seen."""
    configured = shared_pool().nodes()
    with get_engine().connect() as conn:
        seen = node_rows(conn)
        slots = usage(conn, configured, seen)
    placed = tenants_per_node(seen)
    reports = [_report(u.node.name, u, seen.get(u.node.name), u.used) for u in slots]
    left = sorted(set(placed) - {n.name for n in configured})
    return reports + [_report(name, None, seen.get(name), placed[name]) for name in left]


def _report(name: str, slots: NodeUsage | None, row: Any, tenants: int) -> NodeReport:
    """One server: ``slots`` when it is in the pool; ``row``, what was last seen of it."""
    # A server that left the nodes file is no longer ours to ask: no listing marks it.
    marked = row if slots is not None else None
    return {
        "node": name,
        "configured": slots is not None,
        "url": redact_url(slots.node.url) if slots else None,
        "database_limit": slots.node.database_limit if slots else None,
        "refused_limit": slots.overstated if slots else None,
        "tenants": tenants,
        "free": slots.free if slots else None,
        "full": slots.full if slots else None,
        "observed_databases": getattr(row, "observed_databases", None),
        "other_databases": getattr(row, "other_databases", None),
        "observed_at": getattr(row, "observed_at", None),
        "unavailable_since": getattr(marked, "unavailable_since", None),
        "unavailable_reason": getattr(marked, "unavailable_reason", None),
    }


def _row(tenant_id: str) -> Row[Any]:
    try:
        tenant_id, outside_the_rule = validate_tenant_id(tenant_id), None
    except InvalidTenantId as exc:
        # A row the UI made before this worker may have an id outside the rule (acme.corp):
        # shown as it is (no database can be made for it), never looked for when absurd.
        printable = isinstance(tenant_id, str) and tenant_id.isprintable()
        if not printable or len(tenant_id) > OLDER_ID_MAX_LENGTH:
            raise
        outside_the_rule = exc
    with get_engine().connect() as conn:
        row = store.load(conn, tenant_id)
    if row is None and outside_the_rule is not None:
        raise outside_the_rule
    if row is None:
        raise TenantNotFound(f"tenant {tenant_id!r} does not exist")
    return row


OLDER_ID_MAX_LENGTH = 255  # an older row's id looked up as it is (the rule's ids: 54)


def _influxdb_status(row: Row[Any], live: bool) -> InfluxDBStatus:
    database = get_settings().database_name(row.tenant_id)
    node = row.influxdb_node
    configured = None if node is None else shared_pool().node(node) is not None
    reason = Reason.parse(row.influxdb_error_reason)
    live_status: LiveStatus | None = None
    if live and reason == Reason.NAME_TAKEN:  # failed, or retried by an operator since
        # The database of that name is someone else's: its data must not show as this tenant's.
        live_status = {
            "exists": None,
            "telemetry_count": None,
            "error": f"name_taken: the database {database} on node {node} is not this "
            "tenant's; not counted",
            "latency_ms": 0.0,
        }
    elif live and (rule := _unnameable(row.tenant_id)):
        live_status = {
            "exists": None,
            "telemetry_count": None,
            "error": f"the id cannot name an InfluxDB database ({rule}): none is made for it",
            "latency_ms": 0.0,
        }
    elif live and (why := _not_counted(row)):
        live_status = {"exists": None, "telemetry_count": None, "error": why, "latency_ms": 0.0}
    elif live:
        live_status = _live_check(node, database)
        if live_status["exists"] and not _proven(row):
            # Of its name, on its server, but not proven its own there (a 409 whose contents
            # could not be read yet, a tenant moved here after a 422 elsewhere): its rows may be
            # another tenant's, or an earlier one's of the id.
            live_status = {
                **live_status,
                "telemetry_count": None,
                "error": "not yet proven this tenant's on this node (no run has read its "
                "marker here): its rows are not counted",
            }
    stalled = row.influxdb_state == ProvisioningState.FAILED and reason in RESUMABLE_REASONS
    return {
        "database": database,
        "node": node,
        "node_configured": configured,
        "incarnation": row.influxdb_incarnation,
        "retention_period": row.influxdb_retention_period,
        "state": row.influxdb_state,
        "stalled_on": (node or "any node") if stalled else None,
        "attempts": row.influxdb_attempts,
        "last_error": row.influxdb_last_error,
        "error_reason": row.influxdb_error_reason,
        "next_attempt_at": _iso(row.influxdb_next_attempt_at),
        "provisioned_at": _iso(row.influxdb_provisioned_at),
        "updated_at": _iso(row.influxdb_updated_at),
        "live": live_status,
    }


def _unnameable(tenant_id: str) -> str | None:
    """The rule an older row's id breaks, or None."""
    try:
        validate_tenant_id(tenant_id)
    except InvalidTenantId as exc:
        return str(exc)
    return None


def _not_counted(row: Row[Any]) -> str | None:
    """Why a database of the tenant's name is not looked at, where it cannot be the tenant's
    own: none is made while it waits for capacity (nor until a slot reserved as the wait ended
    is used), and one being deleted that was never
    proven its own is not (a name_taken tenant deleted: another's data; its deletion clears
    ``provisioned_at``, ``worker.store.request_deletion``)."""
    if row.influxdb_state == ProvisioningState.WAITING_FOR_CAPACITY:
        return "waiting for capacity: no database made yet"
    if reserved_only(row):  # its run has not come yet
        return "a slot is reserved for it on a node: no database made yet"
    if row.influxdb_state == ProvisioningState.DEPROVISIONING and not row.influxdb_provisioned_at:
        return "being deleted, never proven the owner of a database of its name: not counted"
    if row.influxdb_node is None and not _may_hold_one(row):
        # (a pool of one would otherwise be asked: one of its name there is not yet its own)
        return "not placed on a node yet: a database of its name is not counted"
    return None


def _proven(row: Row[Any]) -> bool:
    """Whether a database of the tenant's name on its server is its own: it is provisioned
    there (or being deleted from there, provisioned once), or an operator, the upgrade or a
    drift repair said whatever is there is theirs (``Adoption``). Not ``provisioned_at``
    alone: it outlives a move to another server (a 422, a wait for capacity), where a
    database of the name may be another's."""
    if row.influxdb_adopt in tuple(Adoption):
        return True
    if row.influxdb_state == ProvisioningState.PROVISIONED:
        return True
    deleting = row.influxdb_state == ProvisioningState.DEPROVISIONING
    return deleting and bool(row.influxdb_provisioned_at)


def _may_hold_one(row: Row[Any]) -> bool:
    """Whether a tenant on no node may have a database all the same: provisioned before the
    pool existed, or a row from before the worker (its data is wherever it was made)."""
    provisioned = row.influxdb_state == ProvisioningState.PROVISIONED
    return bool(provisioned or row.influxdb_adopt == Adoption.UNMARKED)


def _live_check(node_name: str | None, database: str) -> LiveStatus:
    settings = get_settings()
    pool = shared_pool()
    nodes = pool.nodes()
    # A tenant not placed yet can only be on the server of a pool of one.
    node = pool.node(node_name) if node_name else (nodes[0] if len(nodes) == 1 else None)
    if node is None:
        why = (
            f"node {node_name} is not configured (not in the nodes file)"
            if node_name
            else "not placed on a node yet"
        )
        return {"exists": None, "telemetry_count": None, "error": why, "latency_ms": 0.0}
    check = pool.client(node).live_check(
        database, settings.influxdb_telemetry_table, settings.live_check_timeout
    )
    return {
        "exists": check.exists,
        "telemetry_count": check.telemetry_count,
        "error": check.error,
        "latency_ms": check.latency_ms,
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
