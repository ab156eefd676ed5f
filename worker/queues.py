"""Task and queue names, shared by the tasks and celeryconfig (which must not import tasks)."""

import enum

PROVISION_TASK = "worker.tasks.provision_tenant_influxdb"
DEPROVISION_TASK = "worker.tasks.deprovision_tenant_influxdb"
RECONCILE_TASK = "worker.tasks.reconcile_tenants"
PRUNE_TASK = "worker.tasks.prune_attempt_log"
WEBHOOKS_TASK = "worker.tasks.dispatch_webhooks"

PROVISIONING_QUEUE = "provisioning"  # new work: created tenants, operator retries, requeues
# The task's own backoff retries, and a message that takes over a scheduled retry's chain (the
# reconciler's take-over of an overdue one, an operator's retry of a retrying tenant).
RETRY_QUEUE = "provisioning-retry"
MAINTENANCE_QUEUE = "maintenance"  # the reconciler
ALL_QUEUES = (MAINTENANCE_QUEUE, RETRY_QUEUE, PROVISIONING_QUEUE)  # in priority order
# Webhook deliveries, consumed only by a worker of its own (`-Q webhooks`): a slow receiver
# never holds a provisioning worker. Not in ALL_QUEUES, so a worker started without -Q never
# takes it.
WEBHOOKS_QUEUE = "webhooks"


class Job(enum.StrEnum):
    """What a queued message asks a worker to do for a tenant."""

    PROVISION = "provision"
    DEPROVISION = "deprovision"
