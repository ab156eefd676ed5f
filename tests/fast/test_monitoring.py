"""The dashboard and the alert rules in deploy/ stay true to what /metrics serves: every metric
their expressions name is one the collector serves, the rules pass promtool's check and unit
tests, and every rule's runbook link lands on a section of docs/runbook.md."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT
from tests.fast.conftest import T0, World, insert
from worker.attempts import log_attempt
from worker.db import get_engine
from worker.metrics import ProvisioningCollector
from worker.node_marks import mark_full
from worker.states import AttemptOutcome, Reason

DASHBOARD = ROOT / "deploy" / "grafana" / "tenant-provisioner.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"

# PromQL words that look like metric names: set operators, modifiers, literals. Functions and
# aggregations are told apart by the "(" that follows them.
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left"}
KEYWORDS |= {"group_right", "offset", "bool", "inf", "nan", "start", "end"}
# Grafana's own variables in range selectors, and what promtool gets in their place.
GRAFANA_RANGES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: what is left once strings, label
    matchers, ranges, label lists and template variables are taken out, and functions (a name
    before "(") and keywords are passed over."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\$\{\w+(?::\w+)?\}|\$\w+", " ", text)  # ${datasource}, $__rate_interval
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # ranges and subqueries
    lists = r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)"
    text = re.sub(lists, " ", text)  # label names
    names = set()
    for match in re.finditer(r"(?<![\w.:])[A-Za-z_:][\w:]*", text):
        word = match.group()
        if word.lower() in KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue
        names.add(word)
    return names


def test_metric_names_are_told_from_functions_labels_and_variables():
    expr = (
        'max by (node, kind) (rate(foo_total{reason!="none", kind=~"a|b"}[$__rate_interval]))'
        " - on () group_left (x) (sum without (le) (bar:ratio) or vector(0)) > bool 1e3"
        ' and absent(baz{a="max(q)"}) unless time() - qux offset 5m'
    )
    assert metric_names(expr) == {"foo_total", "bar:ratio", "baz", "qux"}
    assert metric_names("3 * 60 > 0") == set()


def dashboard_exprs() -> list[str]:
    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                yield node["expr"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    return list(walk(json.loads(DASHBOARD.read_text())))


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


@pytest.fixture
def served(db, world: World) -> set[str]:
    """The sample names /metrics serves: the app's collector on the test database, with a
    tenant of every kind the metrics count, so that every family has a sample."""
    world.add("alpha")
    insert(db, "acme", state="failed", error_reason="unreachable", node="alpha")
    db.execute("TRUNCATE webhook_endpoints CASCADE")  # and a webhook endpoint (its families)
    db.execute(
        "INSERT INTO webhook_endpoints (name, url, cursor_xid, created_at) "
        "VALUES ('ui', 'https://ui.example/hooks', '1', %s)",
        (T0,),
    )
    with get_engine().connect() as conn:
        log_attempt(conn, "acme", 1, T0, T0, AttemptOutcome.FAILED, Reason.UNREACHABLE)
        conn.commit()
        mark_full(conn, "alpha", T0, 3)  # a 422 that named its limit
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProvisioningCollector(get_engine(), world.pool()))
    families = list(text_string_to_metric_families(generate_latest(registry).decode()))
    empty = [family.name for family in families if not family.samples]
    assert not empty, f"families without a sample, their served names unknown: {empty}"
    return {sample.name for family in families for sample in family.samples}


def test_every_metric_the_dashboard_and_the_alerts_name_is_served(served: set[str]):
    dashboard = dashboard_exprs()
    rules = [rule["expr"] for rule in alert_rules()]
    assert len(dashboard) > 20 and len(rules) > 10  # the files were read, not skipped
    unknown = {
        f"{where}: {name}"
        for where, exprs in (("dashboard", dashboard), ("alerts.yml", rules))
        for expr in exprs
        for name in metric_names(expr)
        if name not in served
    }
    assert not unknown, f"not served by /metrics: {sorted(unknown)}; served: {sorted(served)}"
    # and they watch every family that is served
    named = {name for expr in dashboard for name in metric_names(expr)}
    unwatched = sorted(served - named)
    assert not unwatched, f"on /metrics but on no dashboard panel: {unwatched}"


def test_the_dashboard_takes_its_prometheus_from_a_variable():
    model = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    sources = [s for panel in model["panels"] for s in (panel, *panel.get("targets", []))]
    assert all(s["datasource"]["uid"] == "${datasource}" for s in sources if "expr" in s)
    assert all(
        panel["datasource"]["uid"] == "${datasource}"
        for panel in model["panels"]
        if panel["type"] != "row"
    )


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is not installed: `bash scripts/test` installs it (Debian's prometheus "
            "package, scripts/lib.sh ensure_promtool)"
        )
    return found


def run_promtool(*args: str) -> None:
    done = subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"


def test_the_alert_rules_pass_promtool_check():
    run_promtool("check", "rules", str(ALERTS))


def test_the_alert_rules_pass_their_unit_tests():
    run_promtool("test", "rules", str(ALERT_TESTS))


def test_every_alert_has_a_test_that_fires_it_and_one_that_does_not():
    cases = [
        case
        for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    for rule in alert_rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case.get("exp_alerts") for case in mine), f"{rule['alert']} never fires"
        assert any(not case.get("exp_alerts") for case in mine), f"{rule['alert']}: no quiet"


def test_the_dashboard_expressions_are_valid_promql(tmp_path: Path):
    rules = []
    for number, expr in enumerate(dashboard_exprs()):
        promql = expr
        for variable, value in GRAFANA_RANGES.items():
            promql = promql.replace(variable, value)
        rules.append({"record": f"dashboard:expr_{number}", "expr": promql})
    path = tmp_path / "dashboard-exprs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_promtool("check", "rules", str(path))


def github_anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to "-"."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def runbook_anchors() -> set[str]:
    anchors: set[str] = set()
    for line in RUNBOOK.read_text().splitlines():
        if match := re.match(r"#{1,6}\s+(.*)", line):
            anchor = base = github_anchor(match.group(1))
            number = 0
            while anchor in anchors:  # GitHub numbers repeated headings: -1, -2, ...
                number += 1
                anchor = f"{base}-{number}"
            anchors.add(anchor)
    return anchors


def test_github_anchors():
    assert github_anchor("Tenants waiting for capacity") == "tenants-waiting-for-capacity"
    assert github_anchor("Node `full`: what, now?") == "node-full-what-now"
    assert github_anchor("oldest_unprovisioned (age)") == "oldest_unprovisioned-age"


def test_every_alert_links_its_runbook_section():
    anchors = runbook_anchors()
    for rule in alert_rules():
        annotations = rule["annotations"]
        assert annotations.get("summary") and annotations.get("description"), rule["alert"]
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert (ROOT / path).is_file(), f"{rule['alert']}: {path} does not exist"
        assert anchor in anchors, f"{rule['alert']}: no heading #{anchor} in {path}"


def test_the_runbooks_own_links_resolve():
    anchors = runbook_anchors()
    for target in re.findall(r"\]\(([^)\s]+)\)", RUNBOOK.read_text()):
        if target.startswith("#"):
            assert target[1:] in anchors, f"docs/runbook.md links to a missing {target}"
        elif "://" not in target:
            assert (RUNBOOK.parent / target.partition("#")[0]).exists(), target
