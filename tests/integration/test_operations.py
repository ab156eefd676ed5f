"""What operators use: Flower with auth, the CLI with exit codes, /metrics, and the log format."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import threading
import time
from typing import Any

import requests

from harness import processes
from tests.conftest import (
    INFLUX_TOKEN,
    OPERATOR_TOKEN,
    ROOT,
    free_port,
    new_tenant_id,
    start_beat,
    stop_process,
    wait_for,
    wait_for_state,
)
from tests.webhook_receiver import Receiver
from worker.queues import PROVISION_TASK, WEBHOOKS_QUEUE, WEBHOOKS_TASK

FLOWER_AUTH = ("ops", "flower-pass-" + OPERATOR_TOKEN[-6:])


class EventBus:
    """Every Celery task event published meanwhile, heard as Flower hears them."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._receiver: Any = None
        self._ready = threading.Event()

    def start(self) -> EventBus:
        self._thread.start()
        assert self._ready.wait(10), "the event receiver did not start"
        return self

    def _listen(self) -> None:
        from worker import app  # noqa: PLC0415

        with app.connection() as connection:
            self._receiver = app.events.Receiver(connection, handlers={"*": self.events.append})
            self._ready.set()
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def stop(self) -> None:
        time.sleep(0.5)  # the last events in flight
        self._receiver.should_stop = True
        self._thread.join(10)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_flower_refuses_to_start_without_authentication():
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
    result = subprocess.run(
        [sys.executable, "-m", "worker", "flower", "--port=1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "FLOWER_BASIC_AUTH" in result.stderr


def test_flower_shows_provisioning_tasks_to_authenticated_operators_only(
    api, db, influx, worker_process, tmp_path
):
    # Given a real Flower process with basic auth
    port = free_port()
    log_path = tmp_path / "flower.log"
    with log_path.open("wb") as log:
        flower = subprocess.Popen(
            # As docs/operating.md writes it: an option and its value as two arguments.
            [
                sys.executable,
                "-m",
                "worker",
                "flower",
                "--address",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=ROOT,
            env={**os.environ, "FLOWER_BASIC_AUTH": ":".join(FLOWER_AUTH)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: processes.http_ok(f"{base}/healthcheck"), what="Flower to listen")
        # Events are pub/sub without history: wait until Flower hears the worker's heartbeats.
        wait_for(
            lambda: requests.get(f"{base}/api/workers", auth=FLOWER_AUTH, timeout=5).json(),
            what="Flower to see the worker",
        )

        # When a tenant is provisioned
        tenant_id = new_tenant_id("flower")
        api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "Seen"})
        wait_for_state(db, tenant_id, "provisioned")

        # Then an authenticated operator sees the task, named, with the tenant id as argument
        def provisioning_task() -> dict | None:
            tasks = requests.get(f"{base}/api/tasks", auth=FLOWER_AUTH, timeout=5).json()
            return next((t for t in tasks.values() if tenant_id in (t.get("args") or "")), None)

        task = wait_for(provisioning_task, what="the task in Flower")
        assert task["name"] == "worker.tasks.provision_tenant_influxdb"
        assert task["args"] == f"('{tenant_id}',)"
        assert task["state"] == "SUCCESS"

        # And anyone else gets 401, on the API and the dashboard alike
        assert requests.get(f"{base}/api/tasks", timeout=5).status_code == 401
        assert (
            requests.get(f"{base}/api/tasks", auth=("ops", "wrong"), timeout=5).status_code == 401
        )
        assert requests.get(f"{base}/", timeout=5).status_code == 401

        # And Flower's own /metrics works for the operator
        metrics = requests.get(f"{base}/metrics", auth=FLOWER_AUTH, timeout=5)
        assert metrics.status_code == 200
        assert "flower_events_total" in metrics.text

        # And no token is shown anywhere
        everything = requests.get(f"{base}/api/tasks", auth=FLOWER_AUTH, timeout=5).text
        assert INFLUX_TOKEN not in everything
        assert OPERATOR_TOKEN not in everything
    finally:
        stop_process(flower)
    assert FLOWER_AUTH[1] not in log_path.read_text()


def test_cli_status_list_and_exit_codes(api, db, influx, worker_process):
    tenant_id = new_tenant_id("cli")
    api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "Cli"})
    wait_for_state(db, tenant_id, "provisioned")

    status = cli("--json", "status", tenant_id)
    assert status.returncode == 0, status.stderr
    body = json.loads(status.stdout)
    assert body["state"] == "provisioned"
    assert body["live"]["exists"] is True

    human = cli("status", tenant_id)
    assert re.search(r"^state\s+provisioned$", human.stdout, re.MULTILINE)
    assert re.search(r"^live\.exists\s+True$", human.stdout, re.MULTILINE)

    listed = cli("list", "--state", "provisioned")
    assert listed.returncode == 0
    assert tenant_id in listed.stdout
    assert listed.stdout.splitlines()[0].split()[:3] == ["TENANT_ID", "NAME", "STATE"]

    assert cli("status", "nobody-here").returncode == 3
    assert cli("status", "not valid!").returncode == 2
    bad_state = cli("list", "--state", "sleeping")
    assert bad_state.returncode == 2
    assert "must be one of" in bad_state.stderr
    bad_limit = cli("list", "--limit", "-1")  # was exit 5: "the database cannot be used"
    assert (bad_limit.returncode, "limit must be" in bad_limit.stderr) == (2, True)


