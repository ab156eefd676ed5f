"""``tenantctl flower``: Flower, started with basic auth, or refused (see docs/operating.md)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

EXIT_OK, EXIT_USAGE = 0, 2


def flower(extra: list[str], fail: Callable[[str, int], int]) -> int:
    """Start Flower with ``extra`` (its options); refuse without authentication."""
    # Flower shows every task and its arguments: never serve it open by accident.
    from worker.settings_rules import SettingsError, read_secret  # noqa: PLC0415

    try:
        credentials = read_secret(os.environ, "FLOWER_BASIC_AUTH", "FLOWER_BASIC_AUTH_FILE")
    except SettingsError as exc:
        return fail(str(exc), EXIT_USAGE)
    env = dict(os.environ)
    env.pop("FLOWER_BASIC_AUTH_FILE", None)
    if credentials:
        env["FLOWER_BASIC_AUTH"] = credentials  # Flower reads it from its environment
    elif os.environ.get("FLOWER_UNAUTHENTICATED_DEV") != "1":
        return fail(
            "refusing to start Flower without authentication: set FLOWER_BASIC_AUTH=user:password "
            "or FLOWER_BASIC_AUTH_FILE (or FLOWER_UNAUTHENTICATED_DEV=1 on a development machine)",
            EXIT_USAGE,
        )
    command = [sys.executable, "-m", "celery", "-A", "worker", "flower", *joined(extra)]
    os.execve(sys.executable, command, env)  # noqa: S606 - replaces this process, argv is ours
    return EXIT_OK  # pragma: no cover - execve does not return


def joined(options: list[str]) -> list[str]:
    """``--port 5555`` as ``--port=5555``: Flower's options are tornado's, which reads a bare
    ``--port`` as a value missing. Flags (``--persistent``) stay as they are."""
    out: list[str] = []
    for arg in options:
        last = out[-1] if out else ""
        if last.startswith("--") and "=" not in last and not arg.startswith("-"):
            out[-1] = f"{last}={arg}"
        else:
            out.append(arg)
    return out
