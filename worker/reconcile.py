"""The reconciler: makes Postgres state and InfluxDB agree again, on a beat schedule.

Redis can lose messages, workers die mid-attempt, someone deletes a database by hand. One run:

1. takes a Postgres advisory lock (two beats by mistake: the second run is a no-op; a run that
   dies frees the lock with its connection);
2. lists InfluxDB's databases once - never one InfluxDB call per tenant;
3. reads ``tenants`` in keyset-paginated batches and, per batch, under
   ``FOR UPDATE SKIP LOCKED``, marks what is owed:
   - ``pending`` never queued, or queued longer ago than the requeue grace (message lost),
   - ``retrying`` whose next attempt is overdue by the grace (the retry message was lost),
   - ``provisioning`` for longer than the task's hard time limit (the worker died): ``stuck``,
   - ``provisioned`` whose database is gone from InfluxDB: ``drift``, back to ``pending``;
4. publishes those after the batch commits, and records when;
5. logs one summary line and stores totals for ``/metrics``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select, update

from worker.db import advisory_lock
from worker.errors import ProvisioningError
from worker.influxdb import InfluxDB3Client
from worker.models import ProvisioningState, reconcile_stats, tenants
from worker.provisioning import Clock, utcnow
from worker.redaction import redact
from worker.settings import Settings

logger = logging.getLogger(__name__)

# Any constant distinct from the per-tenant keys (those are 64-bit hashes).
RECONCILE_LOCK_KEY = 0x7465_6E61_6E74  # "tenant"

Publish = Callable[[str], bool]


@dataclass
class ReconcileSummary:
    """What one reconcile run saw and did."""

    ran: bool = True  # False when another run held the lock
    scanned: int = 0
    requeued: int = 0
    drift: int = 0
    stuck: int = 0
    failed: int = 0  # tenants in the failed state: they need an operator
    not_queued: int = 0  # owed work the broker did not take this time
    influxdb_calls: int = 0
    duration_seconds: float = 0.0
    influxdb_error: str | None = None
    requeued_ids: list[str] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The summary without the id list (that can be long)."""
        summary = asdict(self)
        del summary["requeued_ids"]
        return summary


def reconcile(
    engine: Engine,
    client: InfluxDB3Client,
    settings: Settings,
    publish: Publish,
    *,
    clock: Clock = utcnow,
) -> ReconcileSummary:
    """One reconcile run; see the module docstring."""
    started = time.monotonic()
    with engine.connect() as lock_conn, advisory_lock(lock_conn, RECONCILE_LOCK_KEY) as acquired:
        if not acquired:
            logger.info("reconcile skipped: another run holds the lock")
            return ReconcileSummary(ran=False)
        summary = _run(engine, client, settings, publish, clock)
    summary.duration_seconds = round(time.monotonic() - started, 3)
    _store(engine, summary, clock)
    logger.info(
        "reconcile: scanned=%d requeued=%d drift=%d stuck=%d failed=%d not_queued=%d "
        "influxdb_calls=%d duration=%.3fs%s",
        summary.scanned,
        summary.requeued,
        summary.drift,
        summary.stuck,
        summary.failed,
        summary.not_queued,
        summary.influxdb_calls,
        summary.duration_seconds,
        f" influxdb_error={summary.influxdb_error!r}" if summary.influxdb_error else "",
    )
    return summary


def _run(
    engine: Engine, client: InfluxDB3Client, settings: Settings, publish: Publish, clock: Clock
) -> ReconcileSummary:
    summary = ReconcileSummary()
    listed_at = clock()
    calls_before = client.calls
    existing: set[str] | None
    try:
        existing = set(client.list_databases())
    except ProvisioningError as exc:
        # Without the list we cannot judge drift; owed work is still re-enqueued.
        existing = None
        summary.influxdb_error = redact(f"{exc.reason}: {exc}", settings.secrets())
    summary.influxdb_calls = client.calls - calls_before

    broker_up = True
    last_id = ""
    with engine.connect() as conn:
        while True:
            batch = _next_batch(conn, last_id, settings.reconcile_batch_size)
            if not batch:
                break
            last_id = batch[-1].tenant_id
            summary.scanned += len(batch)
            summary.failed += sum(r.influxdb_state == ProvisioningState.FAILED for r in batch)
            owed = _claim_owed(conn, batch, existing, listed_at, settings, clock, summary)
            conn.commit()  # state changes are durable before any message goes out
            if owed and broker_up:
                published = [tenant_id for tenant_id in owed if publish(tenant_id)]
                if len(published) < len(owed):
                    broker_up = False  # do not wait out a publish timeout per tenant
                _mark_enqueued(conn, published, clock())
                summary.requeued += len(published)
                summary.requeued_ids.extend(published)
                summary.not_queued += len(owed) - len(published)
            else:
                summary.not_queued += len(owed)
    return summary


