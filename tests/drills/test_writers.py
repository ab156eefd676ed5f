"""The writers drill: telemetry writers that find each tenant's server with the location client,
on real processes, while tenants are created, deleted and created again and the location API
restarts. Every point lands on its tenant's home server, no stray is made, and no deleted
incarnation's database comes back.

Three stand-in servers (400 databases each, so that 1,000 tenants fit), a worker and a beat,
the operator and location API as a process of its own, and 4 writer processes running
``examples/ingest_writer.py`` - the README's example, so the example is what is tested.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from harness import processes
from tests.conftest import (
    INFLUX_TOKEN,
    LOCATIONS_TOKEN,
    OPERATOR_TOKEN,
    ROOT,
    Pool,
    cli,
    free_port,
    start_beat,
    stop_process,
    wait_for,
)

pytestmark = pytest.mark.drill

TENANTS = 1000
DELETED = 50
RECREATED = 20
WRITERS = 4
STALENESS = "10"  # the default LOCATIONS_MAX_STALENESS_SECONDS: longer than an API restart
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


class Api:
    """The API as a process on a port of its own, restartable on the same port."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.port, self.env, self.log_dir, self.starts = free_port(), env, log_dir, 0
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = self.start()

    def start(self) -> subprocess.Popen[bytes]:
        self.starts += 1
        log = self.log_dir / f"api-{self.starts}.log"
        return processes.start_api(log, self.port, {**os.environ, **self.env})

    def restart(self) -> None:
        stop_process(self.process)
        self.process = self.start()

    def stop(self) -> None:
        stop_process(self.process)


