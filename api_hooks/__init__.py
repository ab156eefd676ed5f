"""The interface the operator UI and operators' scripts call. These names are fixed."""

from api_hooks.errors import (
    InvalidRetentionPeriod,
    InvalidTenantId,
    InvalidTenantName,
    TenantBusy,
    TenantError,
    TenantExists,
    TenantNotFound,
    UnknownNode,
)
from api_hooks.tenants import (
    adopt_database,
    create_tenant,
    delete_tenant,
    list_tenants,
    request_provisioning,
    tenant_influxdb_status,
    validate_tenant_id,
)

__all__ = [
    "InvalidRetentionPeriod",
    "InvalidTenantId",
    "InvalidTenantName",
    "TenantBusy",
    "TenantError",
    "TenantExists",
    "TenantNotFound",
    "UnknownNode",
    "adopt_database",
    "create_tenant",
    "delete_tenant",
    "list_tenants",
    "request_provisioning",
    "tenant_influxdb_status",
    "validate_tenant_id",
]
