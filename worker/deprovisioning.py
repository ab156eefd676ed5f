"""Deprovisioning: removing a deleted tenant's database and giving its slot and id back.

``delete_tenant`` (api_hooks) moves the tenant to ``deprovisioning``; this runs behind it, under
the same per-tenant lock and chain rules as provisioning (``worker.runs``). The row goes only
when the tenant's database is gone, so that re-creating the id always starts empty:

- on the tenant's server, its database is soft-deleted (hard-delete policy from
  INFLUXDB_HARD_DELETE_AT); 404 means already gone;
- a database there that is *not* the tenant's (``worker.identity``: another incarnation's, or of
  unknown origin) is left alone - deleting a tenant never deletes someone else's data; an
  unmarked one its writers made again after it was deleted behind our back is the tenant's;
- a row that predates the worker and has no server is located first (every server listed); a
  server that cannot answer means "unknown": the deletion retries, it does not finish;
- a server that left the nodes file: the deletion waits for it (reason ``node_not_configured``);
- the database is deleted only once every location client has learnt that the tenant is not
  ready (``worker.locations``): a writer still holding its old location would re-create it.
- the delete by name goes only while the run's session still holds the tenant's lock: a run
  cut from Postgres stops before it, as a second run may have finished the deletion and the id
  been made again on that server since.

Interrupted deletions are found by the reconciler (state ``deprovisioning``).
"""

from __future__ import annotations

import logging
import random
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import Connection

from worker import events, identity, locations, node_marks, store
from worker.attempts import log_attempt
from worker.clock import Clock, database_clock
from worker.errors import PermanentError, ProvisioningError
from worker.listings import clock_shift, deleted_since, on_our_clock, soft_deleted
from worker.node_config import NodeConfig
from worker.nodes import NodePool, list_everywhere
from worker.runs import (
    Delivery,
    Outcome,
    TenantRun,
    absorbed,
    holds_tenant_lock,
    next_backoff,
    tenant_lock,
)
from worker.settings import Settings
from worker.states import Adoption, AttemptOutcome, ProvisioningState, Reason, RunResult

logger = logging.getLogger(__name__)


def deprovision_tenant(
    conn: Connection,
    tenant_id: str,
    pool: NodePool,
    settings: Settings,
    *,
    delivery: Delivery | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
) -> Outcome:
    """Delete the tenant's database (if it has one), then the tenant; record failures."""
    delivery = delivery or Delivery.fresh()
    with tenant_lock(conn, tenant_id) as acquired:
        if not acquired:
            # A provisioning run is in flight; it cannot undo the deletion (store.update is
            # guarded) and the deletion must finish: try again once it is done.
            return Outcome(RunResult.BUSY, tenant_id, retry_in=settings.backoff_base_seconds)
        row = store.load(conn, tenant_id)
        if row is None:
            return Outcome(RunResult.NOT_FOUND, tenant_id)  # already deprovisioned
        if row.influxdb_state != ProvisioningState.DEPROVISIONING:
            return Outcome(RunResult.SKIPPED, tenant_id)
        if absorbed(row, delivery):
            return Outcome(RunResult.ABSORBED, tenant_id)
        clock = clock or database_clock(conn, row.read_at)
        deletion = _Deletion(conn, row, pool, settings, delivery, clock, rng)
        outcome = deletion.run()
    # The id is free once the row is gone, and its lock with it: a tenant made again with the
    # id is not turned away (BUSY) while this run un-waits others for the slot it freed.
    if outcome.result is RunResult.DEPROVISIONED and deletion.freed_on is not None:
        unwaited = node_marks.slot_freed(conn, deletion.freed_on, pool.nodes(), clock())
        outcome = replace(outcome, unwaited=(*deletion.handed_to, *unwaited))
    return outcome


class _HomeUnknown(Exception):
    """A server that may hold the tenant's database could not be listed."""

    def __init__(self, node: str, error: ProvisioningError) -> None:
        super().__init__(f"cannot tell whether node {node} holds the database: {error}")
        self.error = error


