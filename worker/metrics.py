"""Prometheus metrics of our own, read from Postgres at scrape time.

They answer "are we stuck?", which Flower cannot: Flower keeps task history in memory only,
while these come from the source of truth and survive restarts of every process.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, Row, func, select, text

from worker import store
from worker.models import (
    provisioning_attempt_totals,
    reconcile_stats,
    tenants,
)
from worker.nodes import NodePool
from worker.placement import NodeUsage, node_rows, tenants_per_node, usage
from worker.states import (
    IN_PROGRESS_STATES,
    RESUMABLE_REASONS,
    STATES,
    ProvisioningState,
)
from worker.strays import StrayKind, counts_by_node

PREFIX = "tenant_provisioner"
_UNPLACED = "(none)"  # node label of stalled tenants that have no server yet


class ProvisioningCollector(Collector):
    """Collects tenant, attempt and reconcile metrics; no query reads the attempt log."""

    def __init__(self, engine: Engine, pool: NodePool) -> None:
        self._engine = engine
        self._pool = pool

    def collect(self) -> Iterator[Metric]:
        with self._engine.connect() as conn:
            by_state = store.count_by_state(conn)
            # Aged by the database's clock, which wrote created_at (worker.clock).
            oldest_age = conn.execute(
                select(
                    func.extract("epoch", func.clock_timestamp() - func.min(tenants.c.created_at))
                ).where(tenants.c.influxdb_state.in_(list(IN_PROGRESS_STATES)))
            ).scalar()
            # Running totals (a few rows per outcome and reason), never the log itself: a
            # scrape costs the same after a million attempts.
            totals = provisioning_attempt_totals
            attempts = conn.execute(
                select(totals.c.outcome, totals.c.reason, func.sum(totals.c.total))
                .group_by(totals.c.outcome, totals.c.reason)
                .order_by(totals.c.outcome, totals.c.reason)
            ).all()
            stats = conn.execute(select(reconcile_stats)).first()
            configured = self._pool.nodes()
            rows = node_rows(conn)
            slots = usage(conn, configured, rows)
            stalled: dict[str, int] = dict(
                conn.execute(
                    select(func.coalesce(tenants.c.influxdb_node, _UNPLACED), func.count())
                    .where(
                        tenants.c.influxdb_state == ProvisioningState.FAILED,
                        tenants.c.influxdb_error_reason.in_(list(RESUMABLE_REASONS)),
                    )
                    .group_by(tenants.c.influxdb_node)
                ).all()
            )
            strays = counts_by_node(conn)
            webhooks = _webhook_endpoints(conn)
            webhooks_file = conn.execute(
                text("SELECT count(*) FROM webhook_config WHERE error IS NOT NULL")
            ).scalar_one()
            names = [n.name for n in configured]
            unconfigured = {
                name: count for name, count in tenants_per_node(rows).items() if name not in names
            }
        observed = {name: (row.observed_databases, row.observed_at) for name, row in rows.items()}

        yield from _node_metrics(slots, observed, unconfigured)
        yield from _webhook_metrics(webhooks)
        yield GaugeMetricFamily(
            f"{PREFIX}_webhooks_file_unusable",
            "1 while the webhooks worker cannot use its webhooks file (WEBHOOKS_FILE): nothing "
            "is sent to any endpoint (tenantctl webhooks says why).",
            value=webhooks_file,
        )

        stalled_family = GaugeMetricFamily(
            f"{PREFIX}_stalled_tenants",
            "Tenants failed for a transient reason or a refused token, waiting for their server "
            "to answer again "
            f"(they resume by themselves); node {_UNPLACED!r}: not placed yet.",
            labels=["node"],
        )
        for node, count in sorted(stalled.items()):
            stalled_family.add_metric([node], count)
        yield stalled_family

        stray_family = GaugeMetricFamily(
            f"{PREFIX}_stray_databases",
            "Databases the last listing of the node showed that nobody placed there: a tenant's "
            "off its home (stray) or of no tenant (orphan). Reported only, never deleted.",
            labels=["node", "kind"],
        )
        # Every configured server has both series (0: nothing there), so a stray that goes
        # away reads 0 rather than a series that vanishes.
        for node in sorted(set(names) | {node for node, _ in strays}):
            for kind in StrayKind:
                stray_family.add_metric([node, kind.value], strays.get((node, kind.value), 0))
        yield stray_family

        states = GaugeMetricFamily(
            f"{PREFIX}_tenants", "Tenants by InfluxDB provisioning state.", labels=["state"]
        )
        for state in STATES:
            states.add_metric([state], by_state[state])
        yield states

        age = max(0.0, float(oldest_age)) if oldest_age is not None else 0.0
        yield GaugeMetricFamily(
            f"{PREFIX}_oldest_unprovisioned_age_seconds",
            "Age of the oldest tenant not provisioned yet, failed ones aside (0 when none).",
            value=age,
        )

        by_reason = CounterMetricFamily(
            f"{PREFIX}_provisioning_attempts",
            "Provisioning attempts by outcome and reason (reason 'none' on success).",
            labels=["outcome", "reason"],
        )
        for outcome, reason, count in attempts:
            by_reason.add_metric([outcome, reason or "none"], int(count))
        yield by_reason

        if stats is None:
            return
        for name, column, help_text in (
            ("reconcile_runs", stats.runs_total, "Reconcile runs that took the lock."),
            ("reconcile_requeued", stats.requeued_total, "Tenants re-enqueued by the reconciler."),
            ("reconcile_drift", stats.drift_total, "Provisioned tenants found without database."),
            ("reconcile_stuck", stats.stuck_total, "Attempts found abandoned by a dead worker."),
        ):
            yield CounterMetricFamily(f"{PREFIX}_{name}", help_text, value=column)
        yield GaugeMetricFamily(
            f"{PREFIX}_reconcile_last_duration_seconds",
            "Wall time of the last reconcile run.",
            value=stats.last_duration_seconds or 0.0,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_reconcile_last_run_timestamp_seconds",
            "When the last reconcile run started (Unix time; 0 before the first).",
            value=stats.last_started_at.timestamp() if stats.last_started_at else 0.0,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_reconcile_last_scanned",
            "Tenants read by the last reconcile run.",
            value=stats.last_scanned or 0,
        )


def _node_metrics(
    slots: list[NodeUsage],
    observed: dict[str, tuple[int | None, datetime | None]],
    unconfigured: dict[str, int],
) -> Iterator[Metric]:
    families = {
        "configured": GaugeMetricFamily(
            f"{PREFIX}_node_configured",
            "1 for a server of the nodes file; 0 for one that left it while tenants live there.",
            labels=["node"],
        ),
        "tenants": GaugeMetricFamily(
            f"{PREFIX}_node_tenants", "Tenants holding a slot on the node.", labels=["node"]
        ),
        "limit": GaugeMetricFamily(
            f"{PREFIX}_node_database_limit", "The node's database limit.", labels=["node"]
        ),
        "refused": GaugeMetricFamily(
            f"{PREFIX}_node_refused_limit",
            "The database limit the node named in its last 422 (absent: none known); below "
            "the node's database_limit, the nodes file overstates it.",
            labels=["node"],
        ),
        "full": GaugeMetricFamily(
            f"{PREFIX}_node_full",
            "1 while the node is marked full (it answered 422).",
            labels=["node"],
        ),
        "unavailable": GaugeMetricFamily(
            f"{PREFIX}_node_unavailable",
            "1 while the node's last listing failed or it refused our token or a connection: "
            "new tenants go to answering nodes first.",
            labels=["node"],
        ),
        "others": GaugeMetricFamily(
            f"{PREFIX}_node_other_databases",
            "Databases on the node that are not a tenant's placed there (made by hand, "
            "another's, strays), by the last reconcile listing: they take slots too.",
            labels=["node"],
        ),
        "free": GaugeMetricFamily(
            f"{PREFIX}_node_free_slots",
            "Slots placement may still use on the node: its limit less our tenants and the "
            "other databases there; 0 while it is marked full.",
            labels=["node"],
        ),
        "observed": GaugeMetricFamily(
            f"{PREFIX}_node_observed_databases",
            "Databases the last reconcile saw on the node (-1: not seen yet).",
            labels=["node"],
        ),
        "listed": GaugeMetricFamily(
            f"{PREFIX}_node_last_listed_timestamp_seconds",
            "When a reconcile run last listed the node's databases (0: never); a server that "
            "stops answering keeps its last count, and this time tells how old it is.",
            labels=["node"],
        ),
    }
    for name, count in sorted(unconfigured.items()):
        families["configured"].add_metric([name], 0)
        families["tenants"].add_metric([name], count)
    for slot in slots:
        name = slot.node.name
        families["configured"].add_metric([name], 1)
        families["tenants"].add_metric([name], slot.used)
        families["limit"].add_metric([name], slot.node.database_limit)
        families["full"].add_metric([name], 1 if slot.full else 0)
        families["others"].add_metric([name], slot.others)
        families["free"].add_metric([name], slot.free)
        if slot.refused_limit is not None:
            families["refused"].add_metric([name], slot.refused_limit)
        families["unavailable"].add_metric([name], 1 if slot.unavailable else 0)
        seen, listed_at = observed.get(name, (None, None))
        families["observed"].add_metric([name], -1 if seen is None else seen)
        families["listed"].add_metric([name], listed_at.timestamp() if listed_at else 0)
    yield from families.values()


def _webhook_endpoints(conn: Connection) -> list[Row[Any]]:
    # Aged by the database's clock, which the dispatcher's times come from (worker.clock).
    return list(
        conn.execute(
            text(
                "SELECT e.name, e.disabled_at IS NOT NULL AS disabled, e.delivered, "
                "count(d.id) AS pending, "
                "extract(epoch FROM clock_timestamp() - min(d.created_at)) AS oldest "
                "FROM webhook_endpoints e LEFT JOIN webhook_deliveries d ON d.endpoint = e.name "
                "GROUP BY e.name ORDER BY e.name"
            )
        ).all()
    )


def _webhook_metrics(rows: list[Row[Any]]) -> Iterator[Metric]:
    """Per webhook endpoint (docs/webhooks.md); none without WEBHOOKS_FILE."""
    families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
        "disabled": GaugeMetricFamily(
            f"{PREFIX}_webhook_endpoint_disabled",
            "1 while the endpoint is disabled (failing too long, or 410): nothing is sent to it; "
            "its deliveries wait (tenantctl webhooks --enable NAME).",
            labels=["endpoint"],
        ),
        "pending": GaugeMetricFamily(
            f"{PREFIX}_webhook_deliveries_pending",
            "Deliveries waiting for the endpoint (not yet answered 2xx).",
            labels=["endpoint"],
        ),
        "oldest": GaugeMetricFamily(
            f"{PREFIX}_webhook_oldest_pending_age_seconds",
            "Age of the endpoint's oldest waiting delivery (0 when none).",
            labels=["endpoint"],
        ),
        "delivered": CounterMetricFamily(
            f"{PREFIX}_webhook_deliveries",
            "Deliveries the endpoint answered 2xx.",
            labels=["endpoint"],
        ),
    }
    for row in rows:
        families["disabled"].add_metric([row.name], 1 if row.disabled else 0)
        families["pending"].add_metric([row.name], row.pending)
        families["oldest"].add_metric([row.name], max(0.0, float(row.oldest or 0.0)))
        families["delivered"].add_metric([row.name], row.delivered)
    yield from families.values()
