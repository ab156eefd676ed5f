"""Provisioning one tenant's InfluxDB database: the logic behind the Celery task.

``provision_tenant`` is idempotent ("ensure", not "create") and safe to run concurrently (one
run per tenant, one retry chain per tenant: ``worker.runs``). Every state change is committed
as it happens, so operators see ``provisioning`` while it is under way. A run, in order:

1. **Home first.** A tenant whose server left the nodes file stays there: nothing is created
   anywhere else (``waiting_for_node``). A row that predates the worker (``Adoption.UNMARKED``)
   and has no server yet is *located* - every server listed once - before anything is placed;
   a server that cannot answer means "unknown", and the run retries rather than place it.
2. **Place** a tenant without a home on the least-used server with room (or wait for capacity).
3. **Attempt** on that server: create the database; a 409 is success only when the database is
   provably this tenant's (``worker.identity``), otherwise the tenant stops as ``name_taken``;
   then write the ``_init`` marker carrying the tenant's incarnation.

Attempts are counted per episode (a new one starts with the tenant, an operator retry, a
drift repair, the end of a capacity wait, a resume) when an attempt *starts*, so a run whose
worker is killed counts too. It knows nothing of Celery: it returns an ``Outcome``.
"""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Row

from worker import identity, store
from worker.errors import (
    DatabaseLimitReached,
    InfluxDBBadResponse,
    PermanentError,
    ProvisioningError,
    TransientError,
)
from worker.identity import Verdict
from worker.nodes import NodePool, list_everywhere
from worker.placement import mark_full, place_tenant
from worker.runs import Delivery, Outcome, absorbed, next_backoff, tenant_lock
from worker.settings import NodeConfig, Settings
from worker.states import Adoption, AttemptOutcome, ProvisioningState, Reason, RunResult
from worker.store import Clock, utcnow

logger = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def provision_tenant(
    conn: Connection,
    tenant_id: str,
    pool: NodePool,
    settings: Settings,
    *,
    delivery: Delivery | None = None,
    clock: Clock = utcnow,
    rng: random.Random | None = None,
) -> Outcome:
    """Ensure the tenant's database exists on its server and holds the ``_init`` marker,
    finding or choosing the server first; record every step (see the module docstring)."""
    delivery = delivery or Delivery.fresh()
    with tenant_lock(conn, tenant_id) as acquired:
        if not acquired:
            # The holder leaves the tenant in a state the reconciler reads; a retry of this
            # message would only start a second chain.
            logger.info("another run holds the tenant; nothing to do")
            return Outcome(RunResult.BUSY, tenant_id)
        row = store.load(conn, tenant_id)
        if row is None:
            logger.warning("tenant does not exist; nothing to do", extra={"tenant_id": tenant_id})
            return Outcome(RunResult.NOT_FOUND, tenant_id)
        if row.influxdb_state in (ProvisioningState.FAILED, ProvisioningState.DEPROVISIONING):
            # A failed tenant waits for an operator retry or the reconciler's resume; one
            # being deleted belongs to the deprovisioning task.
            return Outcome(
                RunResult.SKIPPED, tenant_id, reason=Reason.parse(row.influxdb_error_reason)
            )
        if absorbed(row, delivery):
            logger.info("a retry is already scheduled by another message; absorbed")
            return Outcome(RunResult.ABSORBED, tenant_id)
        return _Run(conn, row, pool, settings, delivery, clock, rng).run()


def marker_timestamp_ns(created_at: datetime | None) -> int:
    """The ``_init`` point's timestamp: the tenant's creation time, so re-runs overwrite it."""
    if created_at is None:
        return 0
    if created_at.tzinfo is None:  # the UI's table may hold naive timestamps: they are UTC
        created_at = created_at.replace(tzinfo=UTC)
    return (created_at - _EPOCH) // timedelta(microseconds=1) * 1000


