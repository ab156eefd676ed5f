"""Provisioning one tenant's InfluxDB database: the logic behind the Celery task.

``provision_tenant`` is idempotent ("ensure", not "create") and safe to run concurrently: a
session-level Postgres advisory lock per tenant lets exactly one run talk to InfluxDB (Postgres
frees it if the process dies or its connection is cut), and every
state change is committed as it happens, so operators see ``provisioning`` while it is under way.
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
from worker.errors import PermanentError, ProvisioningError, TransientError
from worker.influxdb import InfluxDB3Client
from worker.models import ProvisioningState, provisioning_attempts, tenants
from worker.redaction import redact
from worker.settings import Settings

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

    # provisioned | already_provisioned | retrying | failed | busy | skipped | not_found
    result: str
    tenant_id: str
    attempt: int | None = None
    reason: str | None = None
    retry_in: float | None = None


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
    client: InfluxDB3Client,
    settings: Settings,
    *,
    clock: Clock = utcnow,
    rng: random.Random | None = None,
) -> Outcome:
    """Ensure the tenant's database exists and holds the ``_init`` marker; record every step."""
    with advisory_lock(conn, advisory_lock_key(tenant_id)) as acquired:
        if not acquired:
            logger.info(
                "another run holds the tenant; nothing to do", extra={"tenant_id": tenant_id}
            )
            return Outcome("busy", tenant_id)
        row = _load(conn, tenant_id)
        if row is None:
            logger.warning("tenant does not exist; nothing to do", extra={"tenant_id": tenant_id})
            return Outcome("not_found", tenant_id)
        database = settings.database_name(tenant_id)
        state = row.influxdb_state
        if state == ProvisioningState.FAILED:
            # Only an operator retry (which resets the state to pending) restarts a failed tenant.
            return Outcome("skipped", tenant_id, reason=row.influxdb_error_reason)
        if state == ProvisioningState.PROVISIONED and _still_exists(client, database, tenant_id):
            return Outcome("already_provisioned", tenant_id)
        return _attempt(conn, row, database, client, settings, clock, rng)


def _still_exists(client: InfluxDB3Client, database: str, tenant_id: str) -> bool:
    try:
        return database in client.list_databases()
    except ProvisioningError as exc:
        # Cannot tell now; a provisioned tenant stays provisioned, the reconciler looks again.
        logger.warning(
            "cannot verify a provisioned database: %s", exc, extra={"tenant_id": tenant_id}
        )
        return True


def _attempt(
    conn: Connection,
    row: Row[Any],
    database: str,
    client: InfluxDB3Client,
    settings: Settings,
    clock: Clock,
    rng: random.Random | None,
) -> Outcome:
    tenant_id = row.tenant_id
    attempt = _AttemptRecord(conn, tenant_id, row.influxdb_attempts + 1, settings, clock)
    context = {"tenant_id": tenant_id, "attempt": attempt.number}
    try:
        created = client.ensure_database(database)
        client.write_marker(database, tenant_id, marker_timestamp_ns(row.created_at))
    except PermanentError as exc:
        attempt.fail(exc.reason, str(exc))
        logger.error("provisioning failed permanently: %s", exc, extra=context)
        return Outcome("failed", tenant_id, attempt.number, exc.reason)
    except Exception as exc:
        if isinstance(exc, TransientError):
            reason, message = exc.reason, str(exc)
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
        "provisioned %s (%s)", database, "created" if created else "already existed", extra=context
    )
    return Outcome("provisioned", tenant_id, attempt.number)


class _AttemptRecord:
    """One attempt as Postgres sees it: ``provisioning`` from the start, then one outcome
    committed together with its row in the attempt log."""

    def __init__(
        self, conn: Connection, tenant_id: str, number: int, settings: Settings, clock: Clock
    ) -> None:
        self._conn, self._tenant_id, self.number = conn, tenant_id, number
        self._settings, self._clock = settings, clock
        self._started = clock()
        _record(
            conn,
            tenant_id,
            influxdb_state=ProvisioningState.PROVISIONING,
            influxdb_attempts=number,
            influxdb_updated_at=self._started,
        )

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
            influxdb_last_error=_clean(message, self._settings),
            influxdb_next_attempt_at=now + timedelta(seconds=delay),
        )

    def fail(self, reason: str, message: str) -> None:
        self._finish(
            "failed",
            reason,
            self._clock(),
            influxdb_state=ProvisioningState.FAILED,
            influxdb_error_reason=reason,
            influxdb_last_error=_clean(message, self._settings),
            influxdb_next_attempt_at=None,
        )

    def _finish(self, outcome: str, reason: str | None, now: datetime, **values: Any) -> None:
        self._conn.execute(
            update(tenants)
            .where(tenants.c.tenant_id == self._tenant_id)
            .values(influxdb_updated_at=now, **values)
        )
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


def _clean(message: str, settings: Settings) -> str:
    message = redact(message, settings.secrets()).replace("\x00", "")
    return message if len(message) <= _MAX_STORED_ERROR else message[:_MAX_STORED_ERROR] + "..."


def _load(conn: Connection, tenant_id: str) -> Row[Any] | None:
    row = conn.execute(select(tenants).where(tenants.c.tenant_id == tenant_id)).first()
    conn.commit()
    return row


def _record(conn: Connection, tenant_id: str, **values: Any) -> None:
    conn.execute(update(tenants).where(tenants.c.tenant_id == tenant_id).values(**values))
    conn.commit()
