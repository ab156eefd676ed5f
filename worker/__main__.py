"""``python -m worker COMMAND``: the operator CLI (``api_hooks.cli``), also installed as
``tenantctl``. Kept under ``worker`` because operators have long typed it."""

import sys

if __name__ == "__main__":
    from api_hooks.cli import main  # the CLI is a client of the hooks, not part of the worker

    sys.exit(main(prog="python -m worker"))
