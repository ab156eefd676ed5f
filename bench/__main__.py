"""``python -m bench [--quick] [--only NAME ...] [--broker redis|rabbitmq]``: run the
benchmarks, print the report.

Use ``bash bench/run``, which installs what is needed and starts Postgres/Redis if they are down.
The run's settings are applied before anything reads them (as tests/conftest.py does).
"""

import sys

from bench.config import apply_environment


def _broker(argv: list[str]) -> str:
    """The ``--broker`` value, read before the settings are (the runner checks it again)."""
    for index, arg in enumerate(argv):
        if arg.startswith("--broker="):
            return arg.split("=", 1)[1]
        if arg == "--broker" and index + 1 < len(argv):
            return argv[index + 1]
    return "redis"


apply_environment(_broker(sys.argv[1:]))

from bench.runner import main  # noqa: E402 - the settings above must come first

raise SystemExit(main())
