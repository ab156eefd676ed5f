"""Task and queue names, shared by the tasks and celeryconfig (which must not import tasks)."""

PROVISION_TASK = "worker.tasks.provision_tenant_influxdb"
RECONCILE_TASK = "worker.tasks.reconcile_tenants"

PROVISIONING_QUEUE = "provisioning"  # new work: created tenants, operator retries, requeues
RETRY_QUEUE = "provisioning-retry"  # the task's own backoff retries
MAINTENANCE_QUEUE = "maintenance"  # the reconciler
ALL_QUEUES = (MAINTENANCE_QUEUE, RETRY_QUEUE, PROVISIONING_QUEUE)  # in priority order
