"""Celery tasks: thin wrappers that open a connection, call one service, map the outcome.

Arguments are tenant ids only - never ORM objects, clients or secrets - because Flower shows
task arguments to operators. The logic lives in ``worker.provisioning``,
``worker.deprovisioning``, ``worker.reconcile`` and ``worker.attempts``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from celery import Task
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from worker import attempts, events, locations, store
from worker.broker_gate import BrokerGate
from worker.celery_app import app
from worker.clock import DATABASE_NOW, database_clock
from worker.db import get_engine
from worker.deprovisioning import deprovision_tenant
from worker.logs import log_context
from worker.nodes import shared_pool
from worker.provisioning import provision_tenant
from worker.queues import (
    DEPROVISION_TASK,
    PROVISION_TASK,
    PRUNE_TASK,
    RECONCILE_TASK,
    RETRY_QUEUE,
    WEBHOOKS_TASK,
    Job,
)
from worker.reconcile import reconcile
from worker.redaction import redact
from worker.runs import Delivery, Outcome, next_backoff
from worker.settings import get_settings
from worker.states import RunResult
from worker.webhook_config import WebhookConfigError, configured_endpoints
from worker.webhook_dispatch import Policy, dispatch, record_file_error

logger = logging.getLogger(__name__)

PRUNE_BATCH_SIZE = 5000  # rows per DELETE: short transactions beside the workers' writes
PRUNE_BUDGET_SECONDS = 240.0  # the rest waits for the next hourly run, inside the time limit


@app.task(bind=True, name=PROVISION_TASK, max_retries=None, acks_late=True)
def provision_tenant_influxdb(self: Task, tenant_id: str) -> dict[str, Any]:
    """Ensure the tenant's InfluxDB database; retry transient failures with backoff."""
    return _run(self, tenant_id, provision_tenant)


@app.task(bind=True, name=DEPROVISION_TASK, max_retries=None, acks_late=True)
def deprovision_tenant_influxdb(self: Task, tenant_id: str) -> dict[str, Any]:
    """Delete a deleted tenant's database, then the tenant; retry transient failures."""
    return _run(self, tenant_id, deprovision_tenant)


def _run(task: Task, tenant_id: str, service: Callable[..., Outcome]) -> dict[str, Any]:
    settings = get_settings()
    with log_context(tenant_id=str(tenant_id), task_id=task.request.id):
        if not isinstance(tenant_id, str):
            logger.error("ignoring a message whose tenant id is not a string")
            return {"result": RunResult.NOT_FOUND.value}
        # Which message this is, so a run can tell its own chain's retry from a duplicate.
        delivery = Delivery.of(task.request.id, task.request.retries)
        try:
            with get_engine().connect() as conn:
                outcome = service(conn, tenant_id, shared_pool(), settings, delivery=delivery)
        except DBAPIError as exc:
            # Postgres went away mid-run: we cannot even record it. Retry a few times; beyond
            # that the reconciler finds the tenant stuck and re-enqueues it.
            retries = task.request.retries + 1
            if retries >= settings.max_attempts:
                raise
            delay = next_backoff(
                retries, settings.backoff_base_seconds, settings.backoff_cap_seconds
            )
            logger.warning("database error, retrying in %.1fs: %s", delay, type(exc).__name__)
            raise task.retry(countdown=delay, exc=exc, queue=RETRY_QUEUE) from exc
        for waiting in outcome.unwaited:  # room given to them: placed now, not at the reconcile
            enqueue(waiting, Job.PROVISION)  # (before a retry of this run's own, which raises)
        if outcome.retry_in is not None:
            countdown = outcome.retry_in
            if outcome.result is RunResult.BUSY:  # wait for the lock holder, longer each time
                countdown = next_backoff(
                    task.request.retries + 1,
                    settings.backoff_base_seconds,
                    settings.backoff_cap_seconds,
                )
            raise task.retry(countdown=countdown, queue=RETRY_QUEUE)
        return outcome.as_dict()


# Its own time limits: one run lists every node (in parallel, each bounded by the client's
# timeouts) and scans every tenant; the provisioning limits are sized for one tenant.
@app.task(name=RECONCILE_TASK, acks_late=False, soft_time_limit=300, time_limit=330)
def reconcile_tenants() -> dict[str, Any]:
    """Re-enqueue owed work and repair drift; one summary per run (see worker.reconcile)."""
    summary = reconcile(get_engine(), shared_pool(), get_settings(), publish)
    return summary.as_dict()


