"""What a provisioning or deprovisioning run is given and what it returns, and the two rules
every run obeys before it touches InfluxDB:

- **One run per tenant at a time**: a session-level Postgres advisory lock per tenant
  (:func:`tenant_lock`); Postgres frees it if the process dies or its connection is cut.
- **One retry chain per tenant**: a scheduled retry is owned by the message that will carry it
  (``tenants.influxdb_retry_chain``, "<task id>:<retries>"). Any other message for the tenant
  is absorbed while that retry is scheduled (:func:`absorbed`); an operator retry or the
  reconciler may *replace* the chain (:func:`new_chain`), never add a second one.

Before and between its attempts, a run writes only if the row still holds the chain, node and
adoption mode it read (:meth:`TenantRun.as_read`), so an operator's adoption is never undone.
"""

from __future__ import annotations

import hashlib
import logging
import random
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection
from sqlalchemy.engine import Row

from worker import store
from worker.clock import Clock
from worker.db import advisory_lock, autocommit, holds_lock
from worker.states import Adoption, ProvisioningState, Reason, RunResult

if TYPE_CHECKING:  # only for annotations: nodes and settings need nothing from here
    from worker.nodes import NodePool
    from worker.settings import Settings

_LOCK_NAMESPACE = b"tenant-provisioner:influxdb:"
logger = logging.getLogger(__name__)


class NotStarted(Exception):
    """Since the run read the row, the tenant went to ``deprovisioning``, its retry chain went
    to another message or an operator adopted a database: the attempt is not this run's."""


@dataclass(frozen=True)
class Delivery:
    """The message a run serves: its chain id, and the id its own retry will carry."""

    message: str
    retry: str

    @property
    def task_id(self) -> str:
        """The Celery task id of the message (what Flower shows)."""
        return self.message.rsplit(":", 1)[0]

    @classmethod
    def of(cls, task_id: str, retries: int) -> Delivery:
        """The delivery of Celery message ``task_id`` on its ``retries``-th retry."""
        return cls(f"{task_id}:{retries}", f"{task_id}:{retries + 1}")

    @classmethod
    def fresh(cls) -> Delivery:
        """A delivery no chain knows (an in-process run: the CLI, a test)."""
        return cls.of(new_task_id(), 0)


def new_task_id() -> str:
    """A Celery task id for a message we publish ourselves."""
    return str(uuid.uuid4())


def new_chain(task_id: str) -> str:
    """The chain id that a fresh message ``task_id`` carries (it owns the schedule)."""
    return f"{task_id}:0"


def absorbed(row: Row[Any], delivery: Delivery) -> bool:
    """True when another message owns the tenant's scheduled retry: this one does nothing.

    The owner is the chain's message or a later retry of it: one sent again because the
    tenant's lock was busy or Postgres was lost, which counts a retry the chain did not. An
    earlier retry (a duplicate delivery) or another message is not."""
    chain = row.influxdb_retry_chain
    if chain is None or chain == delivery.message:
        return False
    owner, _, number = chain.rpartition(":")
    mine, _, retries = delivery.message.rpartition(":")
    later = number.isdigit() and retries.isdigit() and int(retries) > int(number)
    return not (owner == mine and later)


def busy(
    conn: Connection, tenant_id: str, delivery: Delivery, wait: float, clock: Clock | None
) -> Outcome:
    """Another run holds the tenant, and leaves it in a state the reconciler reads. The message
    that owns its scheduled retry hands it to itself sent again in ``wait`` s (a later retry:
    :func:`absorbed`), if nothing moved since: a copy of a run's own message (delivered twice)
    so stops that run before its attempt, never adds a message. Any other gives up."""
    row = store.load(conn, tenant_id)
    owner = row is not None and row.influxdb_retry_chain is not None and not absorbed(row, delivery)
    if owner and row is not None:
        with autocommit(conn):
            owner = store.take_over(conn, row, delivery.retry, clock() if clock else row.read_at)
    logger.info("another run holds the tenant; %s", "back later" if owner else "nothing to do")
    return Outcome(RunResult.BUSY, tenant_id, retry_in=wait if owner else None)


def runnable(row: Row[Any] | None, tenant_id: str, delivery: Delivery) -> Row[Any] | Outcome:
    """The row, if this provisioning message may run the tenant as it stands; if not, why."""
    if row is None:
        logger.warning("tenant does not exist; nothing to do", extra={"tenant_id": tenant_id})
        return Outcome(RunResult.NOT_FOUND, tenant_id)
    if row.influxdb_state in (ProvisioningState.FAILED, ProvisioningState.DEPROVISIONING):
        # A failed tenant waits for an operator retry or the reconciler's resume; one
        # being deleted belongs to the deprovisioning task.
        return Outcome(RunResult.SKIPPED, tenant_id, reason=Reason.parse(row.influxdb_error_reason))
    if absorbed(row, delivery):
        logger.info("a retry is already scheduled by another message; absorbed")
        return Outcome(RunResult.ABSORBED, tenant_id)
    return row


