"""One provisioning attempt as Postgres sees it.

An attempt is ``provisioning`` from its start - counted then, so an attempt whose worker is
killed counts too - and ends with one outcome, committed together with its row in the attempt
log. Its start is a compare-and-set on the tenant's retry chain, node and adoption mode as the
run read them (``worker.runs``): an attempt is made only by the message that still owns the
tenant, and never over an operator's adoption.

It also keeps ``influxdb_create_sent_to`` (``worker.identity``): the server of a create of
this incarnation whose answer was never seen, written *before* the create is sent.

Every attempt, and every deletion, leaves one row in ``provisioning_attempts``
(:func:`log_attempt`): when, on which server, by which task, and how it ended - and adds one to
its outcome's running total, which ``/metrics`` reads. Rows older than the retention are
pruned in batches (:func:`prune_attempt_log`); the totals stay.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Update, case, delete, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from worker import store
from worker.clock import Clock
from worker.db import autocommit
from worker.models import provisioning_attempt_totals, provisioning_attempts, tenants
from worker.node_config import NodeConfig
from worker.placement import start_on_free_node
from worker.runs import NotStarted
from worker.states import Adoption, AttemptOutcome, ProvisioningState, Reason

TOTAL_SHARDS = 16  # rows per (outcome, reason): concurrent attempts rarely meet on one


def log_attempt(
    conn: Connection,
    tenant_id: str,
    number: int,
    started: datetime,
    finished: datetime,
    outcome: AttemptOutcome,
    reason: Reason | None,
    retry_at: datetime | None = None,
    *,
    node: str | None = None,
    task_id: str | None = None,
    settle: Update | None = None,
) -> bool:
    """Append one attempt to ``provisioning_attempts`` and count it in the totals, in one
    statement (one round trip; the caller commits); with ``settle``, the tenant's row too:
    whether that row was changed (a guard may refuse it)."""
    logged = (
        insert(provisioning_attempts)
        .values(
            tenant_id=tenant_id,
            attempt=number,
            started_at=started,
            finished_at=finished,
            outcome=outcome.value,
            reason=None if reason is None else reason.value,
            retry_at=retry_at,
            node=node,
            task_id=task_id,
        )
        .returning(provisioning_attempts.c.id)
        .cte("logged")
    )
    totals = provisioning_attempt_totals
    counted = pg_insert(totals).values(
        outcome=outcome.value,
        reason="" if reason is None else reason.value,
        shard=random.randrange(TOTAL_SHARDS),
        total=1,
    )
    counted = counted.on_conflict_do_update(
        index_elements=[totals.c.outcome, totals.c.reason, totals.c.shard],
        set_={"total": totals.c.total + 1},
    )
    if settle is None:
        conn.execute(counted.add_cte(logged))
        return True
    # The tenant's row first (the main statement), as every writer of it takes it; then the
    # log line and the total (a WITH that writes runs to completion, read or not).
    totalled = counted.returning(totals.c.total).cte("counted")
    return bool(conn.execute(settle.add_cte(logged).add_cte(totalled)).rowcount)


def prune_attempt_log(
    conn: Connection, older_than: datetime, batch_size: int, stop: Callable[[], bool]
) -> int:
    """Delete attempt rows finished before ``older_than``, ``batch_size`` per transaction
    (each committed), until none is left or ``stop()``; the number deleted. The totals stay."""
    log = provisioning_attempts
    deleted = 0
    while not stop():
        oldest = (
            select(log.c.id).where(log.c.finished_at < older_than).limit(batch_size)
        ).scalar_subquery()
        count = conn.execute(delete(log).where(log.c.id.in_(oldest))).rowcount
        conn.commit()
        deleted += count
        if count < batch_size:
            break
    return deleted


# A row's server released (or none had room): a mode that named a database on that server
# goes with it - a remade one (``REMADE``), the one an operator adopted (``ANY``): on the next
# server a database of the name is another's. ``UNMARKED`` stays: such a row is located again.
RELEASED_ADOPT = case(
    (tenants.c.influxdb_adopt == Adoption.UNMARKED.value, tenants.c.influxdb_adopt), else_=None
)


def released(adoption: Adoption | None) -> Adoption | None:
    """``RELEASED_ADOPT`` of one mode: what the row holds once its server is released."""
    return adoption if adoption == Adoption.UNMARKED else None


class AttemptRecord:
    """The Postgres side of one attempt (see the module docstring)."""

    def __init__(
        self,
        conn: Connection,
        tenant_id: str,
        *,
        number: int,
        node: str | None,
        expect: Mapping[str, Any],
        retry_chain: str,
        task_id: str | None,
        create_sent_to: str | None,
        clock: Clock,
        secrets: Callable[[], Iterable[str]],
        place: Sequence[NodeConfig] | None = None,
        earlier_start: datetime | None = None,
    ) -> None:
        """Start attempt ``number`` on ``node`` - with ``place``, on the least-used of those
        nodes free at once (``placement.start_on_free_node``) - if the row still holds what
        ``expect`` says (``TenantRun.as_read``); the attempt's own retry will be carried by
        ``retry_chain``. Raises NotStarted, and with ``place`` NoFreeNode (nothing done)."""
        self._conn, self.tenant_id, self.number = conn, tenant_id, number
        self._retry_chain, self._clock, self._secrets = retry_chain, clock, secrets
        self._task_id, self._started, self._release = task_id, clock(), False
        # An earlier attempt's start this one replaces, put back at its end: that run may
        # still be going without its lock (it lost its session); once past its time limit,
        # the start is harmless (a deletion waits until then, which has passed).
        self._earlier_start = earlier_start
        start = store.update_statement(
            tenant_id,
            expect=expect,
            influxdb_state=ProvisioningState.PROVISIONING,
            influxdb_attempts=number,
            influxdb_next_attempt_at=None,
            influxdb_retry_chain=None,
            influxdb_updated_at=self._started,
            influxdb_attempt_started_at=self._started,  # until this run ends it (0022)
        )
        # Committed before the create is sent, with the node as influxdb_create_sent_to: if
        # this run dies inside the call, the next one knows a create of ours may be there.
        with autocommit(conn):  # or in the placing transaction, holding the node's row
            if place is not None:
                node = start_on_free_node(conn, start, place)  # or raises NoFreeNode
                started = node is not None
            else:
                if node is not None:
                    start = start.values(influxdb_node=node, influxdb_create_sent_to=node)
                started = bool(conn.execute(start).rowcount)
        conn.commit()
        if not started:
            raise NotStarted(tenant_id)
        self.node = node
        # Whether a create of ours sent there earlier was never answered.
        self.unanswered_before = node is not None and create_sent_to == node
        self.create_sent_to = node if node is not None else create_sent_to

    def forget_create(self) -> None:
        """This attempt's create surely never left (connection refused): unless an earlier
        one went unanswered, no create of ours can be on the server."""
        if not self.unanswered_before:
            self.create_sent_to = None

    @property
    def released(self) -> bool:
        """Whether this attempt gives its slot back with its outcome (``release_node``)."""
        return self._release

    def release_node(self) -> None:
        """This attempt's create was refused and no earlier one is unanswered: nothing of the
        tenant's is on the server, and its slot goes back with the outcome."""
        if not self.unanswered_before:
            self._release = True
            self.create_sent_to = None

    def succeed(self, note: str | None = None) -> None:
        """Provisioned; ``note``: what an operator should still know (kept as the last error)."""
        now = self._clock()
        self.create_sent_to = None
        self._finish(
            AttemptOutcome.PROVISIONED,
            None,
            now,
            influxdb_state=ProvisioningState.PROVISIONED,
            influxdb_provisioned_at=now,
            influxdb_last_error=note and self._clean(note),
            influxdb_error_reason=None,
            influxdb_create_sent_to=None,
            influxdb_adopt=None,  # the marker now says whose it is
        )

    def retry_later(self, reason: Reason, message: str, delay: float) -> None:
        now = self._clock()
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
            influxdb_retry_chain=self._retry_chain,
            influxdb_create_sent_to=self.create_sent_to,
        )

    def move_off_node(self, reason: Reason, message: str) -> None:
        """The server refused the database (422): its slot goes back; placement goes on. A
        422 also says the name does not exist there (existence is checked first)."""
        self.create_sent_to = None
        self._finish(
            AttemptOutcome.NODE_FULL,
            reason,
            self._clock(),
            influxdb_node=None,
            influxdb_adopt=RELEASED_ADOPT,
            influxdb_create_sent_to=None,
            influxdb_error_reason=reason,
            influxdb_last_error=self._clean(message),
        )

    def fail(self, reason: Reason, message: str) -> None:
        released: dict[str, Any] = {}
        if self._release:
            released = {"influxdb_node": None, "influxdb_adopt": RELEASED_ADOPT}
        if reason == Reason.NAME_TAKEN:
            self.create_sent_to = None  # now known: that database is not ours
            released["influxdb_provisioned_at"] = None  # nor was it: stats must not count it
        self._finish(
            AttemptOutcome.FAILED,
            reason,
            self._clock(),
            **released,
            influxdb_state=ProvisioningState.FAILED,
            influxdb_error_reason=reason,
            influxdb_last_error=self._clean(message),
            influxdb_next_attempt_at=None,
            influxdb_create_sent_to=self.create_sent_to,
        )

    def _clean(self, message: str) -> str:
        return store.clean_error(message, self._secrets())

    def _finish(
        self,
        outcome: AttemptOutcome,
        reason: Reason | None,
        now: datetime,
        retry_at: datetime | None = None,
        **values: Any,
    ) -> None:
        # A deletion asked for meanwhile wins: the outcome goes to the attempt log only, and
        # the row learns only that this run ended (its deletion need not wait for this one).
        started = tenants.c.influxdb_attempt_started_at  # this attempt's: an earlier one's back
        put_back = case((started == self._started, self._earlier_start), else_=started)
        ended: dict[str, Any] = {"influxdb_attempt_started_at": put_back}
        settle = store.update_statement(self.tenant_id, influxdb_updated_at=now, **ended, **values)
        with autocommit(self._conn):  # one statement: the outcome and its log row, together
            settled = log_attempt(
                self._conn,
                self.tenant_id,
                self.number,
                self._started,
                now,
                outcome,
                reason,
                retry_at,
                node=self.node,
                task_id=self._task_id,
                settle=settle,
            )
            if not settled:  # (the one guard: a deletion) still, this run's attempt ended
                store.update(self._conn, self.tenant_id, deleting=True, **ended)
        self._conn.commit()
