"""The webhooks drill (issue 21's acceptance): real worker, webhooks worker and beat processes,
a real HTTP receiver that verifies every signature with the Standard Webhooks library.

200 tenants are created, 20 fail (InfluxDB rejects the token) and those 20 are retried while
the receiver is down for 60 s; the provisioning worker is SIGKILLed once, the webhooks worker
twice (during the outage, and delivering the backlog). Back, the receiver answers some
requests with 500s, redirects and too late, while 20 tenants are deleted. Every transition
must arrive, in per-tenant order, each signature verifying; duplicates only ones the receiver
can drop by ``webhook-id``; each tenant's last event its current state; and provisioning not
slowed by the receiver.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import statistics
import subprocess
import time
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from harness import processes
from tests.conftest import (
    INFLUX_TOKEN,
    new_tenant_id,
    start_beat,
    stop_process,
    wait_for,
)
from tests.webhook_receiver import Answer, Received, Receiver
from worker.queues import WEBHOOKS_QUEUE
from worker.webhook_dispatch import Policy

pytestmark = pytest.mark.drill

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
OUTAGE = 60.0
PATIENT = {"PROVISION_MAX_ATTEMPTS": "100", "INFLUXDB_DATABASE_LIMIT": "1000"}
HOOKS = {
    "WEBHOOKS_POLL_SECONDS": "1",
    "WEBHOOKS_BACKOFF_CAP_SECONDS": "3",
    "WEBHOOKS_READ_TIMEOUT_SECONDS": "0.5",
}


class Hooks:
    """The webhooks worker process (``-Q webhooks``), killable and restartable."""

    def __init__(self, log: Path, env: dict[str, str]) -> None:
        self.log, self.env, self.kills = log, env, 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = processes.start_worker(
            self.log,
            concurrency=2,
            hostname=f"hooks{self.kills}@%h",
            env=self.env,
            queues=WEBHOOKS_QUEUE,
        )

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.kills += 1
        self.start()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


def states(db: psycopg.Connection[Any], ids: list[str]) -> Counter[str]:
    rows = db.execute(
        "SELECT influxdb_state FROM tenants WHERE tenant_id = ANY(%s)", (ids,)
    ).fetchall()
    return Counter(state for (state,) in rows)


def flaky(rng: random.Random) -> Any:
    """After the outage: 5% 500, 3% redirects, 2% answers after the read timeout."""

    def answer(_: Received) -> Answer:
        draw = rng.random()
        if draw < 0.05:
            return Answer(500)
        if draw < 0.08:
            return Answer(307, headers=(("location", "http://127.0.0.1:9/elsewhere"),))
        if draw < 0.10:
            return Answer(204, delay=0.8)
        return Answer(204)

    return answer


def test_webhooks_survive_a_receiver_outage_and_killed_workers(
    api, db, influx, custom_worker, tmp_path, report
):
    started = time.monotonic()
    db.execute("TRUNCATE webhook_endpoints CASCADE")
    influx.set_database_limit(1000)
    receiver = Receiver(SECRET).start()  # verifies signatures and timestamps, as the library does
    hooks_file = tmp_path / "webhooks.json"
    hooks_file.write_text(json.dumps([{"name": "ui", "url": receiver.url, "secret": SECRET}]))
    env = {**os.environ, **HOOKS, "WEBHOOKS_FILE": str(hooks_file)}
    worker = custom_worker(concurrency=4, **PATIENT)
    hooks = Hooks(tmp_path / "hooks.log", env)
    hooks.start()
    beat = start_beat(tmp_path / "beat.log", tmp_path / "schedule", {**HOOKS})
    try:
        # Given the endpoint, seen by the dispatcher (it starts at the log's horizon)
        wait_for(
            lambda: db.execute("SELECT 1 FROM webhook_endpoints WHERE name = 'ui'").fetchone(),
            timeout=30,
            what="the endpoint to be registered",
        )
        # 20 tenants fail: InfluxDB rejects the worker's token
        influx.set_token("not-the-workers-token")
        failing = [new_tenant_id("hookfail") for _ in range(20)]
        create(api, failing)
        wait_for(lambda: states(db, failing)["failed"] == 20, timeout=60, what="20 failed")
        influx.set_token(INFLUX_TOKEN)
        wait_for(receiver.first_arrivals, timeout=30, what="a first delivery")

        # When the receiver goes down for 60 s, while 180 more are created, the 20 retried,
        # and the webhooks worker and the provisioning worker are SIGKILLed
        receiver.down()
        down_at = time.monotonic()
        report(f"injected: receiver down (connections refused) for {OUTAGE:g}s")
        influx.set_latency(0.05)  # so that the provisioning worker dies with calls in flight
        others = [new_tenant_id("hook") for _ in range(180)]
        create(api, others)
        for tenant_id in failing:
            response = api.post(f"/operator/tenants/{tenant_id}/influxdb/retry")
            assert response.status_code == 202, response.text
        wait_for(lambda: states(db, others)["provisioning"] >= 1, timeout=30, what="in flight")
        os.killpg(worker.process.pid, signal.SIGKILL)
        worker.process.wait(timeout=10)
        report("injected: SIGKILL of the provisioning worker with tenants in flight")
        worker = custom_worker(concurrency=4, **PATIENT)
        hooks.kill()
        report("injected: SIGKILL of the webhooks worker (receiver down, retries in flight)")
        everyone = failing + others
        wait_for(
            lambda: states(db, everyone)["provisioned"] == 200,
            timeout=OUTAGE,
            what="all 200 provisioned while the receiver is down",
        )
        provisioned_in = time.monotonic() - down_at
        influx.set_latency(0.0)
        report(f"verified: all 200 provisioned {provisioned_in:.1f}s into the outage")
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - down_at)))

        # And the receiver comes back, answering some 500s, redirects and too late
        receiver.answer_with(flaky(random.Random(2112)))
        receiver.start()
        back_at = time.time()
        report("injected: receiver back: 5% 500, 3% 307, 2% answers after the read timeout")
        deleted = random.Random(21).sample(others, 20)  # while the backlog is delivered
        for tenant_id in deleted:
            assert api.delete(f"/operator/tenants/{tenant_id}").status_code == 202
        time.sleep(2)
        hooks.kill()
        report("injected: SIGKILL of the webhooks worker delivering the backlog")
        wait_for(lambda: states(db, deleted).total() == 0, timeout=60, what="20 deleted")
        wait_for(lambda: delivered_everything(db), timeout=180, interval=0.5, what="all sent")
    finally:
        stop_process(beat)
        hooks.stop()
        receiver.down()

    # Then every event of these tenants arrived, each verified, in tenantseq order
    requests = receiver.snapshot()
    # Every request the sender finished verifies. Only one cut short by a SIGKILL (headers
    # sent, the body not) may not: at most one per sending thread per kill, never taken.
    refused = [r for r in requests if not r.verified]
    assert all(r.why == "short body" for r in refused), Counter(r.why for r in refused)
    assert len(refused) <= hooks.kills * Policy.threads, f"{len(refused)} cut short"
    expected = events_of(db, failing + others)
    firsts = receiver.first_arrivals()
    got = {r.webhook_id: r for r in firsts}
    assert set(got) == set(expected), (
        f"missing {len(set(expected) - set(got))}, unexpected {len(set(got) - set(expected))}"
    )
    by_tenant: dict[str, list[int]] = defaultdict(list)
    for request in firsts:
        by_tenant[request.event["subject"]].append(request.event["tenantseq"])
    for tenant_id, seqs in by_tenant.items():
        assert seqs == list(range(1, len(seqs) + 1)), f"{tenant_id} out of order: {seqs}"
    # Repeats only of an id already sent, with the very same body: after a failure answer (a
    # retry), or of one the receiver took (an answer the sender never saw: a duplicate). A
    # request cut short holds part of its body: it is bounded above, not compared.
    bodies: dict[str, bytes] = {}
    taken: set[str] = set()
    duplicates = 0
    for request in (r for r in requests if r.why != "short body"):
        assert request.body == bodies.setdefault(request.webhook_id, request.body)
        if request.answered // 100 == 2:
            duplicates += request.webhook_id in taken
            taken.add(request.webhook_id)
    # And the event table and the tenants table agree: each tenant's last event is its state
    for tenant_id in failing + others:
        last = last_state(db, tenant_id)
        row = db.execute(
            "SELECT influxdb_state FROM tenants WHERE tenant_id = %s", (tenant_id,)
        ).fetchone()
        assert last == (row[0] if row else "deprovisioned"), tenant_id
        delivered_last = [r.event for r in firsts if r.event["subject"] == tenant_id][-1]
        assert delivered_last["id"] == last_event_id(db, tenant_id)

    lags = [r.at - parse_time(r.event["time"]) for r in firsts]
    after = [lag for r, lag in zip(firsts, lags, strict=True) if r.at - lag > back_at]
    took = time.monotonic() - started
    report(
        f"verified: {len(firsts)} events delivered ({len(requests)} requests: retries after "
        f"failure answers, {duplicates} duplicates of taken ones, dropped by webhook-id, and "
        f"{len(refused)} cut short by a kill); "
        "every finished request's signature valid, every tenant in order; "
        f"kills: webhooks worker x{hooks.kills}, provisioning worker x1; drill {took:.0f}s"
    )
    report(
        f"lag: max {max(lags):.1f}s (the outage), median {statistics.median(lags):.2f}s; "
        f"events after the receiver came back: {len(after)}, max lag "
        f"{max(after, default=0):.2f}s"
    )


def create(api: Any, tenant_ids: list[str]) -> None:
    for tenant_id in tenant_ids:
        response = api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "hooks"})
        assert response.status_code == 201, response.text


def delivered_everything(db: psycopg.Connection[Any]) -> bool:
    """Nothing pending, and the endpoint's fan-out has passed the log's last event."""
    (pending,) = db.execute("SELECT count(*) FROM webhook_deliveries").fetchone()
    (behind,) = db.execute(
        "SELECT count(*) FROM tenant_events e, webhook_endpoints w "
        "WHERE (e.xid, e.id) > (w.cursor_xid, w.cursor_id)"
    ).fetchone()
    return pending == 0 and behind == 0


def events_of(db: psycopg.Connection[Any], tenant_ids: list[str]) -> set[str]:
    rows = db.execute(
        "SELECT xid::text || '-' || id FROM tenant_events WHERE tenant_id = ANY(%s)",
        (tenant_ids,),
    ).fetchall()
    return {event_id for (event_id,) in rows}


def last_state(db: psycopg.Connection[Any], tenant_id: str) -> str:
    (state,) = db.execute(
        "SELECT CASE WHEN type = 'tenant.deprovisioned' THEN 'deprovisioned' "
        "ELSE data->>'state' END FROM tenant_events WHERE tenant_id = %s "
        "AND (data ? 'state' OR type = 'tenant.deprovisioned') ORDER BY seq DESC LIMIT 1",
        (tenant_id,),
    ).fetchone()
    return str(state)


def last_event_id(db: psycopg.Connection[Any], tenant_id: str) -> str:
    (event_id,) = db.execute(
        "SELECT xid::text || '-' || id FROM tenant_events WHERE tenant_id = %s "
        "ORDER BY seq DESC LIMIT 1",
        (tenant_id,),
    ).fetchone()
    return str(event_id)


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
