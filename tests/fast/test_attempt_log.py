"""The attempt log is pruned by age; /metrics counts attempts from running totals, which
pruning never lowers, so a scrape costs the same after a million attempts."""

from __future__ import annotations

import re
from datetime import timedelta

from prometheus_client import CollectorRegistry, generate_latest

from tests.fast.conftest import T0
from worker.attempts import log_attempt, prune_attempt_log
from worker.db import get_engine
from worker.metrics import ProvisioningCollector
from worker.nodes import NodePool
from worker.settings import get_settings
from worker.states import AttemptOutcome, Reason


def attempts_metric(pool: NodePool) -> dict[tuple[str, str], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProvisioningCollector(get_engine(), pool))
    text = generate_latest(registry).decode()
    found = re.findall(
        r'tenant_provisioner_provisioning_attempts_total\{outcome="(\w+)",reason="(\w+)"\} (\S+)',
        text,
    )
    return {(outcome, reason): float(value) for outcome, reason, value in found}


def log(conn, count: int, finished_days_ago: float, outcome: AttemptOutcome, reason=None) -> None:
    finished = T0 - timedelta(days=finished_days_ago)
    for number in range(count):
        log_attempt(conn, "t", number + 1, finished, finished, outcome, reason, node="default")
    conn.commit()


def test_pruning_keeps_recent_rows_and_every_total(db):
    pool = NodePool(get_settings())
    with get_engine().connect() as conn:
        # Given 120 attempts from 40 days ago and 30 from yesterday
        log(conn, 100, 40, AttemptOutcome.RETRYING, Reason.UNREACHABLE)
        log(conn, 20, 40, AttemptOutcome.PROVISIONED)
        log(conn, 30, 1, AttemptOutcome.PROVISIONED)
        before = attempts_metric(pool)
        assert before == {("provisioned", "none"): 50.0, ("retrying", "unreachable"): 100.0}

        # When the log is pruned to 30 days, 25 rows per transaction
        deleted = prune_attempt_log(conn, T0 - timedelta(days=30), 25, stop=lambda: False)

    # Then the old rows are gone, yesterday's stay, and the counters did not move
    assert deleted == 120
    assert db.execute("SELECT count(*) FROM provisioning_attempts").fetchone()[0] == 30
    assert attempts_metric(pool) == before


def test_pruning_stops_when_told_and_goes_on_next_time(db):
    with get_engine().connect() as conn:
        log(conn, 60, 40, AttemptOutcome.FAILED, Reason.UNAUTHORIZED)
        batches = iter([False, False, True])
        assert prune_attempt_log(conn, T0, 25, stop=lambda: next(batches)) == 50
        assert prune_attempt_log(conn, T0, 25, stop=lambda: False) == 10
    assert db.execute("SELECT count(*) FROM provisioning_attempts").fetchone()[0] == 0


def test_concurrent_attempts_spread_over_shards_and_sum_exactly(db):
    pool = NodePool(get_settings())
    with get_engine().connect() as conn:
        log(conn, 200, 0, AttemptOutcome.PROVISIONED)
    shards = db.execute(
        "SELECT count(*), sum(total) FROM provisioning_attempt_totals WHERE outcome = 'provisioned'"
    ).fetchone()
    assert shards[0] > 1  # not one hot row
    assert shards[1] == 200
    assert attempts_metric(pool) == {("provisioned", "none"): 200.0}
