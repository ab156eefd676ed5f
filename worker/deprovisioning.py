"""Deprovisioning: removing a deleted tenant's database and giving its slot and id back.

``delete_tenant`` (api_hooks) moves the tenant to ``deprovisioning``; this runs behind it, under
the same per-tenant lock as provisioning. It soft-deletes the database on the tenant's node
(hard-delete policy from INFLUXDB_HARD_DELETE_AT, the server's default otherwise), treats 404
as already gone, and then removes the tenant's row: the slot is free and the id can be created
again. Interrupted deletions are found by the reconciler (state ``deprovisioning``).
"""

from __future__ import annotations

import logging
import random
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, delete, insert
from sqlalchemy.engine import Row

from worker.db import advisory_lock
from worker.errors import PermanentError, ProvisioningError
from worker.models import ProvisioningState, provisioning_attempts, tenants
from worker.nodes import NodePool
from worker.provisioning import (
    Clock,
    Outcome,
    advisory_lock_key,
    clean_error,
    load_tenant,
    locate_database,
    next_backoff,
    update_tenant,
    utcnow,
)
from worker.settings import Settings

logger = logging.getLogger(__name__)


def deprovision_tenant(
    conn: Connection,
    tenant_id: str,
    pool: NodePool,
    settings: Settings,
    *,
    clock: Clock = utcnow,
    rng: random.Random | None = None,
) -> Outcome:
    """Delete the tenant's database (if any), then the tenant; record failures for retry."""
    with advisory_lock(conn, advisory_lock_key(tenant_id)) as acquired:
        if not acquired:
            # A provisioning run is in flight; it will not undo the deletion (see
            # provisioning._set_unless_deleted), and we try again once it is done.
            return Outcome("busy", tenant_id, retry_in=settings.backoff_base_seconds)
        row = load_tenant(conn, tenant_id)
        if row is None:
            return Outcome("not_found", tenant_id)  # already deprovisioned
        if row.influxdb_state != ProvisioningState.DEPROVISIONING:
            return Outcome("skipped", tenant_id)
        context = {"tenant_id": tenant_id}
        database = settings.database_name(tenant_id)
        started = clock()
        attempt = row.influxdb_attempts + 1
        node = pool.node(row.influxdb_node) if row.influxdb_node else None
        if row.influxdb_node is None:
            # Never placed - or placed before the pool existed: look before forgetting it.
            node = locate_database(conn, tenant_id, database, pool)
        if row.influxdb_node is not None or node is not None:
            try:
                if node is None:
                    raise _NodeGone(f"node {row.influxdb_node} is no longer configured")
                deleted = pool.client(node).delete_database(
                    database, settings.influxdb_hard_delete_at
                )
            except ProvisioningError as exc:
                return _record_failure(conn, row, exc, attempt, settings, clock, rng)
            logger.info(
                "%s %s on node %s",
                "soft-deleted" if deleted else "found no database",
                database,
                node.name,
                extra=context,
            )
        conn.execute(delete(tenants).where(tenants.c.tenant_id == tenant_id))
        conn.execute(
            insert(provisioning_attempts).values(
                tenant_id=tenant_id,
                attempt=attempt,
                started_at=started,
                finished_at=clock(),
                outcome="deprovisioned",
                reason=None,
            )
        )
        conn.commit()
        logger.info("tenant deprovisioned; its slot and id are free", extra=context)
        return Outcome("deprovisioned", tenant_id, attempt)


class _NodeGone(PermanentError):
    """The tenant's node was removed from the configuration: its database cannot be reached."""

    reason = "node_gone"


def _record_failure(
    conn: Connection,
    row: Row[Any],
    exc: ProvisioningError,
    attempt: int,
    settings: Settings,
    clock: Clock,
    rng: random.Random | None,
) -> Outcome:
    tenant_id: str = row.tenant_id
    now = clock()
    permanent = isinstance(exc, PermanentError)
    delay = None
    if not permanent:
        delay = next_backoff(
            attempt, settings.backoff_base_seconds, settings.backoff_cap_seconds, rng
        )
    update_tenant(
        conn,
        tenant_id,
        influxdb_attempts=attempt,
        influxdb_error_reason=exc.reason,
        influxdb_last_error=clean_error(f"delete database: {exc}", settings),
        influxdb_next_attempt_at=None if delay is None else now + timedelta(seconds=delay),
        influxdb_updated_at=now,
    )
    logger.warning(
        "deprovisioning attempt failed (%s)%s: %s",
        exc.reason,
        "" if delay is None else f", retrying in {delay:.1f}s",
        exc,
        extra={"tenant_id": tenant_id},
    )
    if permanent or attempt >= settings.max_attempts:
        # Stays deprovisioning with the reason shown; the reconciler tries again each interval.
        return Outcome("failed", tenant_id, attempt, exc.reason)
    return Outcome("retrying", tenant_id, attempt, exc.reason, retry_in=delay)
