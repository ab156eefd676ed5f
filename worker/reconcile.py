"""The reconciler: makes Postgres state and InfluxDB agree again, on a beat schedule.

Redis can lose messages, workers die mid-attempt, someone deletes a database by hand. One run:

1. takes a Postgres advisory lock (two beats by mistake: the second run is a no-op; a run that
   dies frees the lock with its connection);
2. re-reads the node pool and lists each node's databases once - one InfluxDB call per node,
   never one per tenant - recording what it saw (a node seen with room is no longer "full");
3. reads ``tenants`` in keyset-paginated batches and, per batch, finds what is owed (state
   changes - drift, stuck, waiting - are made under ``FOR UPDATE SKIP LOCKED`` and re-check
   the state; re-publishing needs no lock, the per-tenant lock makes duplicates harmless):
   - ``pending`` never queued, or queued longer ago than the requeue grace (message lost),
   - ``retrying`` whose next attempt is overdue by the grace (the retry message was lost),
   - ``provisioning`` for longer than the task's hard time limit (the worker died): ``stuck``,
   - ``provisioned`` whose database is gone from its node: ``drift``, back to ``pending``
     (a provisioned tenant without a node, from before the pool, adopts the node that has it),
   - ``deprovisioning`` not queued within the grace (an interrupted deletion);
4. moves the oldest ``waiting_for_capacity`` tenants back to ``pending``, as many as the pool
   has free slots (a node was added, or a slot freed);
5. publishes all of those after their transaction commits, and records when;
6. logs one summary line and stores totals for ``/metrics``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select, update

from worker.db import advisory_lock
from worker.errors import ProvisioningError
from worker.models import ProvisioningState, reconcile_stats, tenants
from worker.nodes import NodePool
from worker.placement import record_observation, usage
from worker.provisioning import Clock, utcnow
from worker.queues import Job
from worker.redaction import redact
from worker.settings import NodeConfig, Settings

logger = logging.getLogger(__name__)

# Any constant distinct from the per-tenant keys (those are 64-bit hashes).
RECONCILE_LOCK_KEY = 0x7465_6E61_6E74  # "tenant"

Publish = Callable[[str, Job], bool]
Owed = tuple[str, Job]


@dataclass
class ReconcileSummary:
    """What one reconcile run saw and did."""

    ran: bool = True  # False when another run held the lock
    scanned: int = 0
    requeued: int = 0
    drift: int = 0
    stuck: int = 0
    failed: int = 0  # tenants in the failed state: they need an operator
    waiting: int = 0  # tenants waiting for capacity at the start of the run
    unwaited: int = 0  # waiting tenants sent back to provisioning (room appeared)
    deprovisioning: int = 0  # interrupted deletions queued again
    adopted: int = 0  # provisioned tenants without a node, matched to the node holding them
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
    pool: NodePool,
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
        summary = _run(engine, pool, settings, publish, clock)
    summary.duration_seconds = round(time.monotonic() - started, 3)
    _store(engine, summary, clock)
    logger.info(
        "reconcile: scanned=%d requeued=%d drift=%d stuck=%d failed=%d waiting=%d unwaited=%d "
        "deprovisioning=%d adopted=%d not_queued=%d influxdb_calls=%d duration=%.3fs%s",
        summary.scanned,
        summary.requeued,
        summary.drift,
        summary.stuck,
        summary.failed,
        summary.waiting,
        summary.unwaited,
        summary.deprovisioning,
        summary.adopted,
        summary.not_queued,
        summary.influxdb_calls,
        summary.duration_seconds,
        f" influxdb_error={summary.influxdb_error!r}" if summary.influxdb_error else "",
    )
    return summary


def _run(
    engine: Engine, pool: NodePool, settings: Settings, publish: Publish, clock: Clock
) -> ReconcileSummary:
    summary = ReconcileSummary()
    nodes = pool.nodes()
    listed_at = clock()
    existing: dict[str, set[str] | None] = {}
    errors: list[str] = []
    # All nodes at once: a few hanging servers cost one timeout, not one each.
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(nodes)))) as listing:
        lists = list(listing.map(lambda node: _list_node(pool, node), nodes))
    with engine.connect() as conn:
        for node, (names, error) in zip(nodes, lists, strict=True):
            summary.influxdb_calls += 1
            if names is None:
                # Without the list we cannot judge drift there; owed work is still re-enqueued.
                existing[node.name] = None
                errors.append(f"{node.name}: {error}")
            else:
                existing[node.name] = set(names)
                record_observation(conn, node, len(names), clock())
    if errors:
        summary.influxdb_error = redact("; ".join(errors), settings.secrets() + pool.secrets())

    sender = _Sender(publish, summary, clock)
    last_id = ""
    with engine.connect() as conn:
        while True:
            batch = _next_batch(conn, last_id, settings.reconcile_batch_size)
            if not batch:
                break
            last_id = batch[-1].tenant_id
            summary.scanned += len(batch)
            summary.failed += sum(r.influxdb_state == ProvisioningState.FAILED for r in batch)
            summary.waiting += sum(
                r.influxdb_state == ProvisioningState.WAITING_FOR_CAPACITY for r in batch
            )
            owed = _claim_owed(conn, batch, existing, listed_at, settings, clock, summary)
            conn.commit()  # state changes are durable before any message goes out
            sender.send(conn, owed)
        unwaited = _unwait(conn, pool, clock)
        summary.unwaited = len(unwaited)
        sender.send(conn, [(tenant_id, Job.PROVISION) for tenant_id in unwaited])
    return summary


def _list_node(pool: NodePool, node: NodeConfig) -> tuple[list[str] | None, str | None]:
    try:
        return pool.client(node).list_databases(), None
    except ProvisioningError as exc:
        return None, f"{exc.reason}: {exc}"


class _Sender:
    """Publishes owed work after its batch commits; stops trying once the broker fails."""

    def __init__(self, publish: Publish, summary: ReconcileSummary, clock: Clock) -> None:
        self._publish, self._summary, self._clock = publish, summary, clock
        self._broker_up = True

    def send(self, conn: Connection, owed: list[Owed]) -> None:
        if not owed:
            return
        if not self._broker_up:  # do not wait out a publish timeout per tenant
            self._summary.not_queued += len(owed)
            return
        published = [tenant_id for tenant_id, job in owed if self._publish(tenant_id, job)]
        self._broker_up = len(published) == len(owed)
        _mark_enqueued(conn, published, self._clock())
        self._summary.requeued += len(published)
        self._summary.requeued_ids.extend(published)
        self._summary.not_queued += len(owed) - len(published)


def _unwait(conn: Connection, pool: NodePool, clock: Clock) -> list[str]:
    """Send the oldest waiting tenants back to pending, as many as there are free slots."""
    free = sum(u.free for u in usage(conn, pool.nodes()))
    conn.commit()
    if free <= 0:
        return []
    oldest = (
        select(tenants.c.tenant_id)
        .where(tenants.c.influxdb_state == ProvisioningState.WAITING_FOR_CAPACITY)
        .order_by(tenants.c.created_at, tenants.c.tenant_id)
        .limit(free)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    moved = conn.execute(
        update(tenants)
        .where(
            tenants.c.tenant_id.in_(oldest),
            tenants.c.influxdb_state == ProvisioningState.WAITING_FOR_CAPACITY,
        )
        .values(influxdb_state=ProvisioningState.PENDING, influxdb_updated_at=clock())
        .returning(tenants.c.tenant_id, tenants.c.created_at)
    ).all()
    conn.commit()
    return [row.tenant_id for row in sorted(moved, key=lambda r: (r.created_at, r.tenant_id))]


def _next_batch(conn: Connection, after: str, size: int) -> list[Any]:
    rows = conn.execute(
        select(
            tenants.c.tenant_id,
            tenants.c.influxdb_state,
            tenants.c.influxdb_enqueued_at,
            tenants.c.influxdb_next_attempt_at,
            tenants.c.influxdb_updated_at,
            tenants.c.influxdb_provisioned_at,
            tenants.c.influxdb_node,
            tenants.c.influxdb_error_reason,
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
    existing: dict[str, set[str] | None],
    listed_at: datetime,
    settings: Settings,
    clock: Clock,
    summary: ReconcileSummary,
) -> list[Owed]:
    """Mark the batch's owed tenants under row locks; return what to publish."""
    now = clock()
    grace = timedelta(seconds=settings.reconcile_requeue_after_seconds)
    stuck_after = now - timedelta(seconds=settings.task_time_limit)
    drifted: list[str] = []
    stuck: list[str] = []
    owed: list[Owed] = []
    adopted: list[dict[str, str]] = []
    for row in batch:
        finding = _finding(row, existing, listed_at, now, grace, stuck_after, settings)
        if finding is not None and finding.startswith("adopt:"):
            adopted.append({"id": row.tenant_id, "node": finding.removeprefix("adopt:")})
        elif finding == "drift":
            drifted.append(row.tenant_id)
        elif finding == "stuck":
            stuck.append(row.tenant_id)
        elif finding == "deprovision":
            owed.append((row.tenant_id, Job.DEPROVISION))
            summary.deprovisioning += 1
        elif finding == "provision":
            owed.append((row.tenant_id, Job.PROVISION))

    if adopted:
        conn.execute(
            update(tenants)
            .where(tenants.c.tenant_id == bindparam("id"), tenants.c.influxdb_node.is_(None))
            .values(influxdb_node=bindparam("node")),
            adopted,
        )
        summary.adopted += len(adopted)
    if drifted:
        moved = _move_to_pending(
            conn,
            drifted,
            ProvisioningState.PROVISIONED,
            tenants.c.influxdb_provisioned_at < listed_at,
            reason="drift",
            message="database missing in InfluxDB; provisioning it again",
            now=now,
            reset_attempts=True,  # a new provisioning effort, with all its attempts
        )
        summary.drift += len(moved)
        owed.extend((tenant_id, Job.PROVISION) for tenant_id in moved)
    if stuck:
        moved = _move_to_pending(
            conn,
            stuck,
            ProvisioningState.PROVISIONING,
            tenants.c.influxdb_updated_at < stuck_after,
            reason="worker_lost",
            message="attempt did not finish within the task time limit; re-queued",
            now=now,
            reset_attempts=False,
        )
        summary.stuck += len(moved)
        owed.extend((tenant_id, Job.PROVISION) for tenant_id in moved)
    return owed


