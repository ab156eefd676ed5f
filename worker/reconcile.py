"""The reconciler: makes Postgres state and InfluxDB agree again, on a beat schedule.

Redis can lose messages, workers die mid-attempt, servers go silent or leave the nodes file,
someone deletes a database by hand. One run:

1. takes a Postgres advisory lock (two beats by mistake: the second run is a no-op; a run that
   dies frees the lock with its connection);
2. re-reads the node pool and lists each server's databases once, soft-deleted ones too - one
   InfluxDB call per server, never one per tenant (but for a database that looks made again:
   its markers are read before it is taken back) - recording what it saw (a server seen with
   room is no longer "full"), and copies each list into a temporary table as it arrives
   (``worker.listings``); from those lists it records the strays and orphans
   (``worker.strays``: reported, never deleted); where this run wrote a changed nodes file
   down (room added), it un-waits the oldest waiting tenants for it now, as in 4;
3. passes over, in one query, every row provably owed nothing (a provisioned tenant whose
   database is on its server's list, not deleted there since: nearly all of a healthy fleet),
   reads the rest in keyset-paginated batches and asks ``worker.findings`` what each is owed;
   ``worker.repairs`` makes the changes, each guarded by the state it was found in (a worker
   may have moved on): re-queue lost work, take over a lost retry chain, recover stuck
   attempts, repair drift (a database gone, or deleted and made again by a write),
   locate rows from before the worker (adopt where found, new home where confirmed absent),
   resume tenants that failed for a transient reason once their server answers again;
4. moves the oldest ``waiting_for_capacity`` tenants back to ``pending``, as many as the pool
   has free slots (a server was added, or a slot freed), each with its slot reserved;
5. publishes all of those after their transaction commits, and records when;
6. logs one summary line and stores totals for ``/metrics``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, update

from worker import events, identity, locations, node_marks, store
from worker.clock import Clock, database_clock
from worker.db import advisory_lock
from worker.errors import ProvisioningError
from worker.findings import COLUMNS, Finding, Kind, View, find
from worker.listings import clock_shift, run_listings
from worker.models import reconcile_stats
from worker.node_marks import record_observations, unwait
from worker.nodes import NodeConfig, NodePool, list_as_answered
from worker.placement import repair_counts, sync_nodes
from worker.queues import Job
from worker.redaction import redact
from worker.repairs import Owed, Repaired, Repairs
from worker.settings import Settings
from worker.states import ProvisioningState, Reason
from worker.strays import record_strays

logger = logging.getLogger(__name__)

# Any constant distinct from the per-tenant keys (those are 64-bit hashes).
RECONCILE_LOCK_KEY = 0x7465_6E61_6E74  # "tenant"

Publish = Callable[[str, Job, str | None], bool]


@dataclass
class ReconcileSummary(Repaired):
    """What one reconcile run saw and did (the repairs' counts first)."""

    ran: bool = True  # False when another run held the lock
    scanned: int = 0  # every row, judged by one set-based query
    examined: int = 0  # the rows that query could not pass over, judged one by one
    requeued: int = 0
    failed: int = 0  # tenants in the failed state
    waiting: int = 0  # tenants waiting for capacity at the start of the run
    unwaited: int = 0  # waiting tenants sent back to provisioning (room appeared)
    not_queued: int = 0  # owed work the broker did not take this time
    counts_repaired: int = 0  # nodes whose slot count differed from the real one
    strays: int = 0  # tenants' databases off their home, on the servers that answered
    orphans: int = 0  # databases of no tenant, on the servers that answered
    influxdb_calls: int = 0
    duration_seconds: float = 0.0
    influxdb_error: str | None = None
    requeued_ids: list[str] = field(default_factory=list, repr=False)

    def findings(self) -> dict[str, int]:
        """What the run found and did, as counts (the operator console shows them); what it
        read and the calls it made have columns of their own."""
        own_columns = ("ran", "scanned", "examined", "influxdb_calls")
        return {k: v for k, v in self.as_dict().items() if type(v) is int and k not in own_columns}

    def as_dict(self) -> dict[str, Any]:
        """The summary without the id list (that can be long)."""
        summary = asdict(self)
        del summary["requeued_ids"]
        return summary

    def line(self) -> str:
        """The one-line log form: every count that is not zero."""
        counts = [f"{k}={v}" for k, v in self.as_dict().items() if type(v) is int and v]
        return " ".join(counts) or "nothing"


def reconcile(
    engine: Engine,
    pool: NodePool,
    settings: Settings,
    publish: Publish,
    *,
    clock: Clock | None = None,
) -> ReconcileSummary:
    """One reconcile run; see the module docstring. Its times come from ``clock``, by default
    the database's (``worker.clock``), whatever this host's clock says."""
    started = time.monotonic()
    with engine.connect() as lock_conn, advisory_lock(lock_conn, RECONCILE_LOCK_KEY) as acquired:
        if not acquired:
            logger.info("reconcile skipped: another run holds the lock")
            return ReconcileSummary(ran=False)
        clock = clock or database_clock(lock_conn)
        started_at = clock()
        summary = _run(engine, pool, settings, publish, clock)
    summary.duration_seconds = round(time.monotonic() - started, 3)
    _store(engine, summary, started_at)
    logger.info(
        "reconcile: %s duration=%.3fs%s",
        summary.line(),
        summary.duration_seconds,
        f" influxdb_error={summary.influxdb_error!r}" if summary.influxdb_error else "",
    )
    return summary


def _run(
    engine: Engine, pool: NodePool, settings: Settings, publish: Publish, clock: Clock
) -> ReconcileSummary:
    summary = ReconcileSummary()
    nodes = pool.nodes()
    configured = [node.name for node in nodes]
    listed_at = clock()
    sender = _Sender(publish, summary, clock)
    with engine.connect() as conn:  # what the listings may predate: changes after this
        # The nodes file's limits, before the listings are judged: written whatever this process
        # last wrote, as another may have written an older file since (a one-off tenantctl run)
        added = sync_nodes(conn, nodes, force=True)  # room, maybe: see below
        listed_version = locations.settled_version(conn)
        departed = node_marks.departed(conn, listed_at, configured)
    errors: list[str] = []
    observed: list[tuple[NodeConfig, int]] = []
    unanswered: list[tuple[NodeConfig, Reason]] = []  # placement puts these last
    with (
        engine.connect() as conn,
        events.session_route(conn, events.Route.RECONCILER),  # whose transitions these are
        run_listings(conn, settings.influxdb_database_prefix) as seen,
    ):
        with seen.copying() as copy_list:
            for node, listing in list_as_answered(pool, nodes):
                summary.influxdb_calls += 1
                if listing.names is None:
                    # Without the list we cannot judge drift there; owed work is still queued.
                    error = listing.error
                    reason = error.reason if error else Reason.BAD_RESPONSE
                    errors.append(f"{node.name}: {reason}: {error}")
                    unanswered.append((node, reason))
                else:
                    # Its soft-deleted names are stamped by its clock: read them on ours.
                    shift = clock_shift(listing.date, clock())
                    copy_list(node.name, listing.names, listing.deleted, shift)
                    observed.append((node, len(listing.names)))
        ours = seen.ours_by_server()
        others = {node.name: count - ours.get(node.name, 0) for node, count in observed}
        # (and commits the copied lists)
        record_observations(conn, observed, clock(), unanswered, others)
        now, prefix = clock(), settings.influxdb_database_prefix
        found = record_strays(conn, seen.answered, configured, prefix, listed_version, now)
        summary.strays, summary.orphans = found.strays, found.orphans
        if errors:
            summary.influxdb_error = redact(
                "; ".join(sorted(errors)), settings.secrets() + pool.secrets()
            )

        counts = store.count_by_state(conn)
        conn.commit()
        summary.scanned = sum(counts.values())
        summary.failed = counts[ProvisioningState.FAILED]
        summary.waiting = counts[ProvisioningState.WAITING_FOR_CAPACITY]
        if added:  # room added in the file: the waiting go first, as soon as the servers that
            _unwait(conn, nodes, clock, summary, sender)  # answer are known, not at the end
        summary.examined = seen.select_owed(configured, listed_at)
        for batch in seen.batches(settings.reconcile_batch_size, COLUMNS):
            now = clock()
            view = View(
                now=now,
                listed_at=listed_at,
                grace=timedelta(seconds=settings.reconcile_requeue_after_seconds),
                stuck_after=now - timedelta(seconds=settings.task_time_limit),
                listings=seen.view_of(batch, configured),
                deletions=seen.deletions,
                departed=departed,
            )
            findings = []
            for row in batch:
                database = settings.database_name(row.tenant_id)
                findings.append((row, _sure(row, find(row, database, view), pool, database)))
            owed = Repairs(conn, view, summary).apply(findings)
            conn.commit()  # state changes are durable before any message goes out
            sender.send(conn, owed)
        _unwait(conn, pool.nodes(), clock, summary, sender)
    return summary


def _unwait(
    conn: Connection,
    nodes: tuple[NodeConfig, ...],
    clock: Clock,
    summary: ReconcileSummary,
    sender: _Sender,
) -> None:
    """Send the oldest waiting tenants on, as many as there is room for (``unwait``)."""
    # Before free slots are counted: a count that drifted would place too few or too many
    # (an emptied or restored influxdb_nodes: every slot looks free until repaired).
    summary.counts_repaired += len(repair_counts(conn))
    unwaited = unwait(conn, nodes, clock())
    summary.unwaited += len(unwaited)
    sender.send(conn, [(tenant_id, Job.PROVISION, None) for tenant_id in unwaited])


class _Sender:
    """Publishes owed work after its batch commits; stops trying once the broker fails."""

    def __init__(self, publish: Publish, summary: ReconcileSummary, clock: Clock) -> None:
        self._publish, self._summary, self._clock = publish, summary, clock
        self._broker_up = True
        self._missed: set[str] = set()  # a tenant owed twice in one run is one not queued

    def send(self, conn: Connection, owed: list[Owed]) -> None:
        if not owed:
            return
        if not self._broker_up:  # do not wait out a publish timeout per tenant
            self._missed.update(tenant_id for tenant_id, _, _ in owed)
        else:
            published = [t for t, job, task_id in owed if self._publish(t, job, task_id)]
            self._broker_up = len(published) == len(owed)
            store.mark_enqueued(conn, published, self._clock())
            conn.commit()
            self._summary.requeued += len(published)
            self._summary.requeued_ids.extend(published)
            self._missed.update({t for t, _, _ in owed} - set(published))
        self._summary.not_queued = len(self._missed)


def _sure(row: Any, finding: Finding | None, pool: NodePool, database: str) -> Finding | None:
    """A REMADE stands only where the database does not hold this tenant's marker (made
    again by a write, it holds none): a copy stamped to the second, read on our clock by a
    Date header of whole seconds, may be an earlier tenant's of the id, deleted as this one
    was made. Where the server cannot tell now, the next run looks again."""
    remade = finding is not None and finding.kind is Kind.REMADE
    node = pool.node(finding.node) if remade and finding and finding.node else None
    if node is None:
        return finding
    try:
        markers = pool.client(node).read_markers(database)
    except ProvisioningError as exc:
        logger.warning("cannot read the markers of %s on node %s: %s", database, node.name, exc)
        return None
    ours = identity.judge(
        markers or (),
        tenant_id=row.tenant_id,
        incarnation=str(row.influxdb_incarnation),
        adoption=None,
        own_create_unanswered=False,
    )
    return None if ours is identity.Verdict.OURS else finding


def _store(engine: Engine, summary: ReconcileSummary, started_at: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(reconcile_stats)
            .where(reconcile_stats.c.id == 1)
            .values(
                runs_total=reconcile_stats.c.runs_total + 1,
                requeued_total=reconcile_stats.c.requeued_total + summary.requeued,
                # (a database made again is drift too: /metrics and its alert count both)
                drift_total=reconcile_stats.c.drift_total + summary.drift + summary.remade,
                stuck_total=reconcile_stats.c.stuck_total + summary.stuck,
                last_started_at=started_at,
                last_duration_seconds=summary.duration_seconds,
                last_scanned=summary.scanned,
                last_influxdb_calls=summary.influxdb_calls,
                last_error=summary.influxdb_error,
                last_findings=summary.findings(),
            )
        )
