"""The Celery application; configuration lives in the top-level ``celeryconfig`` module."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import beat_init, setup_logging, worker_init, worker_process_init

from worker import broker_transport
from worker.logs import configure_logging
from worker.settings import get_settings

broker_transport.install()
app = Celery("tenant_provisioner")
app.config_from_object("celeryconfig")


@setup_logging.connect
def _use_our_logging(**_: Any) -> None:
    # Connecting this signal stops Celery from installing its own (unredacted) handlers.
    settings = get_settings()
    configure_logging(settings.log_level)


@worker_process_init.connect
def _fresh_connections_after_fork(**_: Any) -> None:
    # Connections opened before the fork belong to the parent (the pool and engine check pids).
    from worker import db  # noqa: PLC0415 - imported late to keep start-up light

    db.get_engine()


@worker_init.connect
def _pool_for_threads(sender: Any = None, **_: Any) -> None:
    # With --pool threads every task shares this process's engine and InfluxDB clients: each
    # running task needs a connection of its own (a run holds it through its InfluxDB calls).
    if "thread" in str(getattr(sender, "pool_cls", "")).lower():
        from worker import db  # noqa: PLC0415 - imported late to keep start-up light

        concurrency = getattr(sender, "concurrency", 0)
        if isinstance(concurrency, int):  # "auto" is resolved later: the default size stays
            db.size_pool(concurrency + 2)


@beat_init.connect
def _no_sent_events_from_beat(sender: Any = None, **_: Any) -> None:
    # Beat publishes bookkeeping (the webhooks poll every WEBHOOKS_POLL_SECONDS): a "task-sent"
    # event for each would fill Flower's memory of tasks. Workers' events still show the runs
    # (all but the poll's: worker.tasks.dispatch_webhooks). Beat's own process only.
    sender.app.conf.task_send_sent_event = False
