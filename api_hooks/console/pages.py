"""The console's pages: overview, tenants, one tenant (with its timeline), and its two actions
(retry, delete); strays (databases nobody placed, reported by the reconciler); the audit
trail of operator actions.

Read-only pages are GET; actions are POST with a CSRF token and answer with a redirect to the
page that shows what happened (post/redirect/get). Actions call the same hooks as the HTTP API.
Sync routes on purpose: FastAPI runs them in its thread pool, so a live check bounded by
LIVE_CHECK_TIMEOUT never blocks the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api_hooks.actors import actor_from, identified
from api_hooks.console import reads
from api_hooks.console.guard import CSRF_FIELD, CsrfGuard
from api_hooks.console.live import timeline_route
from api_hooks.console.render import Pages
from api_hooks.console.webhooks import webhooks_route
from api_hooks.errors import InvalidTenantId, TenantNotFound
from api_hooks.status import node_report, tenant_stats
from api_hooks.tenants import delete_tenant, request_provisioning, validate_tenant_id
from worker.db import get_engine
from worker.event_reads import timeline
from worker.events import Route
from worker.settings import get_settings
from worker.states import STATES
from worker.strays import stray_rows

PREFIX = "/operator/console"
MAX_FORM_BYTES = 16 * 1024  # a console form holds a token and a few short fields

# What an action did, shown on the page it redirects to. Only these fixed texts are shown:
# a query string never puts words of its own on a page.
DONE = {
    "retry-queued": "Retry queued: the worker runs this tenant's provisioning now.",
    "retry-not-queued": "Retry recorded, but the broker did not take the message: the "
    "reconciler queues it at its next run.",
    "delete-queued": "Deletion queued: the worker deletes the database, then the tenant.",
    "delete-not-queued": "Deletion recorded, but the broker did not take the message: the "
    "reconciler queues it at its next run.",
}
FormField = Annotated[str | None, Form()]


def console_router(
    require_operator: Callable[..., Any],
    csrf_secret: bytes | Callable[[], bytes],
    *,
    sign_out_route: str | None = None,
    secure_cookies: bool = False,
) -> APIRouter:
    """The console's pages under ``/operator/console``, every one behind ``require_operator``
    (the UI passes its own operator check; what it returns is the actor of the actions,
    ``api_hooks.actors``). ``csrf_secret`` signs the forms' tokens: a secret of the app's,
    the same in every process that serves the console. ``secure_cookies``: served only over
    HTTPS (behind a TLS proxy), so the CSRF cookie is ``Secure`` whatever the proxy forwards."""
    pages = Pages(
        CsrfGuard(csrf_secret), sign_out_route=sign_out_route, secure_cookies=secure_cookies
    )
    router = APIRouter(
        prefix=PREFIX,
        dependencies=[Depends(identified(require_operator))],
        include_in_schema=False,
        # Refused (413) as it arrives, before the operator check: FastAPI parses a form
        # before any dependency runs.
        max_body_size=MAX_FORM_BYTES,
    )

    @router.get("", name="console_overview", response_class=HTMLResponse)
    def overview(request: Request) -> Response:
        with get_engine().connect() as conn:
            summary = reads.overview(conn)
        return pages.render(request, "overview.html", summary=summary, nodes=node_report())

    @router.get("/tenants", name="console_tenants", response_class=HTMLResponse)
    def tenants(
        request: Request,
        state: Annotated[str | None, Query()] = None,
        q: Annotated[str | None, Query(max_length=100)] = None,
        after: Annotated[str | None, Query(max_length=400)] = None,
    ) -> Response:
        state, q = (state or None), (q or "").strip() or None
        try:
            with get_engine().connect() as conn:
                page = reads.tenants_page(conn, state, q, after)
            problem: str | None = None
        except reads.BadQuery as exc:
            page, problem = reads.TenantsPage([], None), str(exc)
        return pages.render(
            request,
            "tenants.html",
            status.HTTP_422_UNPROCESSABLE_CONTENT if problem else status.HTTP_200_OK,
            page=page,
            state=state if state in STATES else None,
            q=q or "",
            first_page=after is None,
            states=STATES,
            problem=problem,
        )

    @router.get("/strays", name="console_strays", response_class=HTMLResponse)
    def strays(request: Request) -> Response:
        with get_engine().connect() as conn:
            rows = stray_rows(conn)
        return pages.render(request, "strays.html", rows=rows)

    _audit_route(router, pages)  # the audit trail, and the tenant page's live timeline

    @router.get("/tenants/{tenant_id}", name="console_tenant", response_class=HTMLResponse)
    def tenant(
        request: Request, tenant_id: str, done: Annotated[str | None, Query()] = None
    ) -> Response:
        try:  # (an older row's id outside the rule: listed, not paged; nothing can be done)
            stats = tenant_stats(validate_tenant_id(tenant_id), live=True)
        except (InvalidTenantId, TenantNotFound) as exc:
            return _not_found(request, exc, deleted=done == "delete-queued")
        with get_engine().connect() as conn:
            attempts = reads.attempt_history(conn, stats["tenant_id"])
            events = timeline(conn, stats["tenant_id"], reads.EVENTS_SHOWN)
        return pages.render(
            request,
            "tenant.html",
            stats=stats,
            attempts=attempts,
            timeline=events,
            flower_url=get_settings().flower_url,
            notice=DONE.get(done or ""),
        )

    @router.post("/tenants/{tenant_id}/retry", name="console_retry")
    def retry(request: Request, tenant_id: str, csrf_token: FormField = None) -> Response:
        if refused := pages.csrf.refusal(request, {CSRF_FIELD: csrf_token}):
            return pages.render(request, "refused.html", status.HTTP_403_FORBIDDEN, problem=refused)
        try:
            queued = request_provisioning(tenant_id, actor=actor_from(request), route=Route.CONSOLE)
        except (InvalidTenantId, TenantNotFound) as exc:
            return _not_found(request, exc)
        done = "retry-queued" if queued else "retry-not-queued"
        return _see(request, "console_tenant", done, tenant_id=tenant_id)

    @router.get(
        "/tenants/{tenant_id}/delete", name="console_delete_confirm", response_class=HTMLResponse
    )
    def delete_confirm(request: Request, tenant_id: str) -> Response:
        try:
            stats = tenant_stats(validate_tenant_id(tenant_id), live=False)
        except (InvalidTenantId, TenantNotFound) as exc:
            return _not_found(request, exc)
        return pages.render(request, "delete.html", stats=stats)

    @router.post("/tenants/{tenant_id}/delete", name="console_delete")
    def delete(
        request: Request,
        tenant_id: str,
        csrf_token: FormField = None,
        confirm: FormField = None,
    ) -> Response:
        if refused := pages.csrf.refusal(request, {CSRF_FIELD: csrf_token}):
            return pages.render(request, "refused.html", status.HTTP_403_FORBIDDEN, problem=refused)
        try:
            stats = tenant_stats(validate_tenant_id(tenant_id), live=False)
        except (InvalidTenantId, TenantNotFound) as exc:
            return _not_found(request, exc)
        if (confirm or "").strip() != stats["tenant_id"]:
            return pages.render(
                request,
                "delete.html",
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                stats=stats,
                problem="Nothing was deleted: type the tenant id exactly as shown to confirm.",
            )
        deleted = delete_tenant(stats["tenant_id"], actor=actor_from(request), route=Route.CONSOLE)
        done = "delete-queued" if deleted["influxdb"]["queued"] else "delete-not-queued"
        return _see(request, "console_tenant", done, tenant_id=stats["tenant_id"])

    def _not_found(request: Request, exc: Exception, deleted: bool = False) -> Response:
        if deleted:
            problem = (
                "The tenant is deleted: its row is gone, and its own database with it "
                "(a database of its name that was not its own is left in place: see Strays)."
            )
        elif isinstance(exc, InvalidTenantId):
            problem = f"No tenant has this id: {exc}"
        else:
            problem = "No tenant has this id."
        return pages.render(
            request,
            "not_found.html",
            status.HTTP_404_NOT_FOUND,
            notice=problem if deleted else None,
            problem=None if deleted else problem,
        )

    return router


def _see(request: Request, route: str, done: str, **params: str) -> RedirectResponse:
    """Post/redirect/get: the page that shows what the action did."""
    target = request.url_for(route, **params).path + f"?done={done}"
    return RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)


def _audit_route(router: APIRouter, pages: Pages) -> None:
    """``/operator/console/audit?actor=&tenant=``: operator actions, newest first; and the
    tenant page's live timeline (``api_hooks.console.live``)."""
    timeline_route(router)
    webhooks_route(router, pages)  # and the webhook endpoints (api_hooks.console.webhooks)

    @router.get("/audit", name="console_audit", response_class=HTMLResponse)
    def audit_page(
        request: Request,
        actor: Annotated[str | None, Query(max_length=200)] = None,
        tenant: Annotated[str | None, Query(max_length=54)] = None,
        before: Annotated[str | None, Query(max_length=20)] = None,
    ) -> Response:
        actor, tenant = (actor or "").strip() or None, (tenant or "").strip() or None
        try:
            with get_engine().connect() as conn:
                rows, older = reads.audit_page(conn, actor, tenant, before)
            problem: str | None = None
        except reads.BadQuery as exc:
            rows, older, problem = [], None, str(exc)
        return pages.render(
            request,
            "audit.html",
            status.HTTP_422_UNPROCESSABLE_CONTENT if problem else status.HTTP_200_OK,
            rows=rows,
            before=older,
            actor=actor or "",
            tenant=tenant or "",
            retention_days=get_settings().events_retention_days,
            problem=problem,
        )