def _next_batch(conn: Connection, after: str, size: int) -> list[Any]:
    rows = conn.execute(
        select(
            tenants.c.tenant_id,
            tenants.c.influxdb_state,
            tenants.c.influxdb_enqueued_at,
            tenants.c.influxdb_next_attempt_at,
            tenants.c.influxdb_updated_at,
            tenants.c.influxdb_provisioned_at,
        )
        .where(tenants.c.tenant_id > after)
        .order_by(tenants.c.tenant_id)
        .limit(size)
    ).all()
    conn.commit()
    return list(rows)


def _claim_owed(
    conn: Connection,
    batch: list[Any],
    existing: set[str] | None,
    listed_at: datetime,
    settings: Settings,
    clock: Clock,
    summary: ReconcileSummary,
) -> list[str]:
    """Mark the batch's owed tenants under row locks; return the ids to publish."""
    now = clock()
    grace = timedelta(seconds=settings.reconcile_requeue_after_seconds)
    stuck_after = now - timedelta(seconds=settings.task_time_limit)
    drifted: list[str] = []
    stuck: list[str] = []
    owed: list[str] = []
    for row in batch:
        state = row.influxdb_state
        if state == ProvisioningState.PENDING:
            if row.influxdb_enqueued_at is None or row.influxdb_enqueued_at < now - grace:
                owed.append(row.tenant_id)
        elif state == ProvisioningState.RETRYING:
            due = row.influxdb_next_attempt_at
            requeued = row.influxdb_enqueued_at
            if (due is None or due < now - grace) and (requeued is None or requeued < now - grace):
                owed.append(row.tenant_id)
        elif state == ProvisioningState.PROVISIONING:
            if row.influxdb_updated_at < stuck_after:
                stuck.append(row.tenant_id)
        elif (
            state == ProvisioningState.PROVISIONED
            and existing is not None
            and row.influxdb_provisioned_at is not None
            and row.influxdb_provisioned_at < listed_at  # provisioned before we looked
            and settings.database_name(row.tenant_id) not in existing
        ):
            drifted.append(row.tenant_id)

    if drifted:
        moved = _move_to_pending(
            conn,
            drifted,
            ProvisioningState.PROVISIONED,
            tenants.c.influxdb_provisioned_at < listed_at,
            reason="drift",
            message="database missing in InfluxDB; provisioning it again",
            now=now,
        )
        summary.drift += len(moved)
        owed.extend(moved)
    if stuck:
        moved = _move_to_pending(
            conn,
            stuck,
            ProvisioningState.PROVISIONING,
            tenants.c.influxdb_updated_at < stuck_after,
            reason="worker_lost",
            message="attempt did not finish within the task time limit; re-queued",
            now=now,
        )
        summary.stuck += len(moved)
        owed.extend(moved)
    return owed


def _move_to_pending(
    conn: Connection,
    tenant_ids: list[str],
    expected_state: ProvisioningState,
    still_true: Any,
    *,
    reason: str,
    message: str,
    now: datetime,
) -> list[str]:
    # Re-check the state under the row lock: a worker may have moved the tenant since we read.
    locked = (
        select(tenants.c.tenant_id)
        .where(tenants.c.tenant_id.in_(tenant_ids))
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    moved = conn.execute(
        update(tenants)
        .where(
            tenants.c.tenant_id.in_(locked),
            tenants.c.influxdb_state == expected_state,
            still_true,
        )
        .values(
            influxdb_state=ProvisioningState.PENDING,
            influxdb_error_reason=reason,
            influxdb_last_error=message,
            influxdb_updated_at=now,
        )
        .returning(tenants.c.tenant_id)
    ).scalars()
    return sorted(moved)


def _mark_enqueued(conn: Connection, tenant_ids: list[str], now: datetime) -> None:
    if not tenant_ids:
        return
    conn.execute(
        update(tenants)
        .where(
            tenants.c.tenant_id.in_(bindparam("ids", expanding=True)),
            tenants.c.influxdb_state.in_([ProvisioningState.PENDING, ProvisioningState.RETRYING]),
        )
        .values(influxdb_enqueued_at=now),
        {"ids": tenant_ids},
    )
    conn.commit()


def _store(engine: Engine, summary: ReconcileSummary, clock: Clock) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(reconcile_stats)
            .where(reconcile_stats.c.id == 1)
            .values(
                runs_total=reconcile_stats.c.runs_total + 1,
                requeued_total=reconcile_stats.c.requeued_total + summary.requeued,
                drift_total=reconcile_stats.c.drift_total + summary.drift,
                stuck_total=reconcile_stats.c.stuck_total + summary.stuck,
                last_started_at=clock() - timedelta(seconds=summary.duration_seconds),
                last_duration_seconds=summary.duration_seconds,
                last_scanned=summary.scanned,
                last_influxdb_calls=summary.influxdb_calls,
                last_error=summary.influxdb_error,
            )
        )
