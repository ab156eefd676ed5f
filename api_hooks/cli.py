"""The operator CLI: ``tenantctl COMMAND`` (or ``python -m worker COMMAND``; ``--help`` on any).

Its name says what it is for - operating tenants - and not that it starts a worker; the worker
itself is ``celery -A worker worker``.

Exit codes: 0 ok; 1 InfluxDB problem (unreachable, token rejected, or no room left);
2 bad usage or input; 3 unknown tenant; 4 the broker did not take a message; 5 the database
cannot be used (unreachable, missing, not migrated); 6 the webhooks file cannot be used;
141 the reader of the output went away
(``tenantctl audit | head``), quietly, as a Unix tool killed by SIGPIPE.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from functools import partial

from api_hooks import cli_events, cli_flower, cli_servers, cli_webhooks
from api_hooks.actors import cli_actor
from api_hooks.printable import print_json, print_table, printable

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
        "forget": _forget,
        "reconcile": _reconcile,
        "check-influxdb": cli_servers.check_influxdb,
        "nodes": cli_servers.nodes,
        "strays": cli_servers.strays,
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
        help="declare the existing database of a name_taken tenant (or one on a server that "
        "left the nodes file) its own, then provision",
    )
    adopt.add_argument("tenant_id")
    adopt.add_argument("--node", help="the server holding it (default: the tenant's server)")
    forget = commands.add_parser(
        "forget",
        help="remove a tenant being deleted whose server left the nodes file for good, "
        "touching no server",
    )
    forget.add_argument("tenant_id")
    retry = commands.add_parser("retry", help="re-enqueue one tenant, or all in a state")
    target = retry.add_mutually_exclusive_group(required=True)
    target.add_argument("tenant_id", nargs="?")
    target.add_argument("--state", help="every tenant in this state (e.g. failed)")
    commands.add_parser("reconcile", help="run one reconcile now and print its summary")
    sessions = commands.add_parser(
        "sessions", help="live console sign-ins; end one (--end ID) or every one (--end-all)"
    )
    ending = sessions.add_mutually_exclusive_group()
    ending.add_argument("--end", metavar="ID", help="end this session (its id, or a prefix)")
    ending.add_argument("--end-all", action="store_true", help="end every console session")
    cli_servers.add_commands(commands)
    cli_events.add_commands(commands)
    cli_webhooks.add_command(commands)
    for command in commands.choices.values():  # --json after the command too, on every one
        # SUPPRESS: given before the command, --json is not reset by this parser's default.
        command.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    commands.add_parser(  # its arguments are Flower's own
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
        print_json(status)
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
        print_json(rows)
    else:
        columns = ["tenant_id", "name", "state", "node", "attempts", "error_reason", "created_at"]
        columns.append("updated_at")
        print_table(rows, columns)
        if len(rows) == args.limit:  # (the JSON is the list itself: its length says as much)
            print(f"(the first {args.limit} by id; there may be more: --limit N)", file=sys.stderr)
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
        print_json({"queued": queued, "not_queued": not_queued})
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
        print_json({"tenant_id": args.tenant_id, "queued": queued})
    elif queued:
        print(f"adoption of {args.tenant_id}'s database queued")
    else:
        print("NOT queued (broker unavailable); the reconciler will queue it", file=sys.stderr)
    return EXIT_OK if queued else EXIT_NOT_QUEUED


def _forget(args: argparse.Namespace) -> int:
    from api_hooks import InvalidTenantId, TenantBusy, TenantNotFound  # noqa: PLC0415
    from api_hooks.tenants import forget_tenant  # noqa: PLC0415

    try:
        node = forget_tenant(args.tenant_id, actor=cli_actor(), route="cli")
    except (InvalidTenantId, TenantBusy) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except TenantNotFound as exc:
        return _fail(str(exc), EXIT_NOT_FOUND)
    if args.json:
        print_json({"tenant_id": args.tenant_id, "forgotten": True, "node": node})
    else:
        print(f"{args.tenant_id} forgotten; its database, if node {node} ever returns, stays there")
    return EXIT_OK


def _reconcile(args: argparse.Namespace) -> int:
    from worker.db import get_engine  # noqa: PLC0415
    from worker.nodes import shared_pool  # noqa: PLC0415
    from worker.reconcile import reconcile  # noqa: PLC0415
    from worker.settings import get_settings  # noqa: PLC0415
    from worker.tasks import publish  # noqa: PLC0415

    summary = reconcile(get_engine(), shared_pool(), get_settings(), publish)
    result = summary.as_dict()
    if args.json:
        print_json(result)
    elif not summary.ran:
        print("another reconcile run holds the lock; nothing done")
    else:
        width = max(len(k) for k in result)
        for key, value in result.items():
            print(f"{key:<{width}}  {'-' if value is None else printable(str(value))}")
    return EXIT_NOT_QUEUED if summary.not_queued else EXIT_OK


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
        print_json(rows)
    else:
        columns = ["id", "actor", "address", "created_at", "last_seen_at", "expires_at"]
        print_table(rows, columns, noun="session")
    return EXIT_OK


def _fail(message: str, code: int) -> int:
    print(f"error: {printable(message)}", file=sys.stderr)
    return code
