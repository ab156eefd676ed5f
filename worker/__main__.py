"""``python -m worker COMMAND``: the operator CLI, also installed as ``tenantctl``."""

import sys

from worker.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m worker"))