def _finding(
    row: Any,
    existing: dict[str, set[str] | None],
    listed_at: datetime,
    now: datetime,
    grace: timedelta,
    stuck_after: datetime,
    settings: Settings,
) -> str | None:
    """What the reconciler owes one tenant: provision, deprovision, stuck, drift,
    adopt:<node>, or nothing."""
    state = row.influxdb_state
    queued_long_ago = row.influxdb_enqueued_at is None or row.influxdb_enqueued_at < now - grace
    due = row.influxdb_next_attempt_at
    if state == ProvisioningState.PENDING:
        return "provision" if queued_long_ago else None
    if state == ProvisioningState.RETRYING:
        return "provision" if queued_long_ago and (due is None or due < now - grace) else None
    if state == ProvisioningState.DEPROVISIONING:
        return "deprovision" if queued_long_ago and (due is None or due < now - grace) else None
    if state == ProvisioningState.PROVISIONING:
        return "stuck" if row.influxdb_updated_at < stuck_after else None
    if state != ProvisioningState.PROVISIONED or row.influxdb_provisioned_at is None:
        return None
    if row.influxdb_provisioned_at >= listed_at:
        return None  # provisioned after we looked: the lists cannot tell
    database = settings.database_name(row.tenant_id)
    if row.influxdb_node is None:
        holders = [name for name, seen in existing.items() if seen and database in seen]
        if len(holders) == 1:
            return f"adopt:{holders[0]}"
        all_listed = bool(existing) and all(seen is not None for seen in existing.values())
        return "drift" if not holders and all_listed else None
    seen = existing.get(row.influxdb_node)
    return "drift" if seen is not None and database not in seen else None


def _move_to_pending(
    conn: Connection,
    tenant_ids: list[str],
    expected_state: ProvisioningState,
    still_true: Any,
    *,
    reason: str,
    message: str,
    now: datetime,
    reset_attempts: bool,
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
            **({"influxdb_attempts": 0} if reset_attempts else {}),
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
            tenants.c.influxdb_state.in_(
                [
                    ProvisioningState.PENDING,
                    ProvisioningState.RETRYING,
                    ProvisioningState.DEPROVISIONING,
                ]
            ),
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
