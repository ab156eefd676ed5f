"""The interface the operator UI and operators' scripts call. These names are fixed.

Synchronous; an async UI imports the same names, awaitable, from ``api_hooks.aio``, and the
drop-in for its inline provisioning code from there too (``api_hooks.dropin``).
"""

from api_hooks.errors import (
    InvalidCursor,
    InvalidRetentionPeriod,
    InvalidTenantId,
    InvalidTenantName,
    TenantBusy,
    TenantError,
    TenantExists,
    TenantNotFound,
    UnknownNode,
)
from api_hooks.events import audit_trail, tenant_events
from api_hooks.status import list_tenants, tenant_influxdb_status, tenant_stats
from api_hooks.tenants import (
    adopt_database,
    create_tenant,
    delete_tenant,
    request_provisioning,
    validate_tenant_id,
)

__all__ = [
    "InvalidCursor",
    "InvalidRetentionPeriod",
    "InvalidTenantId",
    "InvalidTenantName",
    "TenantBusy",
    "TenantError",
    "TenantExists",
    "TenantNotFound",
    "UnknownNode",
    "adopt_database",
    "audit_trail",
    "create_tenant",
    "delete_tenant",
    "list_tenants",
    "request_provisioning",
    "tenant_events",
    "tenant_influxdb_status",
    "tenant_stats",
    "validate_tenant_id",
]