@app.task(name=PRUNE_TASK, acks_late=False, soft_time_limit=300, time_limit=330)
def prune_attempt_log() -> dict[str, Any]:
    """Delete attempt-log rows older than PROVISIONING_ATTEMPTS_RETENTION_DAYS, in batches; the
    running totals that /metrics reads are kept. Then the location map's tombstones older
    than a week (one batch an hour), then events older than EVENTS_RETENTION_DAYS (each
    tenant's last one kept). Stops early before its time limit."""
    settings = get_settings()
    deadline = time.monotonic() + PRUNE_BUDGET_SECONDS
    with get_engine().connect() as conn:
        now = database_clock(conn)()
        older_than = now - timedelta(days=settings.attempts_retention_days)
        deleted = attempts.prune_attempt_log(
            conn, older_than, PRUNE_BATCH_SIZE, stop=lambda: time.monotonic() > deadline
        )
        tombstones = locations.prune_tombstones(
            conn, now - locations.TOMBSTONE_RETENTION, PRUNE_BATCH_SIZE
        )
        retention = timedelta(days=settings.events_retention_days)
        events_before = now - retention
        pruned_events = events.prune(
            conn,
            events_before,
            PRUNE_BATCH_SIZE,
            stop=lambda: time.monotonic() > deadline,
            # What a webhook endpoint has not had is kept one retention longer, no more.
            held_before=now - 2 * retention,
        )
    logger.info(
        "attempt log pruned: %d rows older than %s; %d location tombstones; %d events",
        deleted,
        older_than.isoformat(),
        tombstones,
        pruned_events,
    )
    return {
        "deleted": deleted,
        "older_than": older_than.isoformat(),
        "tombstones": tombstones,
        "events": pruned_events,
        "events_older_than": events_before.isoformat(),
    }


# On the webhooks queue only (its own worker): a slow receiver never holds a provisioning run.
# A run spends at most its budget per endpoint, plus the answers then in flight.
# No task events (send_events) and no Celery log lines (worker.logs.QuietPolls): a poll every
# WEBHOOKS_POLL_SECONDS would fill Flower's memory of tasks (10,000 by default) within hours,
# pushing the provisioning tasks out. Its work shows in tenantctl webhooks, the console, /metrics.
@app.task(
    name=WEBHOOKS_TASK, acks_late=False, soft_time_limit=120, time_limit=150, send_events=False
)
def dispatch_webhooks() -> dict[str, Any]:
    """Fan out new events and deliver the due webhooks (worker.webhook_dispatch). No
    argument: the endpoints and their secrets are read from WEBHOOKS_FILE here. Logs one line
    when the run fanned out or sent something."""
    settings = get_settings()
    try:
        endpoints = configured_endpoints(settings.webhooks_file)
    except WebhookConfigError as exc:
        error = store.clean_error(str(exc), settings.secrets())  # names the entry, no secret
        logger.error("webhooks not sent: %s", error)
        with get_engine().connect() as conn:  # for tenantctl webhooks, the console, /metrics
            record_file_error(conn, error, database_clock(conn)())
        return {"error": error}
    with get_engine().connect() as conn:
        summary = dispatch(conn, endpoints, Policy.of(settings), secrets=settings.secrets())
    if summary.fanned_out or summary.delivered or summary.failed:
        logger.info(
            "webhooks: %d deliveries made from new events, %d delivered, %d failed",
            summary.fanned_out,
            summary.delivered,
            summary.failed,
        )
    return summary.as_dict()


_gate = BrokerGate()  # a dead broker is tried by one request at a time (worker.broker_gate)


def publish(tenant_id: str, job: Job = Job.PROVISION, task_id: str | None = None) -> bool:
    """Publish one message for ``job`` without retrying; True when the broker took it.

    ``task_id`` names the message when the caller has recorded it as the owner of the
    tenant's retry chain (``worker.runs``): the chain's next run, on the retry queue with the
    chain's own retries. Behind a backlog of new work longer than the reconciler's grace, a
    take-over would wait there until the next run took the chain over again, and again.
    """
    task = deprovision_tenant_influxdb if job is Job.DEPROVISION else provision_tenant_influxdb
    timeout = get_settings().broker_publish_timeout

    def send() -> None:
        with _gate.publisher(app, timeout) as producer:
            task.apply_async(
                args=(tenant_id,),
                task_id=task_id,
                queue=RETRY_QUEUE if task_id is not None else None,
                producer=producer,
                retry=False,
                # RabbitMQ (publisher confirms): how long to wait for the broker's ack, and for
                # the socket to take the message; Redis ignores both (its socket timeouts bound
                # it).
                confirm_timeout=timeout,
                timeout=timeout,
                # Celery would put the publisher's time limits in the message, and a worker
                # obeys the message: the API's settings would govern the worker's runs. None
                # leaves the worker's own PROVISION_SOFT_TIME_LIMIT / PROVISION_TIME_LIMIT.
                time_limit=None,
                soft_time_limit=None,
            )

    try:
        if _gate.down:  # a probe: on a thread of its own, this one waiting one timeout at most
            _gate.try_aside(send, timeout)
        else:
            send()
    except Exception as exc:
        message = redact(f"{type(exc).__name__}: {exc}", get_settings().secrets())
        logger.warning(
            "could not queue %s, the reconciler will: %s",
            job.value,
            message,
            extra={"tenant_id": tenant_id},
        )
        return False
    return True


def enqueue(tenant_id: str, job: Job = Job.PROVISION, task_id: str | None = None) -> bool:
    """Publish a message for ``job`` and record when; True when the broker took it.

    Never raises for a broker problem: the tenant is already committed as owed work, and the
    reconciler re-enqueues whatever was not queued.
    """
    with log_context(tenant_id=tenant_id):
        if not publish(tenant_id, job, task_id):
            return False
        try:
            with get_engine().begin() as conn:
                store.mark_enqueued(conn, [tenant_id], DATABASE_NOW)
        except (DBAPIError, PoolTimeout):  # (a request's wait for a pooled connection, bounded)
            logger.warning("queued, but could not record when", exc_info=True)
        return True
