"""``tenantctl webhooks``: the webhook endpoints and where each stands; ``--enable NAME``
re-enables a disabled one (registered by ``api_hooks.cli``; ``--json`` before or after)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

from api_hooks.printable import printable

Fail = Callable[[str, int], int]
EXIT_OK, EXIT_NOT_FOUND, EXIT_FILE_BROKEN = 0, 3, 6
COLUMNS = ("name", "state", "pending", "failing_since", "delivered", "last_error", "url")


def add_command(commands: Any) -> None:
    """The command's parser, on ``commands`` (the CLI's subparsers)."""
    webhooks = commands.add_parser(
        "webhooks", help="webhook endpoints: pending, failing, disabled; --enable NAME"
    )
    webhooks.add_argument(
        "--enable", metavar="NAME", help="re-enable this endpoint (its deliveries go at once)"
    )


def webhooks(args: argparse.Namespace, fail: Fail) -> int:
    """List the endpoints, or re-enable one."""
    from worker.clock import database_clock  # noqa: PLC0415 - the CLI starts light
    from worker.db import get_engine  # noqa: PLC0415
    from worker.webhook_dispatch import enable, endpoint_status, file_error  # noqa: PLC0415

    with get_engine().connect() as conn:
        if args.enable:
            if not enable(conn, args.enable, database_clock(conn)()):
                return fail(f"no webhook endpoint is named {args.enable}", EXIT_NOT_FOUND)
            _say(f"enabled {printable(args.enable)}: its waiting deliveries are due now")
            return EXIT_OK
        rows = endpoint_status(conn)
        broken = file_error(conn)
    if args.json:
        _say(json.dumps(rows, indent=2, default=_iso))  # JSON escapes what a terminal acts on
        return _file_broken(broken)
    table = [{**row, "state": state_of(row)} for row in rows]
    cells = [[_cell(row[c]) for c in COLUMNS] for row in table]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(COLUMNS)]
    _say("  ".join(c.upper().ljust(w) for c, w in zip(COLUMNS, widths, strict=True)).rstrip())
    for line in cells:
        _say("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
    _say(f"({len(rows)} endpoint(s))")
    if disabled := [r["name"] for r in table if r["state"] == "disabled"]:
        sys.stderr.write(
            f"DISABLED: {', '.join(disabled)} - nothing is sent to them, their deliveries are "
            "kept; fix the receiver, then: tenantctl webhooks --enable NAME\n"
        )
    return _file_broken(broken)


def _file_broken(broken: tuple[str, datetime] | None) -> int:
    """Say why the webhooks worker cannot use its webhooks file, if so (every endpoint waits,
    whatever its state says): exit 6."""
    if broken is None:
        return EXIT_OK
    error, since = broken
    sys.stderr.write(
        f"WEBHOOKS FILE UNUSABLE since {since.isoformat(timespec='seconds')}: "
        f"{printable(error)} - nothing is sent to any endpoint until it is fixed\n"
    )
    return EXIT_FILE_BROKEN


def state_of(row: dict[str, Any]) -> str:
    """``disabled``, ``not configured`` (left the webhooks file), ``failing`` or ``ok``."""
    if row["disabled_at"] is not None:
        return "disabled"
    if not row["configured"]:
        return "not configured"
    return "failing" if row["failing_since"] is not None else "ok"


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return printable(str(value))[:80]  # untrusted text (a receiver's reason): escaped, cut


def _iso(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
