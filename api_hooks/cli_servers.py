"""``tenantctl check-influxdb``, ``nodes`` and ``strays``: the InfluxDB servers of the pool, as
they answer now, as Postgres counts them, and what they hold that nobody placed (registered by
``api_hooks.cli``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from api_hooks.printable import print_json, print_table
from worker.redaction import redact_url

if TYPE_CHECKING:
    from worker.node_config import NodeConfig

EXIT_OK, EXIT_INFLUXDB = 0, 1


def add_commands(commands: Any) -> None:
    """The commands' parsers, on ``commands`` (the CLI's subparsers)."""
    commands.add_parser(
        "check-influxdb",
        help="per node: reachability, token, databases used vs limit (the file's, or the lower "
        "one the server named in a 422)",
    )
    commands.add_parser("nodes", help="the node pool: slots used and free, marked full, seen")
    commands.add_parser(
        "strays",
        help="databases nobody placed: tenants' off their home (stray), of no tenant (orphan)",
    )


def check_influxdb(args: argparse.Namespace) -> int:
    from worker.errors import InfluxDBUnauthorized, ProvisioningError  # noqa: PLC0415
    from worker.nodes import shared_pool  # noqa: PLC0415
    from worker.settings import get_settings  # noqa: PLC0415

    prefix = get_settings().influxdb_database_prefix
    pool = shared_pool()
    named = _named_limits(pool.nodes())
    reports: list[dict[str, Any]] = []
    for node in pool.nodes():
        report: dict[str, Any] = {
            "node": node.name,
            "url": redact_url(node.url),
            "token_configured": node.token is not None,
            "reachable": False,
            "token_accepted": None,  # not known until the server answers
            "databases_used": None,
            "database_limit": node.database_limit,
            "refused_limit": named.get(node.name),
            "tenant_databases": None,
            "free_slots": None,
            "error": None,
        }
        try:
            databases = pool.client(node).list_databases()
        except InfluxDBUnauthorized as exc:
            report.update(reachable=True, token_accepted=False, error=f"{exc.reason}: {exc}")
        except ProvisioningError as exc:
            report["error"] = f"{exc.reason}: {exc}"
        else:
            limit = node.database_limit
            if (named_limit := report["refused_limit"]) is not None:
                if len(databases) > named_limit:  # it holds more than it named: raised since
                    report["refused_limit"] = None
                else:
                    limit = named_limit
            report.update(
                reachable=True,
                token_accepted=True,
                databases_used=len(databases),
                tenant_databases=sum(d.startswith(prefix) for d in databases),
                free_slots=max(0, limit - len(databases)),
            )
        reports.append(report)
    all_answer = all(r["token_accepted"] for r in reports)
    free = sum(r["free_slots"] or 0 for r in reports)
    healthy = all_answer and free > 0
    if args.json:
        print_json({"ok": healthy, "free_slots": free, "nodes": reports})
    else:
        columns = ["node", "reachable", "token_accepted", "databases_used", "database_limit"]
        print_table(reports, [*columns, "refused_limit", "free_slots", "error"], noun="node")
        if all_answer and not free:
            print("FULL: no database slot left for a new tenant on any node", file=sys.stderr)
    return EXIT_OK if healthy else EXIT_INFLUXDB


def _named_limits(nodes: Sequence[NodeConfig]) -> dict[str, int]:
    """The limit each server named in its last 422, where below the nodes file's (as
    ``tenantctl nodes`` shows it); none when Postgres cannot be read: a check of the servers
    goes on without it, and says so."""
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

    from worker.db import get_engine  # noqa: PLC0415
    from worker.placement import usage  # noqa: PLC0415

    try:
        with get_engine().connect() as conn:
            slots = usage(conn, nodes)
    except SQLAlchemyError as exc:
        print(
            f"note: the limits servers named in a 422 are unknown (Postgres: {type(exc).__name__});"
            " free slots are counted by the nodes file",
            file=sys.stderr,
        )
        return {}
    return {u.node.name: u.overstated for u in slots if u.overstated is not None}


def nodes(args: argparse.Namespace) -> int:
    from api_hooks.status import node_report  # noqa: PLC0415

    rows = node_report()
    if args.json:
        print_json(rows)
    else:
        print_table(rows, list(rows[0]) if rows else ["node"], noun="node")
        missing = [r for r in rows if not r["configured"]]
        if missing:
            print(
                f"NOT CONFIGURED: {', '.join(r['node'] for r in missing)} - their tenants wait "
                "there (nothing is created elsewhere); add the server back to the nodes file",
                file=sys.stderr,
            )
    return EXIT_OK


def strays(args: argparse.Namespace) -> int:
    from worker.db import get_engine  # noqa: PLC0415
    from worker.strays import stray_rows  # noqa: PLC0415

    with get_engine().connect() as conn:
        found = stray_rows(conn)
    rows = [
        {
            "node": row.node,
            "database": row.database,
            "kind": row.kind,
            "tenant_id": row.tenant_id,
            "home_node": row.home_node,
            "first_seen_at": row.first_seen_at.isoformat(),
            "last_seen_at": row.last_seen_at.isoformat(),
        }
        for row in found
    ]
    if args.json:
        print_json(rows)  # JSON escapes what a terminal would act on
    else:
        print_table(rows, list(rows[0]) if rows else ["node"], noun="database")
    return EXIT_OK