def send(method: str, url: str, ok: set[int]) -> None:
    """One operator request, tried again while the API is away (restarting)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            answer = requests.request(method, url, headers=OPERATOR, json=None, timeout=10)
            if answer.status_code in ok:
                return
            raise AssertionError(f"{method} {url}: {answer.status_code} {answer.text}")
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def create(api: Api, tenant_id: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            answer = requests.post(
                f"{api.url}/operator/tenants",
                headers=OPERATOR,
                json={"tenant_id": tenant_id, "name": "Drill"},
                timeout=10,
            )
            assert answer.status_code in (201, 409), answer.text
            return
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def states(db: Any, ids: list[str]) -> Counter[str]:
    rows = db.execute(
        "SELECT influxdb_state FROM tenants WHERE tenant_id = ANY(%s)", (ids,)
    ).fetchall()
    return Counter(r[0] for r in rows)


def test_writers_with_the_location_client_make_no_stray(
    db, pool: Pool, custom_worker, tmp_path: Path, report
):
    # Given three servers, a worker and a beat, the API, and four writers using the client
    for name in ("n1", "n2", "n3"):
        pool.add(name, limit=400)
    env = {**pool.env(), "LOCATIONS_MAX_STALENESS_SECONDS": STALENESS}
    custom_worker(concurrency=4, **env)
    beat = start_beat(tmp_path / "beat.log", tmp_path / "schedule", env)
    api = Api(tmp_path, env)
    run = uuid.uuid4().hex[:6]
    ids = [f"w{run}-{i:04d}" for i in range(TENANTS)]
    (tmp_path / "tenants").write_text("\n".join(ids))
    (tmp_path / "locations_token").write_text(LOCATIONS_TOKEN)
    (tmp_path / "influxdb_token").write_text(INFLUX_TOKEN)
    stop_file = tmp_path / "stop"
    logs = [(tmp_path / f"writer-{n}.log").open("wb") for n in range(WRITERS)]
    writers = [
        subprocess.Popen(
            [
                sys.executable,
                "examples/ingest_writer.py",
                f"--locations={api.url}",
                f"--locations-token-file={tmp_path / 'locations_token'}",
                f"--influxdb-token-file={tmp_path / 'influxdb_token'}",
                f"--tenants=@{tmp_path / 'tenants'}",
                "--points=10",
                "--trickle=2",
                "--pause=0.2",
                "--refresh=0.5",
                "--seconds=600",
                f"--stop-file={stop_file}",
                f"--writer=w{n}",
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=log,
        )
        for n, log in enumerate(logs)
    ]
    try:
        # When 1,000 tenants are created, the API restarted half way
        with ThreadPoolExecutor(8) as creating:
            list(creating.map(lambda t: create(api, t), ids[: TENANTS // 2]))
            api.restart()
            report("injected: the location API restarted after 500 creates")
            list(creating.map(lambda t: create(api, t), ids[TENANTS // 2 :]))
        wait_for(
            lambda: states(db, ids)["provisioned"] == TENANTS, timeout=180, what="all provisioned"
        )

        # And 50 are deleted (while the writers write to them), then 20 of those ids created again
        deleted = ids[:DELETED]
        with ThreadPoolExecutor(8) as deleting:
            list(
                deleting.map(
                    lambda t: send("DELETE", f"{api.url}/operator/tenants/{t}", {202}), deleted
                )
            )
        wait_for(lambda: sum(states(db, deleted).values()) == 0, timeout=120, what="deleted")
        recreated = deleted[:RECREATED]
        for tenant_id in recreated:
            create(api, tenant_id)
        live = [*recreated, *ids[DELETED:]]
        wait_for(lambda: states(db, live)["provisioned"] == len(live), timeout=120)
        time.sleep(3)  # the writers see the new incarnations ready and write to them
    finally:
        stop_file.write_text("stop")
        outputs = [w.communicate(timeout=60)[0] for w in writers]
        for log in logs:
            log.close()
        api.stop()
        stop_process(beat)
    assert all(w.returncode == 0 for w in writers), [w.returncode for w in writers]
    written = [json.loads(out) for out in outputs]

    # Then every live tenant has exactly one database, on its home server
    urls = {name: server.url for name, server in pool.nodes.items()}
    homes = dict(
        db.execute(
            "SELECT tenant_id, influxdb_node FROM tenants WHERE tenant_id = ANY(%s)", (live,)
        ).fetchall()
    )
    incarnations = dict(
        db.execute(
            "SELECT tenant_id, influxdb_incarnation FROM tenants WHERE tenant_id = ANY(%s)",
            (live,),
        ).fetchall()
    )
    held = {name: set(server.databases()) for name, server in pool.nodes.items()}
    expected = {
        name: {f"telemetry_{t}" for t, home in homes.items() if home == name} for name in pool.nodes
    }
    assert held == expected, {n: sorted(held[n] ^ expected[n])[:5] for n in held}  # no stray
    report(
        f"verified: {len(live)} live tenants, each database on its home only; "
        f"0 strays, 0 orphans, {DELETED - RECREATED} deleted ids not re-created"
    )

    # And every point is in its tenant's home database, written for its incarnation
    points = 0
    for tenant_id in live:
        home, incarnation = homes[tenant_id], incarnations[tenant_id]
        rows = pool.nodes[home].rows(f"telemetry_{tenant_id}", "telemetry")
        sent = Counter()
        for by_writer in written:
            for url, count in by_writer.get(tenant_id, {}).get(incarnation, {}).items():
                sent[url] += count
        assert set(sent) == {urls[home]}, (tenant_id, sent)
        assert {row["incarnation"] for row in rows} == {incarnation}, tenant_id
        assert len(rows) == sent[urls[home]] >= 10 * WRITERS, tenant_id
        points += len(rows)
    report(f"verified: {points} points, every one on its tenant's home server")


def test_a_writer_that_ignores_the_client_makes_strays_and_one_run_reports_each(
    db, pool: Pool, custom_worker, tmp_path: Path, report
):
    # Given 1,000 tenants provisioned over three servers (room for every stray on each)
    for name in ("n1", "n2", "n3"):
        pool.add(name, limit=2 * TENANTS)
    custom_worker(concurrency=4, **pool.env())
    api = Api(tmp_path, pool.env())
    ids = [f"naive{uuid.uuid4().hex[:6]}-{i:04d}" for i in range(TENANTS)]
    try:
        with ThreadPoolExecutor(8) as creating:
            list(creating.map(lambda t: create(api, t), ids))
        wait_for(
            lambda: states(db, ids)["provisioned"] == TENANTS, timeout=180, what="all provisioned"
        )
    finally:
        api.stop()
    homes = dict(
        db.execute(
            "SELECT tenant_id, influxdb_node FROM tenants WHERE tenant_id = ANY(%s)", (ids,)
        ).fetchall()
    )

    # When a writer that knows one INFLUXDB_URL writes every tenant's points to the first server
    first = pool.nodes["n1"]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {INFLUX_TOKEN}"
    for tenant_id in ids:
        answer = session.post(
            f"{first.url}/api/v3/write_lp",
            params={"db": f"telemetry_{tenant_id}"},
            data="telemetry,writer=naive value=1i",
            timeout=10,
        )
        assert answer.status_code == 204, answer.text
    misrouted = {f"telemetry_{t}" for t, home in homes.items() if home != "n1"}
    assert misrouted, "placement put every tenant on n1: nothing to find"

    # Then the next reconcile run reports each stray, on n1, with its tenant's home
    summary = cli(pool, "reconcile")
    assert summary["strays"] == len(misrouted), summary
    strays = cli(pool, "strays")
    assert {(s["node"], s["database"], s["kind"]) for s in strays} == {
        ("n1", database, "stray") for database in misrouted
    }
    assert all(s["home_node"] == homes[s["tenant_id"]] for s in strays)
    report(
        f"injected: {TENANTS} tenants' points written to n1 by a writer without the client; "
        f"verified: the next reconcile run reported all {len(misrouted)} strays"
    )
