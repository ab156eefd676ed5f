"""The platform's OLD inline approach, served the way the operator API is, as a latency baseline.

``POST /baseline/tenants`` stores the tenant like ``api_hooks.create_tenant`` does, but instead
of enqueueing it writes a dummy point to the tenant's InfluxDB database inside the request, as
the platform did before the worker existed: ``POST /api/v3/write_lp?db=telemetry_<id>`` with
``_init,tenant=<id> initialized=1i``, a 10 s timeout, and ``False`` on any failure.

Same FastAPI app shape, auth dependency, sync route (thread pool) and uvicorn settings as
``python -m api_hooks``, so a benchmark compares where the InfluxDB call happens and nothing
else. Run: ``python -m bench.inline_baseline --port P`` with the operator API's environment.
"""

from __future__ import annotations

import argparse
from typing import Any

import requests
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, HTTPException, status
from pydantic import BaseModel, ConfigDict
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from api_hooks import InvalidTenantId, InvalidTenantName, validate_tenant_id
from api_hooks.router import bearer_token_auth
from api_hooks.tenants import validate_tenant_name
from worker.db import get_engine
from worker.logs import configure_logging
from worker.models import ProvisioningState, tenants
from worker.settings import get_settings

INLINE_TIMEOUT_SECONDS = 10


class CreateTenantBody(BaseModel):
    """``{"tenant_id", "name"}``; unknown fields and non-string values are refused."""

    model_config = ConfigDict(extra="forbid", strict=True)

    tenant_id: str
    name: str


def initialize_influxdb_inline(tenant_id: str) -> bool:
    """The old code path: one write with a 10 s timeout; False when it did not succeed."""
    settings = get_settings()
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    if settings.influxdb_token:
        headers["Authorization"] = f"Bearer {settings.influxdb_token}"
    try:
        response = requests.post(
            f"{settings.influxdb_url}/api/v3/write_lp",
            params={"db": settings.database_name(tenant_id)},
            data=f"_init,tenant={tenant_id} initialized=1i".encode(),
            headers=headers,
            timeout=INLINE_TIMEOUT_SECONDS,
        )
    except requests.RequestException:
        return False
    return response.ok


def create_app() -> FastAPI:
    settings = get_settings()
    if not settings.operator_token:
        raise RuntimeError("OPERATOR_TOKEN must be set")
    application = FastAPI(title="inline provisioning baseline (benchmark only)")
    router = APIRouter(dependencies=[Depends(bearer_token_auth(settings.operator_token))])

    @router.post("/baseline/tenants", status_code=status.HTTP_201_CREATED)
    def post_tenant(body: CreateTenantBody) -> dict[str, Any]:
        try:
            tenant_id = validate_tenant_id(body.tenant_id)
            name = validate_tenant_name(body.name)
        except (InvalidTenantId, InvalidTenantName) as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from exc
        try:
            with get_engine().begin() as conn:
                conn.execute(
                    insert(tenants).values(
                        tenant_id=tenant_id,
                        name=name,
                        status="active",
                        influxdb_state=ProvisioningState.PENDING,
                    )
                )
        except IntegrityError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, detail="tenant exists") from exc
        initialized = initialize_influxdb_inline(tenant_id)
        return {
            "tenant_id": tenant_id,
            "name": name,
            "status": "created",
            "influxdb": {"initialized": initialized, "database": settings.database_name(tenant_id)},
        }

    @application.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    application.include_router(router)
    return application


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.inline_baseline", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    settings = get_settings()
    configure_logging(settings.log_level)
    uvicorn.run(create_app(), host=args.host, port=args.port, log_config=None, access_log=True)


if __name__ == "__main__":
    main()
