"""What the console reads from Postgres, each query served by an index (migration 0005).

The tenants page is paged by keyset on (last change, tenant id), newest first: page 2,000
costs what page 1 costs. Its cursor is opaque to the browser and checked when it comes back.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, text, tuple_

from api_hooks.errors import InvalidTenantId
from api_hooks.tenants import validate_tenant_id
from worker import store
from worker.event_reads import audit
from worker.events import MAX_ACTOR_FILTER
from worker.models import UNPROVISIONED, provisioning_attempts, reconcile_stats, tenants
from worker.states import STATES

PAGE_SIZE = 50
ATTEMPTS_SHOWN = 50
EVENTS_SHOWN = 50  # a tenant's timeline: its last events


class BadQuery(ValueError):
    """A filter, search or cursor of the tenants page that cannot be used; says why."""


@dataclass(frozen=True)
class TenantsPage:
    """One page of the tenants table, and the cursor of the next (None on the last page)."""

    rows: list[Any]
    next_cursor: str | None


@dataclass(frozen=True)
class Overview:
    """The console's first page: counts per state, the oldest unprovisioned tenant, the last
    reconcile run."""

    counts: dict[str, int]
    total: int
    oldest_unprovisioned: Any | None
    reconcile: Any | None


def overview(conn: Connection) -> Overview:
    """Counts per state (every state shown, zero included) and what the overview needs."""
    counts = store.count_by_state(conn)
    oldest = conn.execute(
        select(
            tenants.c.tenant_id,
            tenants.c.influxdb_state,
            tenants.c.influxdb_error_reason,
            tenants.c.created_at,
        )
        # Literal, as the partial index's predicate is: a bound parameter would not match it.
        .where(text(UNPROVISIONED))
        .order_by(tenants.c.created_at)
        .limit(1)
    ).first()
    reconcile = conn.execute(select(reconcile_stats).where(reconcile_stats.c.id == 1)).first()
    return Overview(counts, sum(counts.values()), oldest, reconcile)


def tenants_page(
    conn: Connection, state: str | None, prefix: str | None, cursor: str | None
) -> TenantsPage:
    """A page of tenants, newest change first; BadQuery for a filter it cannot use."""
    query = select(
        tenants.c.tenant_id,
        tenants.c.name,
        tenants.c.influxdb_state,
        tenants.c.influxdb_error_reason,
        tenants.c.influxdb_attempts,
        tenants.c.influxdb_node,
        tenants.c.influxdb_updated_at,
    )
    if state:
        if state not in STATES:
            raise BadQuery(f"state must be one of {', '.join(STATES)}")
        query = query.where(tenants.c.influxdb_state == state)
    if prefix:
        try:
            validate_tenant_id(prefix)
        except InvalidTenantId as exc:
            raise BadQuery(f"search: {exc}".replace("tenant_id", "an id prefix")) from exc
        # Letters, digits, '-' and '_' only; '_' is LIKE's wildcard, so it is escaped.
        pattern = prefix.replace("_", "\\_") + "%"
        query = query.where(tenants.c.tenant_id.like(pattern, escape="\\"))
    if cursor:
        changed, tenant_id = decode_cursor(cursor)
        query = query.where(
            tuple_(tenants.c.influxdb_updated_at, tenants.c.tenant_id) < (changed, tenant_id)
        )
    rows = list(
        conn.execute(
            query.order_by(tenants.c.influxdb_updated_at.desc(), tenants.c.tenant_id.desc()).limit(
                PAGE_SIZE + 1
            )
        ).all()
    )
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    last = rows[-1] if more else None
    return TenantsPage(
        rows, encode_cursor(last.influxdb_updated_at, last.tenant_id) if last else None
    )


def attempt_history(conn: Connection, tenant_id: str) -> list[Any]:
    """The tenant's last attempts, newest first."""
    log = provisioning_attempts
    return list(
        conn.execute(
            select(log)
            .where(log.c.tenant_id == tenant_id)
            .order_by(log.c.started_at.desc(), log.c.id.desc())
            .limit(ATTEMPTS_SHOWN)
        ).all()
    )


def encode_cursor(changed: datetime, tenant_id: str) -> str:
    """The opaque cursor of the row a page ended on."""
    raw = f"{changed.isoformat()}|{tenant_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (last change, tenant id) a cursor names; BadQuery when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, tenant_id = raw.split("|", 1)
        changed = datetime.fromisoformat(moment)
        validate_tenant_id(tenant_id)
    except (binascii.Error, UnicodeDecodeError, ValueError, InvalidTenantId):
        raise BadQuery("the page cursor is not valid; start again from the newest") from None
    if changed.tzinfo is None:
        raise BadQuery("the page cursor is not valid; start again from the newest")
    return changed, tenant_id


def audit_page(
    conn: Connection, actor: str | None, tenant: str | None, before: str | None
) -> tuple[list[Any], int | None]:
    """A page of operator actions, newest first, and where the next starts (an event id);
    BadQuery for a tenant id, actor or cursor that cannot be one."""
    if actor and ("\x00" in actor or len(actor) > MAX_ACTOR_FILTER):
        raise BadQuery(f"actor: at most {MAX_ACTOR_FILTER} characters, no NUL")
    if tenant:
        try:
            validate_tenant_id(tenant)
        except InvalidTenantId as exc:
            raise BadQuery(f"tenant: {exc}") from exc
    start: int | None = None
    if before:
        if not (before.isascii() and before.isdigit()) or not 0 < int(before) < 2**63:
            raise BadQuery("the page cursor is not valid; start again from the newest")
        start = int(before)
    return audit(conn, actor=actor, tenant=tenant, before=start, limit=PAGE_SIZE)
