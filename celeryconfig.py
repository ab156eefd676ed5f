"""Celery configuration: plain lowercase settings, schedules and routes in this one place.

Values come from ``worker.settings`` (the environment), so the worker, beat, Flower and the
operator API all agree. Why each reliability setting is what it is:

- late acks + reject on worker lost: a task whose worker dies is delivered again, not lost;
- prefetch 1: a slow InfluxDB call does not hold other tenants' messages hostage;
- visibility timeout > 2 x (backoff cap + hard time limit), checked in settings: Redis does not
  re-deliver a retry that is still waiting out its backoff in the worker;
- results ignored: Postgres, not the result backend, says whether a tenant is provisioned.
"""

from kombu.entity import Exchange, Queue

from worker.queues import (
    ALL_QUEUES,
    DEPROVISION_TASK,
    MAINTENANCE_QUEUE,
    PROVISION_TASK,
    PROVISIONING_QUEUE,
    PRUNE_TASK,
    RECONCILE_TASK,
)
from worker.settings import get_settings

_settings = get_settings()
_PRUNE_INTERVAL_SECONDS = 3600.0  # the log is kept for days: hourly pruning keeps batches small

broker_url = _settings.broker_url
broker_connection_retry_on_startup = True
broker_connection_timeout = _settings.broker_publish_timeout
broker_transport_options = {
    "visibility_timeout": _settings.broker_visibility_timeout,
    # Bound how long publishing may block when Redis is down or blackholed.
    "socket_connect_timeout": _settings.broker_publish_timeout,
    "socket_timeout": max(_settings.broker_publish_timeout, 5.0),
    # Poll the queues in the order of task_queues (see below), not round robin.
    "queue_order_strategy": "priority",
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

# Three queues, all consumed by every worker, polled in priority order: the reconciler first
# (it must not expire behind a backlog), then the task's own retries (so their delays stay what
# the backoff says, and started work finishes before new work starts), then new work. A retry
# is an ETA message the worker holds until due, so retries never starve new work for long.
task_default_queue = PROVISIONING_QUEUE
# Each queue with its own exchange and routing key: a Queue without them inherits the default
# exchange and key, and a message for one queue would be copied into all three.
task_queues = tuple(
    Queue(name, Exchange(name, type="direct"), routing_key=name) for name in ALL_QUEUES
)
task_routes = {
    PROVISION_TASK: {"queue": PROVISIONING_QUEUE},
    DEPROVISION_TASK: {"queue": PROVISIONING_QUEUE},
    RECONCILE_TASK: {"queue": MAINTENANCE_QUEUE},
    PRUNE_TASK: {"queue": MAINTENANCE_QUEUE},
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
}
