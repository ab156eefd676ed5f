"""The interface the operator UI and operators' scripts call. These names are fixed."""

from api_hooks.errors import (
    InvalidRetentionPeriod,
    InvalidTenantId,
    InvalidTenantName,
    TenantError,
    TenantExists,
    TenantNotFound,
)
from api_hooks.tenants import (
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
    "TenantError",
    "TenantExists",
    "TenantNotFound",
    "create_tenant",
    "delete_tenant",
    "list_tenants",
    "request_provisioning",
    "tenant_influxdb_status",
    "validate_tenant_id",
]
