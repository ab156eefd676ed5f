"""Errors the operator UI catches from ``api_hooks``."""

from __future__ import annotations


class TenantError(Exception):
    """Base of every error raised by the tenant hooks."""


class InvalidTenantId(TenantError, ValueError):
    """The tenant id breaks a naming rule; the message names the rule."""


class InvalidTenantName(TenantError, ValueError):
    """The tenant's display name is empty, too long or not text."""


class InvalidRetentionPeriod(TenantError, ValueError):
    """The retention period is not a duration InfluxDB accepts (e.g. 30d, 12h)."""


class TenantExists(TenantError):
    """A tenant with this id already exists."""


class TenantNotFound(TenantError, LookupError):
    """No tenant has this id."""


class UnknownNode(TenantError, ValueError):
    """The node named is not in the node pool, or a node must be named and was not."""


class TenantBusy(TenantError):
    """The tenant's state does not allow the action now (e.g. adopting while provisioned)."""


class InvalidCursor(TenantError, ValueError):
    """An event page's cursor or size is not valid; the message says which and why."""
