"""Provisioning one tenant's InfluxDB database: the logic behind the Celery task.

``provision_tenant`` is idempotent ("ensure", not "create") and safe to run concurrently: a
session-level Postgres advisory lock per tenant lets exactly one run talk to InfluxDB (Postgres
frees it if the process dies or its connection is cut), and every state change is committed as
it happens, so operators see ``provisioning`` while it is under way.
It knows nothing of Celery: it returns an ``Outcome`` and the task maps that to retry or stop.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.engine import Row

from worker.db import advisory_lock
from worker.errors import DatabaseLimitReached, PermanentError, ProvisioningError, TransientError
from worker.influxdb import InfluxDB3Client
from worker.models import ProvisioningState, provisioning_attempts, tenants
from worker.nodes import NodePool
from worker.placement import mark_full, place_tenant
from worker.redaction import redact
from worker.settings import NodeConfig, Settings

logger = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LOCK_NAMESPACE = b"tenant-provisioner:influxdb:"
_MAX_STORED_ERROR = 500

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Outcome:
    """What one run did; ``retry_in`` is set when the caller should run it again later."""

    # provisioned | already_provisioned | retrying | failed | waiting_for_capacity
    # | deprovisioned | busy | skipped | not_found
    result: str
    tenant_id: str
    attempt: int | None = None
    reason: str | None = None
    retry_in: float | None = None


def _set_unless_deleted(conn: Connection, tenant_id: str, **values: Any) -> bool:
    """Every write of the provisioning path: once the operator asked for deletion (without
    waiting for our lock), nothing here may turn the tenant back into a live one. Does not
    commit; False when the tenant is being deleted."""
    updated = conn.execute(
        update(tenants)
        .where(
            tenants.c.tenant_id == tenant_id,
            tenants.c.influxdb_state != ProvisioningState.DEPROVISIONING,
        )
        .values(**values)
    )
    return bool(updated.rowcount)


class TenantBeingDeleted(Exception):
    """The tenant was moved to ``deprovisioning`` while a provisioning run held it."""


def next_backoff(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**(attempt-1))].

    Full jitter spreads the retries of many tenants that failed together (an outage), so they
    do not return in one thundering herd.
    """
    ceiling = min(cap, base * 2 ** max(attempt - 1, 0))
    return (rng or random).uniform(0, ceiling)


def marker_timestamp_ns(created_at: datetime | None) -> int:
    """The ``_init`` point's timestamp: the tenant's creation time, so re-runs overwrite it."""
    if created_at is None:
        return 0
    if created_at.tzinfo is None:  # the UI's table may hold naive timestamps: they are UTC
        created_at = created_at.replace(tzinfo=UTC)
    return (created_at - _EPOCH) // timedelta(microseconds=1) * 1000


