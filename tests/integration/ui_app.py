"""An app in the style of the platform's UI (``services/ui_iot``), for the drop-in's tests.

Async routes, its own async database access (psycopg's async connection standing in for the
UI's asyncpg pool), its own cookie-based operator check, the operator router and the operator
console mounted behind that check - and the drop-in imported where the inline provisioning code
was. Served by uvicorn in a process of its own: ``uvicorn tests.integration.ui_app:app``.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import psycopg
from fastapi import Cookie, Depends, FastAPI, HTTPException

from api_hooks.aio import check_tenant_influxdb, provision_tenant_influxdb
from api_hooks.console import console_router
from api_hooks.router import operator_router

DSN = os.environ["UI_DATABASE_DSN"]
SESSION = os.environ["UI_SESSION"]


async def require_operator_admin(session: Annotated[str | None, Cookie()] = None) -> None:
    """The UI's own check: a session cookie of an operator admin."""
    if session != SESSION:
        raise HTTPException(401, detail="operator admin session required")


app = FastAPI(title="ui_iot (test double)")
app.include_router(operator_router(require_operator_admin))
# The operator console behind the same check; the UI signs its forms with a secret of its own.
app.include_router(console_router(require_operator_admin, csrf_secret=SESSION.encode()))
admin = [Depends(require_operator_admin)]


@app.post("/ui/tenants", dependencies=admin, status_code=201)
async def create_tenant(body: dict[str, Any]) -> dict[str, Any]:
    """The UI's create_tenant: its own insert, committed, then the drop-in where the inline
    provisioning was. ``rollback: true`` makes the UI's transaction fail after the insert."""
    tenant_id, name = str(body["tenant_id"]), str(body["name"])
    try:
        async with await psycopg.AsyncConnection.connect(DSN) as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO tenants (tenant_id, name, status) VALUES (%s, %s, 'active')",
                (tenant_id, name),
            )
            if body.get("rollback"):
                raise RuntimeError("the UI's transaction failed after the insert")
    except RuntimeError:
        pass  # a careless UI still calls the drop-in for the row it thinks it made
    provisioned = await provision_tenant_influxdb(tenant_id)
    return {"tenant_id": tenant_id, "name": name, "influxdb_provisioned": provisioned}


@app.get("/ui/tenants/{tenant_id}/stats", dependencies=admin)
async def get_tenant_stats(tenant_id: str) -> dict[str, Any]:
    """The UI's stats: its own fields plus the drop-in's ``influxdb`` block."""
    return {"tenant_id": tenant_id, "influxdb": await check_tenant_influxdb(tenant_id)}


@app.get("/ui/ping")
async def ping() -> dict[str, bool]:
    """Any other route of the UI: it must answer while others wait on InfluxDB."""
    return {"ok": True}
