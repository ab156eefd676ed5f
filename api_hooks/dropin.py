"""A drop-in for the UI's inline provisioning code: the two functions it calls, by name and shape.

The UI's operator routes called ``provision_tenant_influxdb(tenant_id) -> bool`` (write a dummy
point inline; False when that failed) and ``check_tenant_influxdb(tenant_id) -> dict``. These
keep the names and the shapes, with today's meaning:

- ``provision_tenant_influxdb`` *accepts* a tenant the UI has already inserted and committed in
  its own transaction: its provisioning is queued (or, with the broker down, left to the
  reconciler). It never inserts a second row, and a row that was rolled back (or is not
  committed yet) is never queued: it answers False. Provisioning happens in the worker; the
  tenant shows ``pending``, then ``provisioned``.
- ``check_tenant_influxdb`` answers ``exists``, ``telemetry_count`` and ``error`` as before
  (bounded by LIVE_CHECK_TIMEOUT, never raising for InfluxDB's sake), plus where provisioning
  stands.

The UI is async: it imports the awaitable versions from ``api_hooks.aio``.
"""

from __future__ import annotations

from api_hooks.errors import TenantNotFound
from api_hooks.shapes import InfluxDBCheck
from api_hooks.status import tenant_influxdb_status
from api_hooks.tenants import request_provisioning, validate_tenant_id
from worker.states import ProvisioningState


def provision_tenant_influxdb(tenant_id: str) -> bool:
    """True when the tenant (inserted and committed by the caller) is accepted for
    provisioning; False when no such committed row exists - nothing is queued then.

    A failed tenant gets a fresh attempt budget, as with an operator retry. Raises
    InvalidTenantId for an id this worker cannot provision (the message names the rule).
    """
    tenant_id = validate_tenant_id(tenant_id)
    try:
        request_provisioning(tenant_id)
    except TenantNotFound:
        return False
    # Queued, or - broker down - owed work the reconciler enqueues: accepted either way.
    return True


def check_tenant_influxdb(tenant_id: str) -> InfluxDBCheck:
    """The inline check's answer - ``exists``, ``telemetry_count``, ``error`` - plus the
    provisioning state; bounded by LIVE_CHECK_TIMEOUT. Raises TenantNotFound, or
    InvalidTenantId for a malformed id no row has (an older row whose id breaks the rule,
    ``acme.corp``, is shown, its ``error`` naming the rule)."""
    status = tenant_influxdb_status(tenant_id, live=True)
    live = status["live"]
    assert live is not None  # asked for: always there
    return {
        "database": status["database"],
        "exists": live["exists"],
        "telemetry_count": live["telemetry_count"],
        "error": live["error"],
        "state": status["state"],
        "provisioned": status["state"] == ProvisioningState.PROVISIONED,
        "error_reason": status["error_reason"],
        "node": status["node"],
    }