def advisory_lock_key(tenant_id: str) -> int:
    """A signed 64-bit key for ``pg_try_advisory_lock``; collisions are 1 in 2**64."""
    digest = hashlib.blake2b(_LOCK_NAMESPACE + tenant_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def provision_tenant(
    conn: Connection,
    tenant_id: str,
    pool: NodePool,
    settings: Settings,
    *,
    clock: Clock = utcnow,
    rng: random.Random | None = None,
) -> Outcome:
    """Ensure the tenant's database exists on its node and holds the ``_init`` marker,
    placing the tenant on a node with room first; record every step."""
    with advisory_lock(conn, advisory_lock_key(tenant_id)) as acquired:
        if not acquired:
            logger.info("another run holds the tenant; nothing to do")
            return Outcome("busy", tenant_id)
        row = load_tenant(conn, tenant_id)
        if row is None:
            logger.warning("tenant does not exist; nothing to do", extra={"tenant_id": tenant_id})
            return Outcome("not_found", tenant_id)
        state = row.influxdb_state
        if state in (ProvisioningState.FAILED, ProvisioningState.DEPROVISIONING):
            # A failed tenant waits for an operator retry (which resets it to pending); one
            # being deleted belongs to the deprovisioning task.
            return Outcome("skipped", tenant_id, reason=row.influxdb_error_reason)
        node = pool.node(row.influxdb_node) if row.influxdb_node else None
        database = settings.database_name(tenant_id)
        if state == ProvisioningState.PROVISIONED:
            if node is None:
                # Provisioned before the pool existed, or its node left the pool: find where
                # the database is rather than creating a second one somewhere else.
                if locate_database(conn, tenant_id, database, pool) is not None:
                    return Outcome("already_provisioned", tenant_id)
            elif _still_exists(pool.client(node), database, tenant_id):
                return Outcome("already_provisioned", tenant_id)
        return _provision(conn, row, node, database, pool, settings, clock, rng)


def locate_database(
    conn: Connection, tenant_id: str, database: str, pool: NodePool
) -> NodeConfig | None:
    """The node holding ``database`` (one list call per node), recorded as the tenant's node."""
    for candidate in pool.nodes():
        try:
            found = database in pool.client(candidate).list_databases()
        except ProvisioningError:
            continue
        if found:
            update_tenant(conn, tenant_id, influxdb_node=candidate.name)
            logger.info(
                "found the database on node %s", candidate.name, extra={"tenant_id": tenant_id}
            )
            return candidate
    return None


def _still_exists(client: InfluxDB3Client, database: str, tenant_id: str) -> bool:
    try:
        return database in client.list_databases()
    except ProvisioningError as exc:
        # Cannot tell now; a provisioned tenant stays provisioned, the reconciler looks again.
        logger.warning(
            "cannot verify a provisioned database: %s", exc, extra={"tenant_id": tenant_id}
        )
        return True


def _provision(
    conn: Connection,
    row: Row[Any],
    node: NodeConfig | None,
    database: str,
    pool: NodePool,
    settings: Settings,
    clock: Clock,
    rng: random.Random | None,
) -> Outcome:
    tenant_id = row.tenant_id
    attempts = row.influxdb_attempts
    refused: set[str] = set()  # nodes that answered 422 in this run: each is tried once
    while True:
        if node is None:
            name = place_tenant(conn, tenant_id, pool.nodes(), exclude=refused)
            node = pool.node(name) if name else None
            if node is None:
                return _wait_for_capacity(conn, tenant_id, len(pool.nodes()), clock)
        attempts += 1
        try:
            attempt = _AttemptRecord(conn, tenant_id, attempts, settings, clock)
        except TenantBeingDeleted:
            return Outcome("skipped", tenant_id, reason="deprovisioning")
        try:
            outcome = _attempt(attempt, row, node, database, pool, settings, rng)
        except DatabaseLimitReached as exc:
            # Our count said there was room, the node disagrees: believe the node, move on.
            mark_full(conn, node.name, clock())
            attempt.move_off_node(exc.reason, f"node {node.name}: {exc}")
            refused.add(node.name)
            node = None
            continue
        return outcome


def _attempt(
    attempt: _AttemptRecord,
    row: Row[Any],
    node: NodeConfig,
    database: str,
    pool: NodePool,
    settings: Settings,
    rng: random.Random | None,
) -> Outcome:
    tenant_id = row.tenant_id
    context = {"tenant_id": tenant_id, "attempt": attempt.number}
    client = pool.client(node)
    created: bool | None = None  # None until the node confirmed the database exists
    try:
        created = client.ensure_database(database, row.influxdb_retention_period)
        client.write_marker(database, tenant_id, marker_timestamp_ns(row.created_at))
    except DatabaseLimitReached:
        raise
    except PermanentError as exc:
        # A refused create leaves nothing on the node: give the slot back.
        attempt.fail(exc.reason, f"node {node.name}: {exc}", release_slot=created is None)
        logger.error("provisioning failed permanently: %s", exc, extra=context)
        return Outcome("failed", tenant_id, attempt.number, exc.reason)
    except Exception as exc:
        if isinstance(exc, TransientError):
            reason, message = exc.reason, f"node {node.name}: {exc}"
        else:  # a bug or a surprise: still recorded, still bounded by max attempts
            logger.exception("unexpected error while provisioning", extra=context)
            reason, message = "internal_error", f"unexpected {type(exc).__name__}"
        if attempt.number >= settings.max_attempts:
            message = f"gave up after {attempt.number} attempts: {message}"
            attempt.fail(reason, message)
            logger.error("provisioning failed: %s", message, extra=context)
            return Outcome("failed", tenant_id, attempt.number, reason)
        delay = next_backoff(
            attempt.number, settings.backoff_base_seconds, settings.backoff_cap_seconds, rng
        )
        attempt.retry_later(reason, message, delay)
        logger.warning(
            "attempt failed (%s), retrying in %.1fs: %s", reason, delay, message, extra=context
        )
        return Outcome("retrying", tenant_id, attempt.number, reason, retry_in=delay)

    attempt.succeed()
    logger.info(
        "provisioned %s on node %s (%s)",
        database,
        node.name,
        "created" if created else "already existed",
        extra=context,
    )
    return Outcome("provisioned", tenant_id, attempt.number)


def _wait_for_capacity(conn: Connection, tenant_id: str, nodes: int, clock: Clock) -> Outcome:
    # Capacity is a state, not a retry loop: the reconciler places waiting tenants, oldest
    # first, when a node is added or a slot frees.
    _set_unless_deleted(
        conn,
        tenant_id,
        influxdb_state=ProvisioningState.WAITING_FOR_CAPACITY,
        influxdb_node=None,
        influxdb_error_reason="database_limit",
        influxdb_last_error=f"no InfluxDB node has room (all {nodes} at their limit)",
        influxdb_next_attempt_at=None,
        influxdb_updated_at=clock(),
    )
    conn.commit()
    logger.warning("no node has room; waiting for capacity", extra={"tenant_id": tenant_id})
    return Outcome("waiting_for_capacity", tenant_id, reason="database_limit")


class _AttemptRecord:
    """One attempt as Postgres sees it: ``provisioning`` from the start, then one outcome
    committed together with its row in the attempt log."""

    def __init__(
        self, conn: Connection, tenant_id: str, number: int, settings: Settings, clock: Clock
    ) -> None:
        self._conn, self._tenant_id, self.number = conn, tenant_id, number
        self._settings, self._clock = settings, clock
        self._started = clock()
        started = _set_unless_deleted(
            conn,
            tenant_id,
            influxdb_state=ProvisioningState.PROVISIONING,
            influxdb_attempts=number,
            influxdb_updated_at=self._started,
        )
        conn.commit()
        if not started:
            raise TenantBeingDeleted(tenant_id)

    def succeed(self) -> None:
        now = self._clock()
        self._finish(
            "provisioned",
            None,
            now,
            influxdb_state=ProvisioningState.PROVISIONED,
            influxdb_provisioned_at=now,
            influxdb_last_error=None,
            influxdb_error_reason=None,
            influxdb_next_attempt_at=None,
        )

    def retry_later(self, reason: str, message: str, delay: float) -> None:
        now = self._clock()
        self._finish(
            "retrying",
            reason,
            now,
            influxdb_state=ProvisioningState.RETRYING,
            influxdb_error_reason=reason,
            influxdb_last_error=clean_error(message, self._settings),
            influxdb_next_attempt_at=now + timedelta(seconds=delay),
        )

    def move_off_node(self, reason: str, message: str) -> None:
        """The node refused the database (422): give its slot back; placement goes on."""
        self._finish(
            "node_full",
            reason,
            self._clock(),
            influxdb_node=None,
            influxdb_error_reason=reason,
            influxdb_last_error=clean_error(message, self._settings),
        )

    def fail(self, reason: str, message: str, release_slot: bool = False) -> None:
        released: dict[str, Any] = {"influxdb_node": None} if release_slot else {}
        self._finish(
            "failed",
            reason,
            self._clock(),
            **released,
            influxdb_state=ProvisioningState.FAILED,
            influxdb_error_reason=reason,
            influxdb_last_error=clean_error(message, self._settings),
            influxdb_next_attempt_at=None,
        )

    def _finish(self, outcome: str, reason: str | None, now: datetime, **values: Any) -> None:
        # A deletion asked for meanwhile wins: the outcome goes to the attempt log only.
        _set_unless_deleted(self._conn, self._tenant_id, influxdb_updated_at=now, **values)
        self._conn.execute(
            insert(provisioning_attempts).values(
                tenant_id=self._tenant_id,
                attempt=self.number,
                started_at=self._started,
                finished_at=now,
                outcome=outcome,
                reason=reason,
            )
        )
        self._conn.commit()


def clean_error(message: str, settings: Settings) -> str:
    """``message`` fit for storage: secrets removed, no NUL, bounded length."""
    message = redact(message, settings.secrets()).replace("\x00", "")
    return message if len(message) <= _MAX_STORED_ERROR else message[:_MAX_STORED_ERROR] + "..."


def load_tenant(conn: Connection, tenant_id: str) -> Row[Any] | None:
    """The tenant's row (committed read), or None."""
    row = conn.execute(select(tenants).where(tenants.c.tenant_id == tenant_id)).first()
    conn.commit()
    return row


def update_tenant(conn: Connection, tenant_id: str, **values: Any) -> None:
    """Set ``values`` on the tenant's row and commit: every state change is durable at once."""
    conn.execute(update(tenants).where(tenants.c.tenant_id == tenant_id).values(**values))
    conn.commit()
