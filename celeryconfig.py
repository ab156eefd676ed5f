"""Celery configuration: plain lowercase settings, schedules and routes in this one place.

Values come from ``worker.settings`` (the environment), so the worker, beat, Flower and the
operator API all agree. Why each reliability setting is what it is:

- late acks + reject on worker lost: a task whose worker dies is delivered again, not lost;
- prefetch 1: a slow InfluxDB call does not hold other tenants' messages hostage;
- visibility timeout > 2 x (backoff cap + hard time limit), checked in settings: Redis does not
  re-deliver a retry that is still waiting out its backoff in the worker; on RabbitMQ the same
  check holds against the server's consumer_timeout, which closes the worker's channel instead;
- RabbitMQ: durable queues, persistent messages and publisher confirms, so a message the broker
  took survives a broker restart (Redis without persistence loses it; the reconciler re-queues);
- results ignored: Postgres, not the result backend, says whether a tenant is provisioned.
"""

from typing import Any

from kombu.entity import Exchange, Queue

from worker.queues import (
    ALL_QUEUES,
    DEPROVISION_TASK,
    MAINTENANCE_QUEUE,
    PROVISION_TASK,
    PROVISIONING_QUEUE,
    PRUNE_TASK,
    RECONCILE_TASK,
    WEBHOOKS_QUEUE,
    WEBHOOKS_TASK,
)
from worker.settings import Broker, get_settings

_settings = get_settings()
_PRUNE_INTERVAL_SECONDS = 3600.0  # the log is kept for days: hourly pruning keeps batches small

broker_url = _settings.broker_url
broker_connection_retry_on_startup = True
# Bounds connecting (TCP and, on RabbitMQ, the AMQP handshake) wherever a process publishes.
broker_connection_timeout = _settings.broker_publish_timeout
REDIS_SOCKET_TIMEOUT_FLOOR = 2.0
broker_transport_options: dict[str, Any]
if _settings.broker is Broker.RABBITMQ:
    broker_transport_options = {
        # Every publish waits for the broker's ack: a message counts as queued only once
        # RabbitMQ has it (persistent messages in durable queues: written to disk). How long a
        # publisher waits for that ack is bounded in worker.tasks.publish.
        "confirm_publish": True,
        # One connection attempt per publish: kombu would otherwise sleep 2 s and try again
        # while within broker_connection_timeout, so even a refused connection would hold a
        # request for 2 s. The worker's consumer reconnects by its broker_connection_* settings,
        # and a worker's own retries by task_publish_retry_policy, not by this.
        "max_retries": 0,
    }
else:
    broker_transport_options = {
        "visibility_timeout": _settings.broker_visibility_timeout,
        # Bound how long publishing may block when Redis is down, blackholed or silent (a
        # connection accepted, no answer): CELERY_PUBLISH_TIMEOUT, at least 2 s - the worker's
        # consumer waits up to 1 s for each BRPOP reply on the same settings.
        "socket_connect_timeout": _settings.broker_publish_timeout,
        "socket_timeout": max(_settings.broker_publish_timeout, REDIS_SOCKET_TIMEOUT_FLOOR),
        # Poll the queues in the order of task_queues (see below), not round robin.
        "queue_order_strategy": "priority",
        # One connection attempt per publish, as on RabbitMQ above: a refused connection is
        # known at once, and a create answers at once (queued: false) instead of after kombu's
        # 2 s sleep and second try. The consumer reconnects by broker_connection_* as before.
        "max_retries": 0,
    }

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
task_ignore_result = True
result_backend = None

task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
task_soft_time_limit = _settings.task_soft_time_limit
task_time_limit = _settings.task_time_limit

# Flower and `celery events` need these to show tasks.
worker_send_task_events = True
task_send_sent_event = True

# Three queues, all consumed by every worker. On Redis they are polled in priority order: the
# reconciler first (it must not expire behind a backlog), then the task's own retries and the
# messages that take over a scheduled retry's chain (so their delays stay what the backoff says,
# and started work finishes before new work starts), then new work. A retry is an ETA message
# the worker holds until due, so retries never starve new work for long.
# RabbitMQ has no order between queues: it pushes from every queue the worker consumes, as the
# worker's prefetch window (shared by the three queues on its channel: concurrency x
# worker_prefetch_multiplier) frees up. A reconcile message behind a backlog of new work waits
# for about one window of runs, not the whole backlog - and if it waits longer than its
# interval it expires, and the next run comes. Where that is not enough, run a worker of its
# own for the maintenance queue (`celery -A worker worker -Q maintenance`).
task_default_queue = PROVISIONING_QUEUE
# Each queue with its own exchange and routing key: a Queue without them inherits the default
# exchange and key, and a message for one queue would be copied into all three. Durable
# queues and exchanges (kombu's default, spelled out) and persistent messages (Celery's
# default, likewise) are what lets RabbitMQ keep queued work across its own restart; Redis
# ignores both.
task_queues = tuple(
    Queue(name, Exchange(name, type="direct", durable=True), routing_key=name, durable=True)
    for name in ALL_QUEUES
)
task_default_delivery_mode = "persistent"
task_routes = {
    PROVISION_TASK: {"queue": PROVISIONING_QUEUE},
    DEPROVISION_TASK: {"queue": PROVISIONING_QUEUE},
    RECONCILE_TASK: {"queue": MAINTENANCE_QUEUE},
    PRUNE_TASK: {"queue": MAINTENANCE_QUEUE},
    # Not in task_queues: only a worker started with `-Q webhooks` consumes it (Celery declares
    # it on first use, with an exchange and routing key of its own name, durable, like those).
    WEBHOOKS_TASK: {"queue": WEBHOOKS_QUEUE},
}

timezone = "UTC"
enable_utc = True
imports = ("worker.tasks",)

beat_schedule = {
    "reconcile-tenants": {
        "task": RECONCILE_TASK,
        "schedule": _settings.reconcile_interval_seconds,
        # A run that could not start within its interval is dropped, not piled up.
        "options": {"expires": _settings.reconcile_interval_seconds},
    },
    # The attempt log keeps PROVISIONING_ATTEMPTS_RETENTION_DAYS; the totals keep everything.
    "prune-attempt-log": {
        "task": PRUNE_TASK,
        "schedule": _PRUNE_INTERVAL_SECONDS,
        "options": {"expires": _PRUNE_INTERVAL_SECONDS},
    },
    # Webhook deliveries (docs/webhooks.md): a run that could not start in time is dropped.
    "dispatch-webhooks": {
        "task": WEBHOOKS_TASK,
        "schedule": _settings.webhooks_poll_seconds,
        "options": {"expires": _settings.webhooks_poll_seconds},
    },
}
