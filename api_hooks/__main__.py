"""``python -m api_hooks [--host H] [--port P]``: serve the operator API with our logging."""

from __future__ import annotations

import argparse

import uvicorn

from worker.logs import configure_logging
from worker.settings import get_settings


def main() -> None:
    """Parse the command line and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m api_hooks", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    settings = get_settings()
    configure_logging(settings.log_level)
    from api_hooks.app import app  # noqa: PLC0415 - after logging, so start-up errors are formatted

    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=True)


if __name__ == "__main__":
    main()