@dataclass(frozen=True)
class Outcome:
    """What one run did; ``retry_in`` is set when the caller should run it again later."""

    result: RunResult
    tenant_id: str
    attempt: int | None = None
    reason: Reason | None = None
    retry_in: float | None = None
    # Tenants that waited for capacity and go back to provisioning: the caller queues them.
    unwaited: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-able (the task's return value, as Flower shows it)."""
        return {
            "result": self.result.value,
            "tenant_id": self.tenant_id,
            "attempt": self.attempt,
            "reason": None if self.reason is None else self.reason.value,
            "retry_in": self.retry_in,
        }


def next_backoff(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**(attempt-1))].

    Full jitter spreads the retries of many tenants that failed together (an outage), so they
    do not return in one thundering herd.
    """
    ceiling = min(cap, base * 2 ** max(attempt - 1, 0))
    return (rng or random).uniform(0, ceiling)


def advisory_lock_key(tenant_id: str) -> int:
    """A signed 64-bit key for ``pg_try_advisory_lock``; collisions are 1 in 2**64."""
    digest = hashlib.blake2b(_LOCK_NAMESPACE + tenant_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class TenantRun:
    """What one run of one tenant works with, under the tenant's lock: its connection, its
    row as read, the node pool, the settings, the message it serves, the clock and the
    random source (both injectable, for exact tests)."""

    def __init__(
        self,
        conn: Connection,
        row: Row[Any],
        pool: NodePool,
        settings: Settings,
        delivery: Delivery,
        clock: Callable[[], datetime],
        rng: random.Random | None,
    ) -> None:
        self.conn, self.row, self.pool, self.settings = conn, row, pool, settings
        self.delivery, self.clock, self.rng = delivery, clock, rng
        self.tenant_id: str = row.tenant_id
        self.database = settings.database_name(self.tenant_id)
        self.context = {"tenant_id": self.tenant_id}
        self.adoption = Adoption(row.influxdb_adopt) if row.influxdb_adopt else None
        self.attempts: int = row.influxdb_attempts  # of this episode, so far
        self.create_sent_to: str | None = row.influxdb_create_sent_to
        self.chain: str | None = row.influxdb_retry_chain  # as read: an attempt start checks it
        self.node_name: str | None = row.influxdb_node  # as read, then as this run wrote it

    def as_read(self) -> dict[str, Any]:
        """The guard of a run's write before its attempt ends: the chain, node and adoption as
        this run last read or wrote them. An operator's retry or adoption since voids it."""
        return {
            "influxdb_retry_chain": self.chain,
            "influxdb_node": self.node_name,
            "influxdb_adopt": self.adoption,
        }

    def secrets(self) -> tuple[str, ...]:
        """Every secret to keep out of what this run stores or logs."""
        return self.settings.secrets() + self.pool.secrets()

    def _write(self, **values: Any) -> None:
        """Write ``values`` if the row is still as this run read it, else raise NotStarted."""
        self._commit_or_stop(
            store.update(self.conn, self.tenant_id, expect=self.as_read(), **values)
        )

    def _settle(
        self, state: ProvisioningState, reason: Reason, message: str, **values: Any
    ) -> None:
        """End the run without an attempt (``store.settle``), guarded as :meth:`_write`."""
        now, expect = self.clock(), self.as_read()
        settled = store.settle(
            self.conn, self.tenant_id, state, reason, message, now, expect=expect, **values
        )
        self._commit_or_stop(settled)

    def _commit_or_stop(self, written: bool) -> None:
        self.conn.commit()
        if not written:
            raise NotStarted(self.tenant_id)


@contextmanager
def tenant_lock(conn: Connection, tenant_id: str) -> Iterator[bool]:
    """Hold the tenant's lock for the block; yields False when another run holds it."""
    with advisory_lock(conn, advisory_lock_key(tenant_id)) as acquired:
        yield acquired


def holds_tenant_lock(conn: Connection, tenant_id: str) -> bool:
    """Whether this run's session still holds the tenant's lock (``tenant_lock``'s): raises if
    the session was cut, False on one made again since (``worker.db.holds_lock``)."""
    return holds_lock(conn, advisory_lock_key(tenant_id))