class _Deletion(TenantRun):
    """One deletion run of one tenant, under its lock."""

    freed_on: NodeConfig | None = None  # the server whose slot a finished deletion freed
    handed_to: tuple[str, ...] = ()  # the waiting tenant that slot went to, in the same commit

    def run(self) -> Outcome:
        node_name: str | None = self.row.influxdb_node
        if node_name is not None and self.pool.node(node_name) is None:
            return self._wait_for_node(node_name)
        wait = locations.deletion_may_proceed(
            self.conn,
            self.tenant_id,
            self.row.influxdb_delete_after,
            self.clock,
            self.settings.locations_max_staleness_seconds,
            not_before=self._attempt_surely_over(),
        )
        if wait is not None:
            return self._wait_for_clients(wait)
        started = self.clock()
        attempt = self.row.influxdb_attempts + 1
        store.update(self.conn, self.tenant_id, deleting=True, influxdb_attempts=attempt)
        self.conn.commit()
        try:
            left = [home.name for home in self._homes() if not self._delete_if_ours(home)]
        except (ProvisioningError, _HomeUnknown) as exc:
            error = exc.error if isinstance(exc, _HomeUnknown) else exc
            return self._record_failure(error, str(exc), attempt)
        if left:  # the event says so: its readers must not take that data for deleted
            events.kept_on(self.conn, ", ".join(left))
        store.remove(self.conn, self.tenant_id)
        log_attempt(
            self.conn,
            self.tenant_id,
            attempt,
            started,
            self.clock(),
            AttemptOutcome.DEPROVISIONED,
            None,
            node=self.row.influxdb_node,
            task_id=self.delivery.task_id,
        )
        freed = self.pool.node(self.row.influxdb_node) if self.row.influxdb_node else None
        if freed is not None and not left:  # to the next in line, before anyone sees it free
            self.handed_to = node_marks.hand_over(self.conn, freed, self.clock())
        self.conn.commit()
        if left:  # not this tenant's: it stays, and so does the slot it takes
            logger.warning(
                "tenant deprovisioned; its id is free; %s stays on node %s (not this tenant's: "
                "an orphan from the next reconcile run)",
                self.database,
                ", ".join(left),
                extra=self.context,
            )
            return Outcome(RunResult.DEPROVISIONED, self.tenant_id, attempt)
        logger.info("tenant deprovisioned; its slot and id are free", extra=self.context)
        self.freed_on = freed
        return Outcome(RunResult.DEPROVISIONED, self.tenant_id, attempt)

    def _attempt_surely_over(self) -> datetime | None:
        """While an attempt's run has not said it ended (migration 0022), when its time limit
        surely has: that run's session may have been cut, its lock with it, while it goes on;
        its create or marker write landing after the deletion would make the database again."""
        started: datetime | None = self.row.influxdb_attempt_started_at
        return started and started + timedelta(seconds=self.settings.task_time_limit)

    def _homes(self) -> list[NodeConfig]:
        """The servers that may hold the tenant's database."""
        node_name: str | None = self.row.influxdb_node
        if node_name is not None:
            node = self.pool.node(node_name)
            return [node] if node is not None else []
        if self.row.influxdb_adopt != Adoption.UNMARKED:
            # Without a server, this incarnation never sent a create anywhere.
            return []
        # A row from before the worker: its database may be on any server.
        listings = list_everywhere(self.pool, self.pool.nodes())
        location = identity.locate(self.database, {n: ls.names for n, ls in listings.items()})
        if location.unanswered:  # found elsewhere or not: it may be there too (a copy)
            name = location.unanswered[0]
            error = listings[name].error
            assert error is not None  # unanswered means the listing failed
            raise _HomeUnknown(name, error)
        return [n for n in self.pool.nodes() if n.name in location.found]

    def _delete_if_ours(self, node: NodeConfig) -> bool:
        """Delete the tenant's database there; False when one is there that is not its own
        (left in place)."""
        client = self.pool.client(node)
        contents = client.read_contents(self.database)
        if contents is None:
            logger.info("no database %s on node %s", self.database, node.name, extra=self.context)
            return True
        markers = contents.markers
        judged = {
            "tenant_id": self.tenant_id,
            "incarnation": self.row.influxdb_incarnation,
            # (our create, unanswered, made it only if writes made nothing in it)
            "own_create_unanswered": self.row.influxdb_create_sent_to == node.name
            and contents.empty,
        }
        verdict = identity.judge(markers, adoption=self.adoption, **judged)
        if verdict is identity.Verdict.UNKNOWN and self._remade_on(node):
            # Its writers made it again before a reconcile run took it back: as that run
            # would, the tenant's (an unmarked one); left, it would stop the id made again.
            verdict = identity.judge(markers, adoption=Adoption.REMADE, **judged)
        if verdict is not identity.Verdict.OURS:
            logger.warning(
                "left %s on node %s in place: it is not this tenant's (%s)",
                self.database,
                node.name,
                verdict,
                extra=self.context,
            )
            return False
        # A name is deleted only under the tenant's lock. A session cut while the server was
        # read took the lock with it: a second run may have deleted the tenant since, and its
        # id been made again here, so the name may be a new tenant's database by now.
        if not holds_tenant_lock(self.conn, self.tenant_id):  # (raises when cut)
            raise RuntimeError("the tenant's lock was lost (its session made again) mid-run")
        deleted = client.delete_database(self.database, self.settings.influxdb_hard_delete_at)
        logger.info(
            "%s %s on node %s",
            "soft-deleted" if deleted else "found no database",
            self.database,
            node.name,
            extra=self.context,
        )
        return True

    def _remade_on(self, node: NodeConfig) -> bool:
        """Whether the server soft-deleted the tenant's database after it was provisioned
        (its stamp read on our clock, as the reconciler does)."""
        provisioned = self.row.influxdb_provisioned_at
        if provisioned is None:
            return False
        listed = self.pool.client(node).list_all()
        shift = clock_shift(listed.date, self.clock())
        for name in listed.deleted:
            original, stamp = soft_deleted(name)
            when = on_our_clock(stamp, shift) if stamp and original == self.database else None
            if when is not None and deleted_since(when, provisioned):
                return True
        return False

    def _wait_for_node(self, node_name: str) -> Outcome:
        # Its database is on that server: forgetting the tenant now would strand the data and
        # let a re-created id meet it later. Wait; the reconciler re-queues it once it is back.
        message = (
            f"node {node_name} is not in the nodes file; the deletion finishes when it is "
            "configured again"
        )
        state, reason = ProvisioningState.DEPROVISIONING, Reason.NODE_NOT_CONFIGURED
        store.settle(self.conn, self.tenant_id, state, reason, message, self.clock(), deleting=True)
        self.conn.commit()
        logger.warning("node %s is not configured; deletion waits", node_name, extra=self.context)
        return Outcome(
            RunResult.WAITING_FOR_NODE, self.tenant_id, reason=Reason.NODE_NOT_CONFIGURED
        )

    def _wait_for_clients(self, wait: locations.DeletionWait) -> Outcome:
        # Not an attempt: the run comes back when the clients' staleness has passed, as this
        # message's retry (the reconciler takes the chain over if that message is lost).
        now = self.clock()
        wait_until = wait.until
        store.update(
            self.conn,
            self.tenant_id,
            deleting=True,
            influxdb_delete_after=wait.delete_after,
            influxdb_next_attempt_at=wait_until,
            influxdb_retry_chain=self.delivery.retry,
            influxdb_updated_at=now,
        )
        self.conn.commit()
        delay = max(0.0, (wait_until - now).total_seconds())
        logger.info(
            "deleting the database in %.1fs, once location clients stop writing",
            delay,
            extra=self.context,
        )
        return Outcome(RunResult.WAITING_FOR_CLIENTS, self.tenant_id, retry_in=delay)

    def _record_failure(self, exc: ProvisioningError, message: str, attempt: int) -> Outcome:
        now = self.clock()
        permanent = isinstance(exc, PermanentError)
        delay = None
        if not permanent and attempt < self.settings.max_attempts:
            delay = next_backoff(
                attempt,
                self.settings.backoff_base_seconds,
                self.settings.backoff_cap_seconds,
                self.rng,
            )
        store.update(
            self.conn,
            self.tenant_id,
            deleting=True,
            influxdb_error_reason=exc.reason,
            influxdb_last_error=store.clean_error(f"delete database: {message}", self.secrets()),
            influxdb_next_attempt_at=None if delay is None else now + timedelta(seconds=delay),
            influxdb_retry_chain=None if delay is None else self.delivery.retry,
            influxdb_updated_at=now,
        )
        self.conn.commit()
        logger.warning(
            "deprovisioning attempt failed (%s)%s: %s",
            exc.reason,
            "" if delay is None else f", retrying in {delay:.1f}s",
            message,
            extra=self.context,
        )
        if delay is None:
            # Stays deprovisioning with the reason shown; the reconciler tries again each grace.
            return Outcome(RunResult.FAILED, self.tenant_id, attempt, exc.reason)
        return Outcome(RunResult.RETRYING, self.tenant_id, attempt, exc.reason, retry_in=delay)
