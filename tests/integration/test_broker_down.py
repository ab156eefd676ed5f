"""With the broker down, the operator API still creates tenants at once, and nothing is lost.

"Down" comes in three shapes, each bounded by CELERY_PUBLISH_TIMEOUT (2 s): a refused port
(the server is not running: answered at once, without waiting that long), a server that
accepts the connection and never speaks (hung), and an address that drops the connection
attempt (a firewall, a dead host). The last two are made here, in the test process, without
touching the real servers.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import (
    OPERATOR_TOKEN,
    free_port,
    new_tenant_id,
    start_api,
    stop_process,
    tenant_row,
)

PUBLISH_TIMEOUT = 2.0  # CELERY_PUBLISH_TIMEOUT's default, which the API process keeps
BROKER_PASSWORD = "broker-pw-" + secrets.token_hex(6)  # must appear in no log


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose server accepts connections (the kernel does) and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield int(server.getsockname()[1])


@pytest.fixture
def blackholed_port() -> Iterator[int]:
    """A port that drops connection attempts: its accept queue is full and never drained, so
    the kernel ignores new SYNs, as for a host behind a firewall that drops packets."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = int(server.getsockname()[1])
        fillers = []
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.2)
        with socket.socket() as probe:  # proof that the port really drops attempts now
            probe.settimeout(0.5)
            with pytest.raises(TimeoutError):
                probe.connect(("127.0.0.1", port))
        yield port
        for filler in fillers:
            filler.close()


DEAD_BROKERS = {
    "redis-refused": "redis://:{password}@127.0.0.1:{refused}/0",
    "redis-silent": "redis://:{password}@127.0.0.1:{silent}/0",
    "redis-blackholed": "redis://:{password}@127.0.0.1:{blackholed}/0",
    "rabbitmq-refused": "amqp://tp:{password}@127.0.0.1:{refused}//",
    "rabbitmq-silent": "amqp://tp:{password}@127.0.0.1:{silent}//",
    "rabbitmq-blackholed": "amqp://tp:{password}@127.0.0.1:{blackholed}//",
}


@pytest.fixture(params=list(DEAD_BROKERS))
def dead_broker(request: pytest.FixtureRequest) -> str:
    """A broker URL that does not work, in each of the shapes above."""
    template = DEAD_BROKERS[request.param]
    ports = {"refused": free_port()}
    for shape in ("silent", "blackholed"):
        if "{" + shape + "}" in template:
            ports[shape] = request.getfixturevalue(f"{shape}_port")
    return template.format(password=BROKER_PASSWORD, **ports)


def test_api_process_creates_tenant_at_once_when_the_broker_is_down(
    dead_broker, db, influx, tmp_path, request
):
    # Given a real operator API process whose broker does not work
    process, base = start_api(tmp_path / "api.log", {"CELERY_BROKER_URL": dead_broker})
    try:
        tenant_id = new_tenant_id()

        # When the operator creates a tenant
        started = time.monotonic()
        response = requests.post(
            f"{base}/operator/tenants",
            json={"tenant_id": tenant_id, "name": "No broker"},
            headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
            timeout=10,
        )
        elapsed = time.monotonic() - started

        # Then it answers 201 within the publish timeout, saying the tenant was not queued
        assert response.status_code == 201, response.text
        assert elapsed < PUBLISH_TIMEOUT + 1.0, f"took {elapsed:.2f}s"
        if "refused" in request.node.callspec.id:  # known at once: one try, no sleep
            assert elapsed < PUBLISH_TIMEOUT / 2, f"refused, and still took {elapsed:.2f}s"
        assert response.json()["influxdb"] == {
            "state": "pending",
            "queued": False,
            "database": f"telemetry_{tenant_id}",
        }

        # And the tenant is stored as owed work that was never queued (the reconciler's cue)
        row = tenant_row(db, tenant_id)
        assert row["influxdb_state"] == "pending"
        assert row["influxdb_enqueued_at"] is None
    finally:
        stop_process(process)
    # And the API logged why, without the operator token or the broker's password
    log = (tmp_path / "api.log").read_text()
    assert "could not queue provision" in log
    assert OPERATOR_TOKEN not in log
    assert BROKER_PASSWORD not in log