def test_cli_retry_by_state_requeues_failed_tenants(api, db, influx, worker_process):
    # Given two tenants failed because InfluxDB rejected our token
    influx.set_token("rotated-elsewhere")
    tenant_ids = [new_tenant_id("retry") for _ in range(2)]
    for tenant_id in tenant_ids:
        api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "r"})
    for tenant_id in tenant_ids:
        wait_for_state(db, tenant_id, "failed")

    # When the token is fixed and the operator retries every failed tenant
    influx.set_token(INFLUX_TOKEN)
    result = cli("--json", "retry", "--state", "failed")

    # Then both are queued again and end provisioned
    assert result.returncode == 0, result.stderr
    assert sorted(json.loads(result.stdout)["queued"]) == sorted(tenant_ids)
    for tenant_id in tenant_ids:
        wait_for_state(db, tenant_id, "provisioned")


def test_check_influxdb_reports_databases_used_against_the_limit(influx):
    influx.create_database("telemetry_one")
    ok = cli("--json", "check-influxdb")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (node,) = json.loads(ok.stdout)["nodes"]
    assert node["node"] == "default"
    assert node["reachable"] is True
    assert node["token_accepted"] is True
    assert node["databases_used"] == 1
    assert node["database_limit"] == 5
    assert node["free_slots"] == 4

    for i in range(4):
        influx.create_database(f"other_{i}")
    full = cli("check-influxdb")
    assert full.returncode == 1
    assert re.search(r"^default\s+True\s+True\s+5\s+5\s+-\s+0\s", full.stdout, re.MULTILINE)
    assert "FULL" in full.stderr

    influx.set_token("not-ours")
    (rejected,) = json.loads(cli("--json", "check-influxdb").stdout)["nodes"]
    assert rejected["reachable"] is True
    assert rejected["token_accepted"] is False
    assert INFLUX_TOKEN not in json.dumps(rejected)

    influx.set_outage(True)
    down = cli("--json", "check-influxdb")
    assert down.returncode == 1
    (silent,) = json.loads(down.stdout)["nodes"]
    assert silent["error"].startswith("unreachable")
    assert (silent["reachable"], silent["token_accepted"]) == (False, None)  # never asked
    assert re.search(r"^default\s+False\s+-\s", cli("check-influxdb").stdout, re.MULTILINE)