class _Run:
    """One provisioning run of one tenant, under its lock."""

    def __init__(
        self,
        conn: Connection,
        row: Row[Any],
        pool: NodePool,
        settings: Settings,
        delivery: Delivery,
        clock: Clock,
        rng: random.Random | None,
    ) -> None:
        self.conn, self.row, self.pool, self.settings = conn, row, pool, settings
        self.delivery, self.clock, self.rng = delivery, clock, rng
        self.tenant_id: str = row.tenant_id
        self.database = settings.database_name(self.tenant_id)
        self.adoption = Adoption(row.influxdb_adopt) if row.influxdb_adopt else None
        self.attempts: int = row.influxdb_attempts
        self.create_sent_to: str | None = row.influxdb_create_sent_to
        self.chain: str | None = row.influxdb_retry_chain  # as read: the attempt start checks it
        self.context = {"tenant_id": self.tenant_id}
        self._location: identity.Location | None = None
        self._listing_errors: list[tuple[str, ProvisioningError]] = []

    def run(self) -> Outcome:
        node: NodeConfig | None = None
        if self.row.influxdb_node is not None:
            node = self.pool.node(self.row.influxdb_node)
            if node is None:
                return self._wait_for_node(self.row.influxdb_node)
        if self.row.influxdb_state == ProvisioningState.PROVISIONED:
            if self._still_there(node):
                return Outcome(RunResult.ALREADY_PROVISIONED, self.tenant_id)
            self.attempts = 0  # gone: repairing it is a new episode
        elif self.row.influxdb_state == ProvisioningState.WAITING_FOR_CAPACITY:
            self.attempts = 0
        if self.attempts >= self.settings.max_attempts:
            # The last attempts never finished (their worker died): a killed run counts.
            return self._give_up_before_starting()
        return self._provision(node)

    # -- home -----------------------------------------------------------------------------

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
        if len(location.found) == 1:
            self._record_home(location.found[0])
            return True
        return not location.absent

    def _locate(self) -> identity.Location:
        if self._location is None:  # one listing per server per run
            listings = list_everywhere(self.pool, self.pool.nodes())
            self._listing_errors = [
                (name, listing.error) for name, listing in listings.items() if listing.error
            ]
            self._location = identity.locate(
                self.database, {n: ls.names for n, ls in listings.items()}
            )
        return self._location

    def _record_home(self, node_name: str) -> None:
        store.update(
            self.conn, self.tenant_id, influxdb_node=node_name, influxdb_updated_at=self.clock()
        )
        self.conn.commit()
        logger.info("found the database on node %s", node_name, extra=self.context)

    def _wait_for_node(self, node_name: str) -> Outcome:
        # The database (or the create we sent) is on that server: creating one elsewhere would
        # give the tenant two. Wait, with the reason shown, until the server is back.
        if self.row.influxdb_state != ProvisioningState.PROVISIONED:
            store.update(
                self.conn,
                self.tenant_id,
                influxdb_state=ProvisioningState.PENDING,
                influxdb_error_reason=Reason.NODE_NOT_CONFIGURED,
                influxdb_last_error=f"node {node_name} is not in the nodes file; the tenant "
                "stays on it and resumes when it is configured again",
                influxdb_next_attempt_at=None,
                influxdb_retry_chain=None,
                influxdb_updated_at=self.clock(),
            )
            self.conn.commit()
        logger.warning("node %s is not configured; waiting for it", node_name, extra=self.context)
        return Outcome(
            RunResult.WAITING_FOR_NODE, self.tenant_id, reason=Reason.NODE_NOT_CONFIGURED
        )

    # -- attempts -------------------------------------------------------------------------

    def _provision(self, node: NodeConfig | None) -> Outcome:
        refused: set[str] = set()  # servers that answered 422 in this run: each asked once
        while True:
            if node is None and self.adoption == Adoption.UNMARKED:
                located = self._locate_before_placing()
                if isinstance(located, Outcome):
                    return located
                node = located
            if node is None:
                name = place_tenant(self.conn, self.tenant_id, self.pool.nodes(), exclude=refused)
                node = self.pool.node(name) if name else None
                if node is None:
                    return self._wait_for_capacity()
            attempt = self._start(node)
            if attempt is None:
                return self._not_started()
            try:
                return self._attempt(attempt, node)
            except DatabaseLimitReached as exc:
                # Our count said there was room, the server disagrees: believe it, move on.
                # A 422 also says the name does not exist there (existence is checked first).
                mark_full(self.conn, node.name, self.clock())
                self.create_sent_to = None
                attempt.move_off_node(exc.reason, f"node {node.name}: {exc}")
                refused.add(node.name)
                node = None

    def _locate_before_placing(self) -> NodeConfig | Outcome | None:
        location = self._locate()
        if len(location.found) == 1:
            self._record_home(location.found[0])
            return self.pool.node(location.found[0])
        if location.found:
            attempt = self._start(None)
            if attempt is None:
                return self._not_started()
            message = (
                f"database {self.database} exists on nodes {', '.join(location.found)}; "
                "adopt the right one (python -m worker adopt TENANT --node NODE)"
            )
            return self._fail(attempt, Reason.NAME_TAKEN, message)
        if location.unanswered:
            attempt = self._start(None)
            if attempt is None:
                return self._not_started()
            name, why = self._listing_errors[0]
            # The listing's own error family decides: unreachable retries, unauthorized stops.
            error = type(why)(f"cannot tell where {self.database} is: node {name}: {why}")
            return self._after_error(attempt, None, error, created=None)
        # Confirmed absent on every server: nothing of it exists; it gets a new home.
        store.update(self.conn, self.tenant_id, influxdb_adopt=None)
        self.conn.commit()
        self.adoption = None
        return None

    def _not_started(self) -> Outcome:
        row = store.load(self.conn, self.tenant_id)
        if row is None or row.influxdb_state == ProvisioningState.DEPROVISIONING:
            return Outcome(RunResult.SKIPPED, self.tenant_id, reason=None)
        logger.info("the retry chain went to another message; absorbed", extra=self.context)
        return Outcome(RunResult.ABSORBED, self.tenant_id)

    def _start(self, node: NodeConfig | None) -> _Attempt | None:
        self.attempts += 1
        try:
            return _Attempt(self, node)
        except _NotStarted:
            return None

    def _attempt(self, attempt: _Attempt, node: NodeConfig) -> Outcome:
        client = self.pool.client(node)
        created: bool | None = None  # None until the server answered the create
        try:
            created = client.ensure_database(self.database, self.row.influxdb_retention_period)
            if not created:
                markers = client.read_markers(self.database)
                if markers is None:
                    raise InfluxDBBadResponse("create answered 409 but the database is not there")
                verdict = identity.judge(
                    markers,
                    tenant_id=self.tenant_id,
                    incarnation=self.row.influxdb_incarnation,
                    adoption=self.adoption,
                    own_create_unanswered=attempt.unanswered_before,
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
                marker_timestamp_ns(self.row.created_at),
            )
        except DatabaseLimitReached:
            raise
        except Exception as exc:
            return self._after_error(attempt, node, exc, created)
        attempt.succeed()
        logger.info(
            "provisioned %s on node %s (%s)",
            self.database,
            node.name,
            "created" if created else "adopted" if self.adoption else "already existed",
            extra={**self.context, "attempt": attempt.number},
        )
        return Outcome(RunResult.PROVISIONED, self.tenant_id, attempt.number)

    def _after_error(
        self, attempt: _Attempt, node: NodeConfig | None, exc: Exception, created: bool | None
    ) -> Outcome:
        where = f"node {node.name}: " if node else ""
        if node is not None and created is None and not attempt.unanswered_before:
            # This call's create was refused, or never left: nothing of ours can be there.
            if isinstance(exc, PermanentError):
                attempt.release_node()  # the slot goes back
            elif not _sent(exc):
                self.create_sent_to = None
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
        delay = next_backoff(
            attempt.number,
            self.settings.backoff_base_seconds,
            self.settings.backoff_cap_seconds,
            self.rng,
        )
        attempt.retry_later(reason, message, delay)
        logger.warning(
            "attempt failed (%s), retrying in %.1fs: %s",
            reason,
            delay,
            message,
            extra={**self.context, "attempt": attempt.number},
        )
        return Outcome(RunResult.RETRYING, self.tenant_id, attempt.number, reason, retry_in=delay)

    def _fail(self, attempt: _Attempt, reason: Reason, message: str) -> Outcome:
        attempt.fail(reason, message)
        logger.error(
            "provisioning failed (%s): %s",
            reason,
            message,
            extra={**self.context, "attempt": attempt.number},
        )
        return Outcome(RunResult.FAILED, self.tenant_id, attempt.number, reason)

    def _give_up_before_starting(self) -> Outcome:
        reason = Reason.parse(self.row.influxdb_error_reason) or Reason.WORKER_LOST
        message = (
            f"gave up after {self.attempts} attempts: the last ones did not finish "
            f"({self.row.influxdb_last_error or reason})"
        )
        now = self.clock()
        if store.update(
            self.conn,
            self.tenant_id,
            influxdb_state=ProvisioningState.FAILED,
            influxdb_error_reason=reason,
            influxdb_last_error=store.clean_error(message, self._secrets()),
            influxdb_next_attempt_at=None,
            influxdb_retry_chain=None,
            influxdb_updated_at=now,
        ):
            store.log_attempt(
                self.conn, self.tenant_id, self.attempts, now, now, AttemptOutcome.FAILED, reason
            )
        self.conn.commit()
        logger.error("provisioning failed (%s): %s", reason, message, extra=self.context)
        return Outcome(RunResult.FAILED, self.tenant_id, self.attempts, reason)

    def _wait_for_capacity(self) -> Outcome:
        # Capacity is a state, not a retry loop: the reconciler places waiting tenants, oldest
        # first, when a server is added or a slot frees. The wait ends the episode.
        nodes = len(self.pool.nodes())
        store.update(
            self.conn,
            self.tenant_id,
            influxdb_state=ProvisioningState.WAITING_FOR_CAPACITY,
            influxdb_node=None,
            influxdb_attempts=0,
            influxdb_create_sent_to=None,
            influxdb_error_reason=Reason.DATABASE_LIMIT,
            influxdb_last_error=f"no InfluxDB node has room (all {nodes} at their limit)",
            influxdb_next_attempt_at=None,
            influxdb_retry_chain=None,
            influxdb_updated_at=self.clock(),
        )
        self.conn.commit()
        logger.warning("no node has room; waiting for capacity", extra=self.context)
        return Outcome(RunResult.WAITING_FOR_CAPACITY, self.tenant_id, reason=Reason.DATABASE_LIMIT)

    def _secrets(self) -> tuple[str, ...]:
        return self.settings.secrets() + self.pool.secrets()


