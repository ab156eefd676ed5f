"""The operator CLI: ``tenantctl COMMAND`` (or ``python -m worker COMMAND``; ``--help`` on any).

Its name says what it is for - operating tenants - and not that it starts a worker; the worker
itself is ``celery -A worker worker``.

Exit codes: 0 ok; 1 InfluxDB problem (unreachable, token rejected, or no room left);
2 bad usage or input; 3 unknown tenant; 4 the broker did not take a message; 5 the database
cannot be used (unreachable, missing, not migrated); 141 the reader of the output went away
(``tenantctl audit | head``), quietly, as a Unix tool killed by SIGPIPE.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from api_hooks import cli_events, cli_flower, cli_webhooks
from api_hooks.actors import cli_actor
from api_hooks.printable import printable
from worker.redaction import redact_url

if TYPE_CHECKING:
    from worker.node_config import NodeConfig

EXIT_OK = 0
EXIT_INFLUXDB = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_NOT_QUEUED = 4
EXIT_DATABASE = 5
EXIT_PIPE_CLOSED = 141  # 128 + SIGPIPE


def main(argv: Sequence[str] | None = None, prog: str = "tenantctl") -> int:
    """Run one operator command; return its exit code."""
    parser = _parser(prog)
    args, extra = parser.parse_known_args(argv)
    if args.command != "flower" and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "flower":
        return cli_flower.flower(extra, fail=_fail)  # never reads our settings: Flower does

    from sqlalchemy.exc import DBAPIError  # noqa: PLC0415

    from worker.logs import configure_logging  # noqa: PLC0415
    from worker.redaction import redact  # noqa: PLC0415
    from worker.settings import SettingsError, get_settings  # noqa: PLC0415

    try:
        get_settings()  # fail fast, with the variable named, before anything else
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging("WARNING" if args.command != "reconcile" else "INFO")
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "status": _status,
        "list": _list,
        "retry": _retry,
        "adopt": _adopt,
        "reconcile": _reconcile,
        "check-influxdb": _check_influxdb,
        "nodes": _nodes,
        "strays": _strays,
        "sessions": _sessions,
        "events": partial(cli_events.events, fail=_fail),
        "audit": partial(cli_events.audit, fail=_fail),
        "webhooks": partial(cli_webhooks.webhooks, fail=_fail),
    }
    try:
        code = handlers[args.command](args)
        sys.stdout.flush()  # here, not at exit: a closed pipe is then ours to handle
    except DBAPIError as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0]
        reason = redact(reason, get_settings().secrets())
        return _fail(f"the database (DATABASE_URL) cannot be used: {reason}", EXIT_DATABASE)
    except BrokenPipeError:
        # Nothing more reaches the reader; no second error when Python flushes at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE_CLOSED
    return code


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Operate tenant provisioning.")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status = commands.add_parser("status", help="a tenant's provisioning state and live check")
    status.add_argument("tenant_id")
    status.add_argument("--no-live", action="store_true", help="skip the InfluxDB live check")
    listing = commands.add_parser("list", help="tenants and their states")
    listing.add_argument("--state", help="only tenants in this state (e.g. failed)")
    listing.add_argument("--limit", type=int, default=100)
    adopt = commands.add_parser(
        "adopt",
        help="declare the existing database of a name_taken tenant its own, then provision",
    )
    adopt.add_argument("tenant_id")
    adopt.add_argument("--node", help="the server holding it (default: the tenant's server)")
    retry = commands.add_parser("retry", help="re-enqueue one tenant, or all in a state")
    target = retry.add_mutually_exclusive_group(required=True)
    target.add_argument("tenant_id", nargs="?")
    target.add_argument("--state", help="every tenant in this state (e.g. failed)")
    commands.add_parser("reconcile", help="run one reconcile now and print its summary")
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
    sessions = commands.add_parser(
        "sessions", help="live console sign-ins; end one (--end ID) or every one (--end-all)"
    )
    ending = sessions.add_mutually_exclusive_group()
    ending.add_argument("--end", metavar="ID", help="end this session (its id, or a prefix)")
    ending.add_argument("--end-all", action="store_true", help="end every console session")
    cli_events.add_commands(commands)
    cli_webhooks.add_command(commands)
    commands.add_parser(
        "flower",
        help="start Flower (requires FLOWER_BASIC_AUTH unless FLOWER_UNAUTHENTICATED_DEV=1)",
        add_help=False,
    )
    return parser


def _status(args: argparse.Namespace) -> int:
    from api_hooks import InvalidTenantId, TenantNotFound, tenant_influxdb_status  # noqa: PLC0415

    try:
        status = tenant_influxdb_status(args.tenant_id, live=not args.no_live)
    except InvalidTenantId as exc:
        return _fail(str(exc), EXIT_USAGE)
    except TenantNotFound as exc:
        return _fail(str(exc), EXIT_NOT_FOUND)
    if args.json:
        _print_json(status)
        return EXIT_OK
    lines = {k: v for k, v in status.items() if k != "live"}
    lines.update({f"live.{k}": v for k, v in (status["live"] or {}).items()})
    width = max(len(k) for k in lines)
    for key, value in lines.items():
        print(f"{key:<{width}}  {'-' if value is None else printable(str(value))}")
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    from api_hooks import list_tenants  # noqa: PLC0415

    try:
        rows = list_tenants(args.state, args.limit)
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    if args.json:
        _print_json(rows)
    else:
        columns = ["tenant_id", "name", "state", "node", "attempts", "error_reason", "updated_at"]
        _print_table(rows, columns)
    return EXIT_OK


def _retry(args: argparse.Namespace) -> int:
    from api_hooks import (  # noqa: PLC0415
        InvalidTenantId,
        TenantNotFound,
        list_tenants,
        request_provisioning,
    )

    if args.tenant_id:
        ids = [args.tenant_id]
    else:
        try:
            ids = [row["tenant_id"] for row in list_tenants(args.state, limit=1_000_000)]
        except ValueError as exc:
            return _fail(str(exc), EXIT_USAGE)
    queued: list[str] = []
    not_queued: list[str] = []
    for tenant_id in ids:
        try:
            asked = request_provisioning(tenant_id, actor=cli_actor(), route="cli")
            (queued if asked else not_queued).append(tenant_id)
        except InvalidTenantId as exc:
            return _fail(str(exc), EXIT_USAGE)
        except TenantNotFound as exc:
            return _fail(str(exc), EXIT_NOT_FOUND)
    if args.json:
        _print_json({"queued": queued, "not_queued": not_queued})
    else:
        print(f"queued {len(queued)} tenant(s)" + (f": {', '.join(queued)}" if ids else ""))
        if not_queued:
            print(f"NOT queued (broker unavailable): {', '.join(not_queued)}", file=sys.stderr)
    return EXIT_NOT_QUEUED if not_queued else EXIT_OK


def _adopt(args: argparse.Namespace) -> int:
    from api_hooks import (  # noqa: PLC0415
        InvalidTenantId,
        TenantBusy,
        TenantNotFound,
        UnknownNode,
        adopt_database,
    )

    try:
        queued = adopt_database(args.tenant_id, args.node, actor=cli_actor(), route="cli")
    except (InvalidTenantId, UnknownNode, TenantBusy) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except TenantNotFound as exc:
        return _fail(str(exc), EXIT_NOT_FOUND)
    if args.json:
        _print_json({"tenant_id": args.tenant_id, "queued": queued})
    elif queued:
        print(f"adoption of {args.tenant_id}'s database queued")
    else:
        print("NOT queued (broker unavailable); the reconciler will queue it", file=sys.stderr)
    return EXIT_OK if queued else EXIT_NOT_QUEUED


def _reconcile(args: argparse.Namespace) -> int:
    from worker.db import get_engine  # noqa: PLC0415
    from worker.nodes import shared_pool  # noqa: PLC0415
    from worker.reconcile import reconcile  # noqa: PLC0415
    from worker.settings import get_settings  # noqa: PLC0415
    from worker.tasks import publish  # noqa: PLC0415

    summary = reconcile(get_engine(), shared_pool(), get_settings(), publish)
    result = summary.as_dict()
    if args.json:
        _print_json(result)
    elif not summary.ran:
        print("another reconcile run holds the lock; nothing done")
    else:
        width = max(len(k) for k in result)
        for key, value in result.items():
            print(f"{key:<{width}}  {'-' if value is None else printable(str(value))}")
    return EXIT_NOT_QUEUED if summary.not_queued else EXIT_OK


def _check_influxdb(args: argparse.Namespace) -> int:
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
            "token_accepted": False,
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
            report.update(reachable=True, error=f"{exc.reason}: {exc}")
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
        _print_json({"ok": healthy, "free_slots": free, "nodes": reports})
    else:
        columns = ["node", "reachable", "token_accepted", "databases_used", "database_limit"]
        _print_table(reports, [*columns, "refused_limit", "free_slots", "error"], noun="node")
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


def _nodes(args: argparse.Namespace) -> int:
    from api_hooks.status import node_report  # noqa: PLC0415

    rows = node_report()
    if args.json:
        _print_json(rows)
    else:
        _print_table(rows, list(rows[0]) if rows else ["node"], noun="node")
        missing = [r for r in rows if not r["configured"]]
        if missing:
            print(
                f"NOT CONFIGURED: {', '.join(r['node'] for r in missing)} - their tenants wait "
                "there (nothing is created elsewhere); add the server back to the nodes file",
                file=sys.stderr,
            )
    return EXIT_OK


def _strays(args: argparse.Namespace) -> int:
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
        _print_json(rows)  # JSON escapes what a terminal would act on
    else:
        _print_table(rows, list(rows[0]) if rows else ["node"], noun="database")
    return EXIT_OK


def _sessions(args: argparse.Namespace) -> int:
    from api_hooks.console.sessions import end_sessions, live_sessions  # noqa: PLC0415
    from worker.db import get_engine  # noqa: PLC0415
    from worker.settings import get_settings  # noqa: PLC0415

    with get_engine().begin() as conn:
        if args.end or args.end_all:
            try:
                ended = end_sessions(conn, None if args.end_all else args.end)
            except ValueError as exc:
                return _fail(str(exc), EXIT_USAGE)
            if args.end and not ended:
                return _fail(f"no live console session has the id {args.end}", EXIT_NOT_FOUND)
            print(f"ended {ended} console session(s)")
            return EXIT_OK
        rows = live_sessions(conn, get_settings().console_session_idle_minutes)
    if args.json:
        _print_json(rows)
    else:
        columns = ["id", "actor", "address", "created_at", "last_seen_at", "expires_at"]
        _print_table(rows, columns, noun="session")
    return EXIT_OK


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2, default=str))


def _print_table(
    rows: Sequence[Mapping[str, Any]], columns: list[str], noun: str = "tenant"
) -> None:
    # Every cell escaped: names and errors are untrusted text, and this is a terminal.
    cells = [[("-" if row[c] is None else printable(str(row[c]))) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row_cells in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row_cells, widths, strict=True)))
    print(f"({len(rows)} {noun}(s))")


def _fail(message: str, code: int) -> int:
    print(f"error: {printable(message)}", file=sys.stderr)
    return code
