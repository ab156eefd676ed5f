"""Provisioning one tenant's InfluxDB database: the logic behind the Celery task.

``provision_tenant`` is idempotent ("ensure", not "create") and safe to run concurrently (one
run per tenant, one retry chain per tenant: ``worker.runs``). Every state change is committed
as it happens, so operators see ``provisioning`` while it is under way. A run, in order:

1. **Home first.** A tenant whose server left the nodes file stays there: nothing is created
   anywhere else (``waiting_for_node``); only a slot an un-wait reserved there is let go. A
   row that predates the worker (``Adoption.UNMARKED``) and has no server yet is *located* -
   every server listed once - before anything is placed; a server that cannot answer means
   "unknown", and the run retries rather than place it.
2. **Place** a tenant without a home on the least-used server with room (or wait for capacity),
   as its attempt starts (``placement.start_on_free_node``; ``choose_node`` waits out a placer).
3. **Attempt** there: create the database (a 409 is success only when it is provably this
   tenant's, ``worker.identity``; else ``name_taken``), then write the ``_init`` marker.

Attempts count per episode (from creation, an operator retry, a drift repair, a capacity wait's
end, a resume) as they *start*: a killed run counts. Celery is not known here: ``Outcome``s are.
"""

from __future__ import annotations

import logging
import random
from dataclasses import replace

from sqlalchemy import Connection

from worker import identity, node_marks, placement, store
from worker.attempts import RELEASED_ADOPT, AttemptRecord, log_attempt, released
from worker.clock import Clock, database_clock
from worker.errors import (
    DatabaseLimitReached,
    InfluxDBBadResponse,
    InfluxDBUnauthorized,
    InfluxDBUnreachable,
    PermanentError,
    ProvisioningError,
    TransientError,
    late_as_timeout,
)
from worker.identity import Verdict
from worker.node_config import NodeConfig
from worker.nodes import NodePool, list_everywhere
from worker.runs import (
    Delivery,
    NotStarted,
    Outcome,
    TenantRun,
    busy,
    next_backoff,
    runnable,
    tenant_lock,
)
from worker.settings import Settings
from worker.states import Adoption, AttemptOutcome, ProvisioningState, Reason, RunResult

logger = logging.getLogger(__name__)


def provision_tenant(
    conn: Connection,
    tenant_id: str,
    pool: NodePool,
    settings: Settings,
    *,
    delivery: Delivery | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
) -> Outcome:
    """Ensure the tenant's database exists on its server and holds the ``_init`` marker,
    finding or choosing the server first; record every step (see the module docstring)."""
    delivery = delivery or Delivery.fresh()
    with tenant_lock(conn, tenant_id) as acquired:
        if not acquired:
            return busy(conn, tenant_id, delivery, settings.backoff_base_seconds, clock)
        row = runnable(store.load(conn, tenant_id), tenant_id, delivery)
        if isinstance(row, Outcome):
            return row
        clock = clock or database_clock(conn, row.read_at)
        return _Run(conn, row, pool, settings, delivery, clock, rng).run()


