"""One log format for worker, beat, API and CLI: context on every line, secrets never.

Each line carries ``tenant_id`` and ``task_id`` when known (from ``extra=`` or from the
``log_context`` around a task run), and the whole formatted line - traceback included - passes
through ``redact`` with every secret of the settings. Celery's "received", "succeeded" and
"discarding" (expired) lines of the webhooks poll, and beat's "sending" ones, are left out
(``QuietPolls``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

from worker.queues import WEBHOOKS_TASK
from worker.redaction import redact_capped

LOG_FORMAT = (
    "%(asctime)s %(levelname)s %(processName)s %(name)s "
    "[tenant_id=%(tenant_id)s task_id=%(task_id)s] %(message)s"
)
_CONTEXT_FIELDS = ("tenant_id", "task_id")
_context: ContextVar[dict[str, str]] = ContextVar("log_context", default={})  # noqa: B039


@contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Attach ``fields`` (tenant_id, task_id) to every log line inside the block."""
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Fills tenant_id / task_id from the record's extras or the current log_context."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get()
        for field in _CONTEXT_FIELDS:
            if not getattr(record, field, None):
                setattr(record, field, context.get(field, "-"))
        return True


class QuietPolls(logging.Filter):
    """Leaves out Celery's INFO lines of the webhooks poll (the worker's "received",
    "succeeded" and expired; beat's "Sending due task"): it runs every ``WEBHOOKS_POLL_SECONDS``,
    so they would be most of the log. A run that sends something logs a line of its own; a
    failure is still logged by Celery (ERROR). ``LOG_LEVEL=DEBUG`` shows them all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not record.name.startswith("celery."):
            return True
        if logging.getLogger().level <= logging.DEBUG:
            return True
        args = record.args  # "received"/"succeeded": a mapping with the name; "Discarding
        # revoked task" (a poll expired while no worker took it): the name, then the id;
        # beat's "Sending due task": the schedule's entry, then the name
        if isinstance(args, Mapping):
            return args.get("name") != WEBHOOKS_TASK
        return not (isinstance(args, tuple) and WEBHOOKS_TASK in args[:2])


MAX_LOG_LINE = 16 * 1024  # characters; the rest of a longer line is cut, after redaction
# A message's control characters and line breaks, escaped: text from a server or a receiver
# (an error body, an HTTP reason) must not start a line of its own that reads as ours.
_ESCAPED = {c: f"\\x{c:02x}" for c in (*range(32), 127) if c != 9} | {
    c: f"\\u{c:04x}" for c in (0x85, 0x2028, 0x2029)
}


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then removes every secret from the finished line."""

    def __init__(self, secrets: Callable[[], Iterable[str]]) -> None:
        super().__init__(LOG_FORMAT)
        self._secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        # Bounded: an access-log line carries whatever path and query a client sent.
        return redact_capped(super().format(record), self._secrets(), MAX_LOG_LINE)

    def formatMessage(self, record: logging.LogRecord) -> str:
        # The message on one line; a traceback, added after it, keeps its own lines.
        record.message = record.message.translate(_ESCAPED)
        return super().formatMessage(record)


def current_secrets() -> tuple[str, ...]:
    """The settings' secrets and the node pool's tokens (a nodes file may add some later)."""
    from worker.nodes import shared_pool  # noqa: PLC0415 - the pool comes after logging
    from worker.settings import get_settings  # noqa: PLC0415

    return get_settings().secrets() + shared_pool().secrets()


def configure_logging(level: str, secrets: Callable[[], Iterable[str]] = current_secrets) -> None:
    """Route every logger through one redacting, context-aware handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.addFilter(QuietPolls())
    handler.setFormatter(RedactingFormatter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Libraries that install their own handlers: make them use ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "tornado"):
        library_logger = logging.getLogger(name)
        library_logger.handlers.clear()
        library_logger.propagate = True
    for noisy in ("urllib3", "kombu", "amqp"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