class _NotStarted(Exception):
    """Since the run read the row, the tenant went to ``deprovisioning`` or its retry chain
    went to another message: the attempt is not this run's to make."""


def _sent(exc: Exception) -> bool:
    """Whether the request behind ``exc`` may have reached the server."""
    return bool(getattr(exc, "request_sent", True))


class _Attempt:
    """One attempt as Postgres sees it: ``provisioning`` from its start (counted then), then
    one outcome committed together with its row in the attempt log."""

    def __init__(self, run: _Run, node: NodeConfig | None) -> None:
        self._run = run
        self.number = run.attempts
        self._started = run.clock()
        self._release = False
        # Whether a create of ours sent there earlier was never answered (worker.identity).
        self.unanswered_before = node is not None and run.create_sent_to == node.name
        values: dict[str, Any] = {}
        if node is not None:
            # Written before the create is sent: if this run dies inside the call, the next
            # one knows a create of ours may have landed there.
            run.create_sent_to = node.name
            values = {"influxdb_node": node.name, "influxdb_create_sent_to": node.name}
        started = store.update(
            run.conn,
            run.tenant_id,
            # Still this run's to start: an operator retry or the reconciler may have handed
            # the tenant's chain to another message since the row was read.
            expect={"influxdb_retry_chain": run.chain},
            influxdb_state=ProvisioningState.PROVISIONING,
            influxdb_attempts=self.number,
            influxdb_next_attempt_at=None,
            influxdb_retry_chain=None,
            influxdb_updated_at=self._started,
            **values,
        )
        run.conn.commit()
        if not started:
            raise _NotStarted(run.tenant_id)
        run.chain = None

    def succeed(self) -> None:
        now = self._run.clock()
        self._finish(
            AttemptOutcome.PROVISIONED,
            None,
            now,
            influxdb_state=ProvisioningState.PROVISIONED,
            influxdb_provisioned_at=now,
            influxdb_last_error=None,
            influxdb_error_reason=None,
            influxdb_create_sent_to=None,
            influxdb_adopt=None,  # the marker now says whose it is
        )

    def retry_later(self, reason: Reason, message: str, delay: float) -> None:
        now = self._run.clock()
        retry_at = now + timedelta(seconds=delay)
        self._finish(
            AttemptOutcome.RETRYING,
            reason,
            now,
            retry_at=retry_at,
            influxdb_state=ProvisioningState.RETRYING,
            influxdb_error_reason=reason,
            influxdb_last_error=self._clean(message),
            influxdb_next_attempt_at=retry_at,
            # The message that will carry this retry owns the schedule: one chain per tenant.
            influxdb_retry_chain=self._run.delivery.retry,
            influxdb_create_sent_to=self._run.create_sent_to,
        )

    def move_off_node(self, reason: Reason, message: str) -> None:
        """The server refused the database (422): give its slot back; placement goes on."""
        self._finish(
            AttemptOutcome.NODE_FULL,
            reason,
            self._run.clock(),
            influxdb_node=None,
            influxdb_create_sent_to=None,
            influxdb_error_reason=reason,
            influxdb_last_error=self._clean(message),
        )

    def release_node(self) -> None:
        """Nothing of the tenant's is on the server: the slot goes back with the outcome."""
        self._release = True
        self._run.create_sent_to = None

    def fail(self, reason: Reason, message: str) -> None:
        released: dict[str, Any] = {"influxdb_node": None} if self._release else {}
        if reason == Reason.NAME_TAKEN:
            self._run.create_sent_to = None  # now known: that database is not ours
        self._finish(
            AttemptOutcome.FAILED,
            reason,
            self._run.clock(),
            **released,
            influxdb_state=ProvisioningState.FAILED,
            influxdb_error_reason=reason,
            influxdb_last_error=self._clean(message),
            influxdb_next_attempt_at=None,
            influxdb_create_sent_to=self._run.create_sent_to,
        )

    def _clean(self, message: str) -> str:
        return store.clean_error(message, self._run._secrets())

    def _finish(
        self,
        outcome: AttemptOutcome,
        reason: Reason | None,
        now: datetime,
        retry_at: datetime | None = None,
        **values: Any,
    ) -> None:
        run = self._run
        # A deletion asked for meanwhile wins: the outcome goes to the attempt log only.
        store.update(run.conn, run.tenant_id, influxdb_updated_at=now, **values)
        store.log_attempt(
            run.conn, run.tenant_id, self.number, self._started, now, outcome, reason, retry_at
        )
        run.conn.commit()