def test_a_burst_of_creates_all_answer_promptly_when_the_broker_is_blackholed(
    blackholed_port, db, influx, tmp_path
):
    # Given a real operator API process whose broker drops connection attempts
    broker = f"redis://:{BROKER_PASSWORD}@127.0.0.1:{blackholed_port}/0"
    process, base = start_api(tmp_path / "api.log", {"CELERY_BROKER_URL": broker})
    try:
        tenant_ids = [new_tenant_id("burst") for _ in range(40)]

        def create(tenant_id: str) -> tuple[int, float]:
            started = time.monotonic()
            response = requests.post(
                f"{base}/operator/tenants",
                json={"tenant_id": tenant_id, "name": "Burst"},
                headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
                timeout=60,
            )
            return response.status_code, time.monotonic() - started

        # When 40 operators create a tenant at the same moment
        with ThreadPoolExecutor(len(tenant_ids)) as pool:
            answers = list(pool.map(create, tenant_ids))

        # Then each is created, and none waits behind the others' tries of a broker already
        # found dead (Celery's pool holds 10 publishers: they went in waves of 2 s)
        assert [status for status, _ in answers] == [201] * len(tenant_ids)
        slowest = max(took for _, took in answers)
        assert slowest < 2 * PUBLISH_TIMEOUT + 1.0, f"the slowest answer took {slowest:.2f}s"
        # And each is stored as owed work, for the reconciler to queue
        pending = db.execute(
            "SELECT count(*) FROM tenants WHERE tenant_id = ANY(%s) "
            "AND influxdb_state = 'pending' AND influxdb_enqueued_at IS NULL",
            (tenant_ids,),
        ).fetchone()[0]
        assert pending == len(tenant_ids)
    finally:
        stop_process(process)


def test_a_tenant_stored_while_the_broker_and_then_postgres_fail_is_reported_created(
    db, influx, tmp_path
):
    # Given a real operator API process whose broker is not running, and a Postgres that
    # goes away (SQLSTATE 57P01, an administrator's shutdown) once the tenant is stored: at
    # the moment the API marks the tenant "never queued"
    broker = f"redis://:{BROKER_PASSWORD}@127.0.0.1:{free_port()}/0"
    process, base = start_api(tmp_path / "api.log", {"CELERY_BROKER_URL": broker})
    db.execute(
        "CREATE FUNCTION gone_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION 'terminating connection' USING ERRCODE = '57P01'; END $$"
    )
    db.execute(
        "CREATE TRIGGER gone_after_insert BEFORE UPDATE OF influxdb_enqueued_at ON tenants "
        "FOR EACH ROW WHEN (NEW.influxdb_enqueued_at IS NULL) EXECUTE FUNCTION gone_after_insert()"
    )
    try:
        tenant_id = new_tenant_id()

        # When the operator creates a tenant
        response = requests.post(
            f"{base}/operator/tenants",
            json={"tenant_id": tenant_id, "name": "Cut"},
            headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
            timeout=10,
        )

        # Then it is told the truth: created, not queued (not a 503 "nothing was changed",
        # which a retry would meet with 409)
        assert response.status_code == 201, response.text
        assert response.json()["influxdb"]["queued"] is False
        # And the tenant is stored as owed work, its enqueued_at the insert's: the reconciler
        # sends it once that is older than its grace
        row = tenant_row(db, tenant_id)
        assert row["influxdb_state"] == "pending"
        assert row["influxdb_enqueued_at"] is not None
    finally:
        db.execute("DROP TRIGGER gone_after_insert ON tenants")
        db.execute("DROP FUNCTION gone_after_insert()")
        stop_process(process)
