"""The console's webhooks page (``/operator/console/webhooks``): every endpoint, its URL, the
deliveries waiting for it, since when it fails, and whether it is disabled (registered by
``api_hooks.console.pages``). Read-only: re-enabling is ``tenantctl webhooks --enable NAME``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from api_hooks.cli_webhooks import state_of
from api_hooks.console.render import Pages
from worker.db import get_engine
from worker.webhook_dispatch import endpoint_status, file_error

# The badge of each state, in the console's own classes (no style of its own: the CSP).
BADGES = {
    "ok": "state-provisioned",
    "failing": "state-retrying",
    "disabled": "state-failed",
    "not configured": "state-deprovisioning",
}


def webhooks_route(router: APIRouter, pages: Pages) -> None:
    """Add ``GET /webhooks`` (route name ``console_webhooks``) to the console's router."""

    @router.get("/webhooks", name="console_webhooks", response_class=HTMLResponse)
    def webhooks(request: Request) -> Response:
        with get_engine().connect() as conn:
            rows = endpoint_status(conn)
            broken = file_error(conn)
        endpoints = [{**row, "state": state_of(row)} for row in rows]
        problem = None
        if broken is not None:
            problem = (
                f"The webhooks worker cannot use its webhooks file (since "
                f"{broken[1].isoformat(timespec='seconds')}): {broken[0]}. Nothing is sent to "
                "any endpoint until it is fixed, whatever the states below say."
            )
        return pages.render(
            request, "webhooks.html", endpoints=endpoints, badges=BADGES, problem=problem
        )
