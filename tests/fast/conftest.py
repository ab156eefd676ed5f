"""The fast layer: the logic in-process, with an injected clock and random source.

No Celery, no Redis, no worker process: provisioning, deprovisioning and the reconciler are
called as functions on a real Postgres (the session's migrated database) against in-process
stand-in servers over loopback HTTP. A whole test takes milliseconds; the layer runs in
seconds, for the edit-test loop (``bash scripts/test tests/fast``).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from influxdb3_standin import StandIn
from tests.conftest import INFLUX_TOKEN, STOP_POLL, tenant_row
from worker import store
from worker.db import get_engine
from worker.deprovisioning import deprovision_tenant
from worker.node_config import NodeConfig
from worker.nodes import NodePool
from worker.provisioning import provision_tenant
from worker.queues import Job
from worker.runs import Delivery, Outcome
from worker.settings import Settings, get_settings


def clock_origin(shift: str | None) -> datetime:
    """Where the injected clock starts: a fixed moment, or ``TEST_CLOCK_SHIFT_DAYS`` days
    from the real now. CI runs this layer again with the origin years away on both sides, so
    a test that compares the injected clock with a time taken elsewhere (Postgres' ``now()``,
    a server default, ``datetime.now()``) fails on the day it is written, not months later."""
    if not shift:
        return datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    try:
        days = float(shift)
    except ValueError:
        raise SystemExit(f"TEST_CLOCK_SHIFT_DAYS={shift!r}: not a number of days") from None
    return (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0)


T0 = clock_origin(os.environ.get("TEST_CLOCK_SHIFT_DAYS"))
SEED = 20261128


class Clock:
    """A clock that moves only when told to."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@dataclass
class World:
    """Stand-in servers in a node pool, the settings that name them, a clock and a seed."""

    servers: dict[str, StandIn] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)
    unlisted: set[str] = field(default_factory=set)
    # A node's address answered by something else (a test's scripted server on its port)
    urls: dict[str, str] = field(default_factory=dict)
    clock: Clock = field(default_factory=Clock)
    # No wait before a deletion deletes (a test of that wait sets it): the clock moves only
    # when told, so every deletion would otherwise wait for ever.
    overrides: dict[str, Any] = field(
        default_factory=lambda: {"locations_max_staleness_seconds": 0.0}
    )

    def add(self, name: str, limit: int = 5, skew: float = 0.0) -> StandIn:
        # The server's clock is the test's, ``skew`` seconds ahead: it stamps the names of
        # soft-deleted databases, and every answer's Date.
        def clock() -> datetime:
            return self.clock() + timedelta(seconds=skew)

        server = StandIn(
            token=INFLUX_TOKEN, database_limit=limit, poll_interval=STOP_POLL, clock=clock
        ).start()
        self.servers[name] = server
        self.limits[name] = limit
        return server

    @property
    def settings(self) -> Settings:
        nodes = tuple(
            NodeConfig(name, self.urls.get(name, server.url), INFLUX_TOKEN, self.limits[name])
            for name, server in self.servers.items()
            if name not in self.unlisted
        )
        return get_settings().model_copy(update={"influxdb_nodes": nodes, **self.overrides})

    def pool(self) -> NodePool:
        return NodePool(self.settings)

    def provision(
        self, tenant_id: str, delivery: Delivery | None = None, seed: int = SEED
    ) -> Outcome:
        return self._run(provision_tenant, tenant_id, delivery, seed)

    def deprovision(self, tenant_id: str, delivery: Delivery | None = None) -> Outcome:
        return self._run(deprovision_tenant, tenant_id, delivery, SEED)

    def _run(
        self, service: Callable[..., Outcome], tenant_id: str, delivery: Delivery | None, seed: int
    ) -> Outcome:
        with get_engine().connect() as conn:
            return service(
                conn,
                tenant_id,
                self.pool(),
                self.settings,
                delivery=delivery,
                clock=self.clock,
                rng=random.Random(seed),
            )

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()


@pytest.fixture
def world(db: Any) -> Iterator[World]:
    """An empty tenants table and no servers yet; add them with ``world.add(name)``."""
    created = World()
    yield created
    created.stop()


class Published(list[tuple[str, Job, str | None]]):
    """What a reconcile run published: the broker's side of the boundary, recorded."""

    def __call__(self, tenant_id: str, job: Job, task_id: str | None = None) -> bool:
        self.append((tenant_id, job, task_id))
        return True


def blocked_by(db: Any, pid: int) -> bool:
    """Some session waits for a lock that session ``pid`` holds."""
    row = db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", (pid,)
    ).fetchone()
    return bool(row and row[0])


def insert(db: Any, tenant_id: str, *, at: datetime = T0, **columns: Any) -> dict[str, Any]:
    """A tenants row with ``columns`` (influxdb_ prefix implied), as a test's Given. Its
    ``created_at`` and ``influxdb_updated_at`` are ``at`` (the injected clock's origin unless
    given), never the columns' defaults: those are Postgres' ``now()``, another clock."""
    columns = {"updated_at": at, **columns}
    names = ["tenant_id", "name", "created_at"] + [f"influxdb_{k}" for k in columns]
    values = [tenant_id, "n", at, *columns.values()]
    db.execute(
        f"INSERT INTO tenants ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(values))})",
        values,
    )
    # The location trigger stamps the change with Postgres' clock: this test's is the injected.
    db.execute("UPDATE tenant_locations SET changed_at = %s WHERE tenant_id = %s", (at, tenant_id))
    row = tenant_row(db, tenant_id)
    assert row is not None
    return row


def full_with_one_waiting(db: Any, world: World, waiting: str = "waiting") -> StandIn:
    """Given alpha, one slot, held by acme, and ``waiting`` waiting for room. Returns alpha."""
    alpha = world.add("alpha", limit=1)
    for tenant_id in ("acme", waiting):
        insert(db, tenant_id, at=world.clock.advance(1))
        world.provision(tenant_id)
    return alpha


def slot_reserved(db: Any, world: World, waiting: str = "waiting") -> StandIn:
    """Given alpha, one slot, held by acme, and ``waiting`` waiting for it; acme deleted: the
    slot is reserved for ``waiting``, whose run has not come yet. Returns alpha."""
    alpha = full_with_one_waiting(db, world, waiting)
    with get_engine().begin() as conn:
        assert store.request_deletion(conn, "acme", world.clock())
    assert world.deprovision("acme").unwaited == (waiting,)
    return alpha