def test_check_influxdb_counts_free_slots_by_the_lower_limit_a_server_named(db, influx):
    # Given a server whose last 422 named a limit of 3, below the nodes file's 5, holding 1
    influx.create_database("telemetry_one")
    db.execute(
        "INSERT INTO influxdb_nodes (name, full_since, refused_limit) VALUES ('default', now(), 3)"
    )

    # When an operator checks the servers
    named = cli("--json", "check-influxdb")

    # Then its free slots are what the named limit leaves, and that limit is shown
    (node,) = json.loads(named.stdout)["nodes"]
    assert (node["database_limit"], node["refused_limit"], node["free_slots"]) == (5, 3, 2)
    table = cli("check-influxdb").stdout
    assert re.search(r"^default\s+True\s+True\s+1\s+5\s+3\s+2\s", table, re.MULTILINE), table

    # When the server holds more than it named (its limit was raised since): the file's counts
    for i in range(3):
        influx.create_database(f"other_{i}")
    (raised,) = json.loads(cli("--json", "check-influxdb").stdout)["nodes"]
    assert (raised["databases_used"], raised["refused_limit"], raised["free_slots"]) == (4, None, 1)

    # And without Postgres the servers are still checked, by the file's limit, and it says so
    offline = cli(
        "--json",
        "check-influxdb",
        env={"DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/x"},
    )
    assert offline.returncode == 0, offline.stderr
    (unknown,) = json.loads(offline.stdout)["nodes"]
    assert (unknown["refused_limit"], unknown["free_slots"]) == (None, 1)
    assert "free slots are counted by the nodes file" in offline.stderr


def test_cli_never_prints_a_password_from_a_node_url(db, influx, tmp_path):
    # Given a nodes file whose URLs carry credentials (a proxy with basic auth in front)
    password = "url-pass-" + INFLUX_TOKEN[-8:]
    host = influx.url.removeprefix("http://")
    nodes = tmp_path / "nodes.json"
    nodes.write_text(
        json.dumps(
            [{"name": "proxied", "url": f"http://ops:{password}@{host}", "token": INFLUX_TOKEN}]
        )
    )
    env = {"INFLUXDB_NODES_FILE": str(nodes)}

    # When an operator lists the pool and checks the servers, as text and as JSON
    commands = (["nodes"], ["--json", "nodes"], ["check-influxdb"], ["--json", "check-influxdb"])
    outputs = [cli(*args, env=env) for args in commands]

    # Then the servers are shown, and no password is
    for result in outputs:
        assert "proxied" in result.stdout, result.stderr
        assert password not in result.stdout + result.stderr
    urls = {n["node"]: n["url"] for n in json.loads(outputs[1].stdout)}
    assert urls["proxied"] == f"http://ops:[REDACTED]@{host}"

    # And a URL with a token in its query (which never worked: the API's paths are appended)
    # is refused, naming the entry, never the value
    queried = tmp_path / "queried.json"
    queried.write_text(json.dumps([{"name": "q", "url": f"http://{host}/?api_token={password}"}]))
    refused = cli("nodes", env={"INFLUXDB_NODES_FILE": str(queried)})
    assert refused.returncode != 0
    assert "[0].url must not carry a ?query or #fragment" in refused.stderr
    assert password not in refused.stdout + refused.stderr


def test_metrics_count_tenants_by_state_and_attempts_by_reason(api, db, influx, worker_process):
    # Given one provisioned tenant and one refused by a server fuller than we knew (422)
    influx.set_database_limit(1)
    first, second = new_tenant_id("m"), new_tenant_id("m")
    api.post("/operator/tenants", json={"tenant_id": first, "name": "a"})
    wait_for_state(db, first, "provisioned")
    api.post("/operator/tenants", json={"tenant_id": second, "name": "b"})
    wait_for_state(db, second, "waiting_for_capacity")

    # Then /metrics (the operator token serves while METRICS_TOKEN is unset) counts them
    text = api.get("/metrics").text
    assert 'tenant_provisioner_tenants{state="provisioned"} 1.0' in text
    assert 'tenant_provisioner_tenants{state="waiting_for_capacity"} 1.0' in text
    assert 'tenant_provisioner_tenants{state="pending"} 0.0' in text
    assert re.search(r"tenant_provisioner_oldest_unprovisioned_age_seconds 0\.\d+", text)
    assert re.search(
        r'tenant_provisioner_provisioning_attempts_total\{outcome="node_full",'
        r'reason="database_limit"\} [1-9]',
        text,
    )
    # And per node: one tenant on the default node, marked full by its 422
    assert 'tenant_provisioner_node_tenants{node="default"} 1.0' in text
    assert 'tenant_provisioner_node_full{node="default"} 1.0' in text
    assert 'tenant_provisioner_node_database_limit{node="default"} 5.0' in text
    # its free slots as placement counts them: none while it is marked full
    assert 'tenant_provisioner_node_free_slots{node="default"} 0.0' in text
    assert 'tenant_provisioner_node_other_databases{node="default"} 0.0' in text


