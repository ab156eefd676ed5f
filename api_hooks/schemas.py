"""The bodies of the operator API as pydantic models, for validation of answers and OpenAPI.

Request bodies are parsed by hand (``api_hooks.bodies``); their models here only describe them
in the OpenAPI document and name their fields for the parser, so the two cannot drift apart.
Answers built from the hooks' TypedDicts keep those: the hooks return plain dicts.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api_hooks.shapes import InfluxDBStatus
from api_hooks.tenants import TENANT_ID_MAX_LENGTH, TENANT_ID_PATTERN, TENANT_NAME_MAX_LENGTH
from worker.settings import RETENTION_PERIOD, RETENTION_PERIOD_RULE

TENANT_ID_RULE = (
    f"1 to {TENANT_ID_MAX_LENGTH} ASCII letters, digits, '_' and '-', starting with a letter or "
    "digit; it names the tenant's InfluxDB database"
)

# JSON Schema patterns are ECMA regexes: no \A and \Z, the same anchors spelled ^ and $.
_RETENTION_PERIOD_PATTERN = RETENTION_PERIOD.pattern.replace(r"\A", "^").replace(r"\Z", "$")


class CreateTenantRequest(BaseModel):
    """A new tenant. Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    tenant_id: str = Field(
        description=TENANT_ID_RULE,
        min_length=1,
        max_length=TENANT_ID_MAX_LENGTH,
        pattern=TENANT_ID_PATTERN,
        examples=["acme-prod"],
    )
    name: str = Field(
        description=f"Display name shown to operators: 1 to {TENANT_NAME_MAX_LENGTH} characters "
        "once surrounding spaces are stripped; no control characters (at the edges neither), "
        "line breaks, bidirectional or other invisible formatting characters (emoji sequences "
        "are fine)",
        examples=["Acme Corp (production)"],
    )
    retention_period: str | None = Field(
        default=None,
        description=f"How long InfluxDB keeps the tenant's data: {RETENTION_PERIOD_RULE}, e.g. "
        "30d, 12h, 2w, 3mo or 1y (InfluxDB 3 Core takes no minutes and no compound values "
        "such as 1d12h). Absent or null: INFLUXDB_RETENTION_PERIOD (unset: kept forever)",
        pattern=_RETENTION_PERIOD_PATTERN,
        examples=["30d"],
    )


class AdoptRequest(BaseModel):
    """Where the database to adopt is. The body may also be empty."""

    model_config = ConfigDict(extra="forbid")

    node: str | None = Field(
        default=None,
        description="Name of the node (a server of the pool) holding the database of the "
        "tenant's name. Absent or null: the tenant's recorded server",
        examples=["influx-a"],
    )


def documented_body(model: type[BaseModel], *, required: bool) -> dict[str, Any]:
    """``openapi_extra=`` describing a JSON body that a dependency parses by hand."""
    schema = model.model_json_schema()
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": schema}},
        }
    }


class TenantStats(BaseModel):
    """A tenant's provisioning state and, unless ``live=false``, what InfluxDB says now - the
    body of the UI's own tenant stats, so the UI can return it unchanged."""

    tenant_id: str
    name: str | None = Field(description="The display name (null in a row the UI made so)")
    status: str | None = Field(description="The UI's own tenant status, e.g. active")
    influxdb: InfluxDBStatus


class RetryAccepted(BaseModel):
    """Provisioning (or a deletion in progress) runs again now."""

    tenant_id: str
    queued: bool = Field(
        description="The message reached the broker; false: the reconciler enqueues it later"
    )


class AdoptAccepted(BaseModel):
    """The database is declared the tenant's own; provisioning runs with it."""

    tenant_id: str
    queued: bool = Field(
        description="The message reached the broker; false: the reconciler enqueues it later"
    )


class Health(BaseModel):
    """The API process answers."""

    status: Literal["ok"]
