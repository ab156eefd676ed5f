"""Celery tasks: thin wrappers that open a connection, call one service, map the outcome.

Arguments are tenant ids only - never ORM objects, clients or secrets - because Flower shows
task arguments to operators. The logic lives in ``worker.provisioning`` and
``worker.reconcile``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from celery import Task
from sqlalchemy import update
from sqlalchemy.exc import DBAPIError

from worker.celery_app import app
from worker.db import get_engine
from worker.influxdb import shared_client
from worker.logs import log_context
from worker.models import tenants
from worker.provisioning import next_backoff, provision_tenant
from worker.queues import PROVISION_TASK, RECONCILE_TASK, RETRY_QUEUE
from worker.reconcile import reconcile
from worker.redaction import redact
from worker.settings import get_settings

logger = logging.getLogger(__name__)


@app.task(bind=True, name=PROVISION_TASK, max_retries=None, acks_late=True)
def provision_tenant_influxdb(self: Task, tenant_id: str) -> dict[str, Any]:
    """Ensure the tenant's InfluxDB database; retry transient failures with backoff."""
    settings = get_settings()
    with log_context(tenant_id=str(tenant_id), task_id=self.request.id):
        if not isinstance(tenant_id, str):
            logger.error("ignoring a message whose tenant id is not a string")
            return {"result": "not_found"}
        try:
            with get_engine().connect() as conn:
                outcome = provision_tenant(conn, tenant_id, shared_client(), settings)
        except DBAPIError as exc:
            # Postgres went away mid-run: we cannot even record it. Retry a few times; beyond
            # that the reconciler finds the tenant stuck and re-enqueues it.
            retries = self.request.retries + 1
            if retries >= settings.max_attempts:
                raise
            delay = next_backoff(
                retries, settings.backoff_base_seconds, settings.backoff_cap_seconds
            )
            logger.warning("database error, retrying in %.1fs: %s", delay, type(exc).__name__)
            raise self.retry(countdown=delay, exc=exc, queue=RETRY_QUEUE) from exc
        if outcome.retry_in is not None:
            raise self.retry(countdown=outcome.retry_in, queue=RETRY_QUEUE)
        return asdict(outcome)


@app.task(name=RECONCILE_TASK, acks_late=False)
def reconcile_tenants() -> dict[str, Any]:
    """Re-enqueue owed work and repair drift; one summary per run (see worker.reconcile)."""
    summary = reconcile(get_engine(), shared_client(), get_settings(), publish_provisioning)
    return summary.as_dict()


def publish_provisioning(tenant_id: str) -> bool:
    """Publish one provisioning message without retrying; True when the broker took it."""
    try:
        provision_tenant_influxdb.apply_async(args=(tenant_id,), retry=False)
    except Exception as exc:
        message = redact(f"{type(exc).__name__}: {exc}", get_settings().secrets())
        logger.warning(
            "could not queue provisioning, the reconciler will: %s",
            message,
            extra={"tenant_id": tenant_id},
        )
        return False
    return True


def enqueue_provisioning(tenant_id: str) -> bool:
    """Publish a provisioning message and record when; True when the broker took it.

    Never raises for a broker problem: the tenant is already committed as owed work, and the
    reconciler re-enqueues whatever was not queued.
    """
    with log_context(tenant_id=tenant_id):
        if not publish_provisioning(tenant_id):
            return False
        try:
            with get_engine().begin() as conn:
                conn.execute(
                    update(tenants)
                    .where(tenants.c.tenant_id == tenant_id)
                    .values(influxdb_enqueued_at=datetime.now(UTC))
                )
        except DBAPIError:
            logger.warning("queued, but could not record when", exc_info=True)
        return True
