"""``tenantctl events TENANT`` and ``tenantctl audit``: the event log from the command line
(registered by ``api_hooks.cli``; ``--json`` before or after the command)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from api_hooks.printable import print_json, printable
from worker.event_reads import TYPE_PREFIX

Fail = Callable[[str, int], int]
EXIT_OK, EXIT_USAGE, EXIT_NOT_FOUND = 0, 2, 3


def add_commands(commands: Any) -> None:
    """The two commands' parsers, on ``commands`` (the CLI's subparsers)."""
    events = commands.add_parser("events", help="a tenant's events, oldest first")
    events.add_argument("tenant_id")
    events.add_argument("--after", help="only events after this sequence number (tenantseq)")
    events.add_argument("--limit", default="500", help="at most this many (1 to 500)")
    audit = commands.add_parser("audit", help="operator actions, newest first (the audit trail)")
    audit.add_argument("--actor", help="only this actor's (exact, e.g. cli:alice)")
    audit.add_argument("--tenant", help="only actions on this tenant")
    audit.add_argument("--limit", type=int, default=50, help="at most this many (1 to 500)")


def events(args: argparse.Namespace, fail: Fail) -> int:
    """Print a tenant's events."""
    from api_hooks.errors import InvalidCursor, InvalidTenantId, TenantNotFound  # noqa: PLC0415
    from api_hooks.events import tenant_events  # noqa: PLC0415

    try:
        page = tenant_events(args.tenant_id, args.after, args.limit)
    except (InvalidTenantId, InvalidCursor) as exc:
        return fail(str(exc), EXIT_USAGE)
    except TenantNotFound as exc:
        return fail(str(exc), EXIT_NOT_FOUND)
    if args.json:
        print_json(page["events"])
    else:
        _print_events(page["events"], show_tenant=False)
        if page["more"]:
            _say(f"(more: tenantctl events {args.tenant_id} --after {page['next']})")
    return EXIT_OK


def audit(args: argparse.Namespace, fail: Fail) -> int:
    """Print operator actions."""
    from api_hooks.errors import InvalidCursor  # noqa: PLC0415
    from api_hooks.events import audit_trail  # noqa: PLC0415

    try:
        page = audit_trail(args.actor, args.tenant, limit=args.limit)
    except InvalidCursor as exc:
        return fail(str(exc), EXIT_USAGE)
    if args.json:
        print_json(page["events"])
    else:
        _print_events(page["events"], show_tenant=True)
    return EXIT_OK


def _print_events(events: list[dict[str, Any]], *, show_tenant: bool) -> None:
    rows = []
    for event in events:
        data = event["data"]
        details = ", ".join(
            f"{key}={value}" for key, value in data.items() if key not in ("state", "incarnation")
        )
        row = {
            "seq": event.get("tenantseq"),
            "time": event["time"],
            "type": event["type"].removeprefix(TYPE_PREFIX),
            "tenant": event.get("subject"),
            "state": data.get("state"),
            "actor": event.get("actor"),
            "route": event.get("route"),
            "details": details,
        }
        rows.append(row)
    columns = ["time", "type", "tenant", "actor", "route", "details"]
    if not show_tenant:
        columns = ["seq", "time", "type", "state", "actor", "route", "details"]
    # Every cell escaped: names, actors and errors are untrusted text, and this is a terminal.
    cells = [
        [("-" if row[c] in (None, "") else printable(str(row[c]))) for c in columns] for row in rows
    ]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    _say("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for line in cells:
        _say("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
    _say(f"({len(rows)} event(s))")


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
