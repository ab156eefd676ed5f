"""``python -m api_hooks [--host H] [--port P]``: serve the operator API with our logging.

``python -m api_hooks --openapi [FILE]`` writes the OpenAPI document instead (default: the
repository's ``docs/openapi.json``; ``-``: standard output) and needs no settings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvicorn

from api_hooks.app import create_app, openapi_document, render_openapi
from worker.db import serve_requests
from worker.logs import configure_logging
from worker.settings import get_settings

OPENAPI_FILE = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"


def main() -> None:
    """Parse the command line; write the OpenAPI document, or serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m api_hooks", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--openapi",
        nargs="?",
        const=str(OPENAPI_FILE),
        metavar="FILE",
        help=f"write the OpenAPI document to FILE (default {OPENAPI_FILE}; - for stdout) and exit",
    )
    args = parser.parse_args()
    if args.openapi is not None:
        write_openapi(args.openapi)
        return
    settings = get_settings()
    configure_logging(settings.log_level)
    serve_requests()  # a request behind a held lock or a busy pool answers 503, never hangs
    # Built after logging is configured, so start-up errors are formatted.
    uvicorn.run(
        create_app(settings), host=args.host, port=args.port, log_config=None, access_log=True
    )


def write_openapi(destination: str) -> None:
    """Write the app's OpenAPI document (as committed) to ``destination`` or ``-``."""
    text = render_openapi(openapi_document())
    if destination == "-":
        sys.stdout.write(text)
    else:
        Path(destination).write_text(text, encoding="utf-8")
        sys.stderr.write(f"wrote {destination}\n")


if __name__ == "__main__":
    main()