def test_worker_log_lines_carry_tenant_and_task_ids_and_no_secrets(api, db, influx, worker_process):
    tenant_id = new_tenant_id("log")
    api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "Logged"})
    wait_for_state(db, tenant_id, "provisioned")
    log = worker_process.log()
    line = next(ln for ln in log.splitlines() if "provisioned telemetry_" + tenant_id in ln)
    assert f"tenant_id={tenant_id}" in line
    assert re.search(r"task_id=[0-9a-f-]{36}", line)
    assert INFLUX_TOKEN not in log
    assert OPERATOR_TOKEN not in log


def test_the_webhooks_poll_stays_out_of_flower_and_the_log(api, db, worker_process, tmp_path):
    # Given a webhooks worker and a beat polling every 0.3 s, one endpoint configured, and a
    # listener on the Celery event bus that Flower reads
    db.execute("TRUNCATE webhook_endpoints CASCADE")
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    receiver = Receiver(secret).start()
    hooks_file = tmp_path / "webhooks.json"
    hooks_file.write_text(json.dumps([{"name": "quiet", "url": receiver.url, "secret": secret}]))
    env = {**os.environ, "WEBHOOKS_POLL_SECONDS": "0.3", "WEBHOOKS_FILE": str(hooks_file)}
    bus = EventBus().start()
    hooks_log, beat_log = tmp_path / "hooks.log", tmp_path / "beat.log"
    # (beat at DEBUG: its poll lines show, to be counted; at INFO they are left out as well)
    beat_env = {"WEBHOOKS_POLL_SECONDS": "0.3", "LOG_LEVEL": "DEBUG"}
    beat = start_beat(beat_log, tmp_path / "schedule", beat_env)
    time.sleep(1.5)  # polls that expire before a worker takes them: discarded, as after an outage
    hooks = processes.start_worker(
        hooks_log, concurrency=1, hostname="quiet@%h", env=env, queues=WEBHOOKS_QUEUE
    )
    try:
        wait_for(
            lambda: db.execute("SELECT 1 FROM webhook_endpoints WHERE name = 'quiet'").fetchone(),
            timeout=30,
            what="the endpoint to be registered",
        )
        # When a tenant is provisioned and its events are delivered by the poll
        tenant_id = new_tenant_id("quiet")
        api.post("/operator/tenants", json={"tenant_id": tenant_id, "name": "Quiet"})
        wait_for_state(db, tenant_id, "provisioned")
        wait_for(
            lambda: any(
                r.event["type"].endswith(".tenant.provisioned") for r in receiver.snapshot()
            ),
            timeout=30,
            what="the provisioned event delivered",
        )
        time.sleep(1.0)  # a few idle polls more
    finally:
        stop_process(beat)
        stop_process(hooks)
        bus.stop()
        receiver.down()

    # Then beat sent polls, and the worker ran them: the deliveries say so, in a line of ours
    polls = beat_log.read_text().count("Sending due task dispatch-webhooks")
    assert polls >= 5
    log = hooks_log.read_text()
    assert re.search(r"webhooks: \d+ deliveries made from new events, \d+ delivered", log)
    # And none of those polls reached the log through Celery, nor Flower's event bus
    assert WEBHOOKS_TASK not in log
    named = {event.get("uuid"): event.get("name") for event in bus.events if "name" in event}
    assert WEBHOOKS_TASK not in named.values()
    assert PROVISION_TASK in named.values()  # the bus heard the provisioning task's events
    succeeded = {e["uuid"] for e in bus.events if e["type"] == "task-succeeded"}
    assert succeeded <= set(named)  # no success event of a task the bus never heard named