class _Run(TenantRun):
    """One provisioning run of one tenant, under its lock."""

    _location: identity.Location | None = None  # one listing per server per run
    _listing_errors: tuple[tuple[str, ProvisioningError], ...] = ()
    _again = False  # a second run, on the row as an operator changed it under the first
    _sent: tuple[str, ...] = ()  # waiting tenants given the room this run wrote down

    def run(self) -> Outcome:
        try:
            outcome = self._run()
        except NotStarted:  # a guarded write found the row changed since it was read
            outcome = self._not_started()
        own = outcome.result is RunResult.ABSORBED  # its own tenant: if another message runs it
        sent = tuple(t for t in self._sent if own or t != self.tenant_id)  # given room written
        return replace(outcome, unwaited=(*sent, *outcome.unwaited)) if sent else outcome

    def _run(self) -> Outcome:
        node: NodeConfig | None = None
        if self.row.influxdb_node is not None:
            node = self.pool.node(self.row.influxdb_node)
            if node is None and placement.reserved_only(self.row):  # nothing was sent there
                self._write(influxdb_node=None, influxdb_updated_at=self.clock())
                self.node_name = None
            elif node is None:
                return self._wait_for_node(self.row.influxdb_node)
        if self.row.influxdb_state == ProvisioningState.PROVISIONED:
            if self._still_there(node):
                return Outcome(RunResult.ALREADY_PROVISIONED, self.tenant_id)
            self.attempts = 0  # gone: repairing it is a new episode
        elif self.row.influxdb_state == ProvisioningState.WAITING_FOR_CAPACITY:
            self.attempts = 0
        # The last attempts never finished (their worker died): a killed run counts. The last may
        # have done its work unsaid (its create went out): one more attempt finds out.
        unsaid = self.attempts == self.settings.max_attempts and self.row.influxdb_create_sent_to
        if self.attempts >= self.settings.max_attempts and not unsaid:
            return self._give_up_before_starting()
        return self._provision(node)

    def _still_there(self, node: NodeConfig | None) -> bool:
        """Re-verify a provisioned tenant; True unless its database is surely gone."""
        if node is not None:
            try:
                return self.database in self.pool.client(node).list_databases()
            except ProvisioningError as exc:
                # Cannot tell now; a provisioned tenant stays so, the reconciler looks again.
                logger.warning("cannot verify the database: %s", exc, extra=self.context)
                return True
        # Provisioned before the pool existed: find where it is, never create a second one.
        location = self._locate()
        if location.home:
            self._record_home(location.home)
            return True
        return not location.absent

    def _locate(self) -> identity.Location:
        if self._location is None:  # one listing per server per run
            listings = list_everywhere(self.pool, self.pool.nodes())
            self._listing_errors = tuple(
                (name, listing.error) for name, listing in listings.items() if listing.error
            )
            names = {n: ls.names for n, ls in listings.items()}
            gone = node_marks.departed(self.conn, self.clock(), listings)  # they may be back
            self._location = identity.locate(self.database, names, gone)
        return self._location

    def _record_home(self, node_name: str) -> None:
        self._write(influxdb_node=node_name, influxdb_updated_at=self.clock())
        self.node_name = node_name
        logger.info("found the database on node %s", node_name, extra=self.context)

    def _wait_for_node(self, node_name: str) -> Outcome:
        # The database (or the create we sent) is on that server: creating one elsewhere would
        # give the tenant two. Wait, with the reason shown, until the server is back.
        if self.row.influxdb_state != ProvisioningState.PROVISIONED:
            message = (
                f"node {node_name} is not in the nodes file; the tenant waits for it (its "
                "database is, or may be, there) and resumes when it is configured again"
            )
            self._settle(ProvisioningState.PENDING, Reason.NODE_NOT_CONFIGURED, message)
        logger.warning("node %s is not configured; waiting for it", node_name, extra=self.context)
        return Outcome(
            RunResult.WAITING_FOR_NODE, self.tenant_id, reason=Reason.NODE_NOT_CONFIGURED
        )

    def _provision(self, node: NodeConfig | None) -> Outcome:
        refused: set[str] = set()  # servers that answered 422 in this run: each asked once
        while True:
            if node is None and self.adoption == Adoption.UNMARKED:
                located = self._locate_before_placing()
                if isinstance(located, Outcome):
                    return located
                node = located
            if node is None:
                nodes = self.pool.nodes()
                if placement.sync_nodes(self.conn, nodes):  # room added: the waiting go first
                    self._sent += tuple(node_marks.unwait(self.conn, nodes, self.clock()))
                try:  # placed and started in one statement, when a node is free at once
                    attempt = self._start(None, [n for n in nodes if n.name not in refused])
                except placement.NoFreeNode:
                    # The long way: the node's row stays locked until the attempt's start
                    # reserves the slot on it and commits.
                    name = placement.choose_node(self.conn, nodes, exclude=refused)
                    node = next((n for n in nodes if n.name == name), None)
                    if node is None:
                        return self._wait_for_capacity()
                    attempt = self._start(node)
                else:
                    node = next(n for n in nodes if n.name == attempt.node)
            else:
                attempt = self._start(node)
            try:
                return self._attempt(attempt, node)
            except DatabaseLimitReached as exc:
                # Our count said there was room, the server disagrees: believe it, move on.
                # A 422 also says the name does not exist there (existence is checked first).
                node_marks.mark_full(self.conn, node.name, self.clock(), exc.server_limit)
                self.create_sent_to = self.node_name = None
                attempt.move_off_node(exc.reason, f"node {node.name}: {exc}")
                self.adoption = released(self.adoption)  # as move_off_node wrote it
                refused.add(node.name)
                if self._location is not None:  # located there by a listing older than this
                    found = tuple(n for n in self._location.found if n != node.name)
                    self._location = replace(self._location, found=found)
                node = None

    def _locate_before_placing(self) -> NodeConfig | Outcome | None:
        location = self._locate()
        if location.home:
            self._record_home(location.home)
            return self.pool.node(location.home)
        if len(location.found) > 1:
            attempt = self._start(None)
            message = (
                f"database {self.database} exists on nodes {', '.join(location.found)}; "
                "adopt the right one (tenantctl adopt TENANT --node NODE)"
            )
            return self._fail(attempt, Reason.NAME_TAKEN, message)
        if location.unanswered and not self._listing_errors:  # a server just left the file
            return self._wait_for_node(location.unanswered[0])
        if location.unanswered:
            attempt = self._start(None)
            name, why = self._listing_errors[0]
            # The listing's own error family decides: unreachable retries, unauthorized stops.
            error = type(why)(f"cannot tell where {self.database} is: node {name}: {why}")
            return self._after_error(attempt, None, error, created=None)
        # Confirmed absent on every server: nothing of it exists; it gets a new home.
        self._write(influxdb_adopt=None)
        self.adoption = None
        return None

    def _not_started(self) -> Outcome:
        row = runnable(store.load(self.conn, self.tenant_id), self.tenant_id, self.delivery)
        if isinstance(row, Outcome):
            return row
        if self._again:
            logger.info("the tenant changed again; left to the reconciler", extra=self.context)
            return Outcome(RunResult.ABSORBED, self.tenant_id)
        # Still this message's: an operator adopted a database, or the reconciler recorded
        # where the database is, since the row was read. Start over from it, once.
        logger.info("the tenant changed since it was read; starting over", extra=self.context)
        again = _Run(self.conn, row, self.pool, self.settings, self.delivery, self.clock, self.rng)
        again._again = True
        return again.run()

    def _start(
        self, node: NodeConfig | None, place: list[NodeConfig] | None = None
    ) -> AttemptRecord:
        attempt = AttemptRecord(  # or raises NotStarted
            self.conn,
            self.tenant_id,
            number=self.attempts + 1,
            node=node.name if node else None,
            # Still this run's to start: since the row was read, an operator retry or the
            # reconciler may have handed the chain on, or an operator adopted a database.
            expect=self.as_read(),
            retry_chain=self.delivery.retry,
            task_id=self.delivery.task_id,
            create_sent_to=self.create_sent_to,
            earlier_start=self.row.influxdb_attempt_started_at,
            clock=self.clock,
            secrets=self.secrets,
            place=place,
        )
        self.attempts, self.chain, self.node_name = attempt.number, None, attempt.node
        return attempt

    def _attempt(self, attempt: AttemptRecord, node: NodeConfig) -> Outcome:
        client = self.pool.client(node)
        created: bool | None = None  # None until the server answered the create
        try:
            created = client.ensure_database(self.database, self.row.influxdb_retention_period)
            if not created:
                contents = client.read_contents(self.database)
                if contents is None:
                    raise InfluxDBBadResponse("create answered 409 but the database is not there")
                verdict = identity.judge(
                    contents.markers,
                    tenant_id=self.tenant_id,
                    incarnation=self.row.influxdb_incarnation,
                    adoption=self.adoption,
                    # (our create, unanswered, made it only if writes made nothing in it)
                    own_create_unanswered=attempt.unanswered_before and contents.empty,
                )
                if verdict is not Verdict.OURS:
                    return self._fail(
                        attempt,
                        Reason.NAME_TAKEN,
                        identity.describe(verdict, self.database, node.name),
                    )
            client.write_marker(
                self.database,
                self.tenant_id,
                self.row.influxdb_incarnation,
                identity.marker_timestamp_ns(self.row.created_at),
            )
        except DatabaseLimitReached:
            raise
        except Exception as exc:
            return self._after_error(attempt, node, exc, created)
        attempt.succeed(identity.retention_note(self.row, self.adoption, created))
        logger.info(
            "provisioned %s on node %s (%s)",
            self.database,
            node.name,
            "created" if created else "adopted" if self.adoption else "already existed",
            extra={**self.context, "attempt": attempt.number},
        )
        return Outcome(RunResult.PROVISIONED, self.tenant_id, attempt.number)

    def _after_error(
        self, attempt: AttemptRecord, node: NodeConfig | None, exc: Exception, created: bool | None
    ) -> Outcome:
        exc, where = late_as_timeout(exc), f"node {node.name}: " if node else ""
        if node is not None and isinstance(exc, InfluxDBUnauthorized | InfluxDBUnreachable):
            # Others first: new tenants go to the servers that answer.
            node_marks.mark_unavailable(self.conn, node.name, exc.reason, self.clock())
        if node is not None and created is None:
            # This call's create was refused, or never left: nothing of it is there. Nor of
            # the tenant's, unless an adoption says its database may be (remade there, adopted
            # there, located there): then the tenant keeps the server, to take it back later.
            if isinstance(exc, PermanentError) and self.adoption is None:
                attempt.release_node()
            elif isinstance(exc, TransientError) and not exc.request_sent:
                attempt.forget_create()
        if isinstance(exc, PermanentError):
            return self._fail(attempt, exc.reason, f"{where}{exc}")
        if isinstance(exc, TransientError):
            reason, message = exc.reason, f"{where}{exc}"
        else:  # a bug or a surprise: still recorded, still bounded by max attempts
            logger.exception("unexpected error while provisioning", extra=self.context)
            reason, message = Reason.INTERNAL_ERROR, f"{where}unexpected {type(exc).__name__}"
        if attempt.number >= self.settings.max_attempts:
            return self._fail(
                attempt, reason, f"gave up after {attempt.number} attempts: {message}"
            )
        base, cap = self.settings.backoff_base_seconds, self.settings.backoff_cap_seconds
        delay = next_backoff(attempt.number, base, cap, self.rng)
        attempt.retry_later(reason, message, delay)
        context = {**self.context, "attempt": attempt.number}
        retrying = "attempt failed (%s), retrying in %.1fs: %s"
        logger.warning(retrying, reason, delay, message, extra=context)
        return Outcome(RunResult.RETRYING, self.tenant_id, attempt.number, reason, retry_in=delay)

    def _fail(self, attempt: AttemptRecord, reason: Reason, message: str) -> Outcome:
        attempt.fail(reason, message)
        context = {**self.context, "attempt": attempt.number}
        logger.error("provisioning failed (%s): %s", reason, message, extra=context)
        room = attempt.released  # a slot given back: the oldest waiting's, not the next created's
        moved = node_marks.unwait(self.conn, self.pool.nodes(), self.clock()) if room else []
        return Outcome(RunResult.FAILED, self.tenant_id, attempt.number, reason, None, (*moved,))

    def _give_up_before_starting(self) -> Outcome:
        reason = Reason.parse(self.row.influxdb_error_reason) or Reason.WORKER_LOST
        message = (
            f"gave up after {self.attempts} attempts: the last ones did not finish "
            f"({self.row.influxdb_last_error or reason})"
        )
        now = self.clock()
        cleaned = store.clean_error(message, self.secrets())
        failed, expect = ProvisioningState.FAILED, self.as_read()
        settled = store.settle(
            self.conn, self.tenant_id, failed, reason, cleaned, now, expect=expect
        )
        if settled:
            log_attempt(
                self.conn,
                self.tenant_id,
                self.attempts,
                now,
                now,
                AttemptOutcome.FAILED,
                reason,
                node=self.row.influxdb_node,
                task_id=self.delivery.task_id,
            )
        self._commit_or_stop(settled)
        logger.error("provisioning failed (%s): %s", reason, message, extra=self.context)
        return Outcome(RunResult.FAILED, self.tenant_id, self.attempts, reason)

    def _wait_for_capacity(self) -> Outcome:
        # Capacity is a state, not a retry loop: the wait ends the episode. Room freed while
        # this run chose (its un-wait saw no wait yet) is seen once the wait is written.
        nodes = self.pool.nodes()
        self._settle(
            ProvisioningState.WAITING_FOR_CAPACITY,
            Reason.DATABASE_LIMIT,
            f"no InfluxDB node has room (all {len(nodes)} at their limit)",
            influxdb_node=None,
            influxdb_adopt=RELEASED_ADOPT,
            influxdb_attempts=0,
            influxdb_create_sent_to=None,
        )
        logger.warning("no node has room; waiting for capacity", extra=self.context)
        moved = tuple(node_marks.unwait(self.conn, nodes, self.clock()))
        result, reason = RunResult.WAITING_FOR_CAPACITY, Reason.DATABASE_LIMIT
        return Outcome(result, self.tenant_id, reason=reason, unwaited=moved)
