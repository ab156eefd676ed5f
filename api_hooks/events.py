"""Reading the event log: a tenant's events (the hook behind ``GET
/operator/tenants/{id}/events``, ``tenantctl events``) and the operator actions (``tenantctl
audit``, the console's Audit page), as CloudEvents 1.0 (``worker.event_reads``).
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from pydantic import BaseModel, Field

from api_hooks.errors import InvalidCursor, TenantNotFound
from api_hooks.tenants import validate_tenant_id
from worker.db import get_engine
from worker.event_reads import (
    AUDIT_PAGE,
    MAX_LIMIT,
    BadCursor,
    cloud_event,
    page_size,
    sequence_cursor,
    tenant_page,
)
from worker.event_reads import audit as audit_rows
from worker.events import MAX_ACTOR_FILTER


class TenantEventsBody(TypedDict):
    """A page of a tenant's events."""

    tenant_id: str
    events: list[dict[str, Any]]
    next: int
    more: bool


class AuditBody(TypedDict):
    """A page of operator actions, newest first; ``before``: where the next page starts."""

    events: list[dict[str, Any]]
    before: int | None


def tenant_events(
    tenant_id: str, after: int | str | None = None, limit: int | str | None = None
) -> TenantEventsBody:
    """The tenant's events after sequence number ``after`` (its ``tenantseq``; None: from the
    first kept), oldest first, at most ``limit`` (1 to 500, default 100); ``next`` is where
    the next page starts. A deleted tenant's events stay readable. Raises InvalidTenantId,
    InvalidCursor (a bad ``after`` or ``limit``, an ``after`` past the tenant's last event),
    TenantNotFound (no row and no event)."""
    tenant_id = validate_tenant_id(tenant_id)
    try:
        start, size = sequence_cursor(after), page_size(limit)
        with get_engine().connect() as conn:
            page = tenant_page(conn, tenant_id, start, size)
    except BadCursor as exc:
        raise InvalidCursor(str(exc)) from exc
    if page is None:
        raise TenantNotFound(f"tenant {tenant_id!r} does not exist and never did")
    return {
        "tenant_id": tenant_id,
        "events": page.events,
        "next": int(page.next),
        "more": page.more,
    }


def audit_trail(
    actor: str | None = None,
    tenant_id: str | None = None,
    before: int | None = None,
    limit: int = AUDIT_PAGE,
) -> AuditBody:
    """Operator actions, newest first: optionally one actor's (exact match) or one tenant's;
    ``before`` pages on (the previous page's ``before``). Raises InvalidCursor."""
    if limit < 1 or limit > MAX_LIMIT:
        raise InvalidCursor(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    if before is not None and before < 1:
        raise InvalidCursor("before must be an event's id (a positive whole number)")
    if actor is not None and ("\x00" in actor or len(actor) > MAX_ACTOR_FILTER):
        raise InvalidCursor(f"actor must be at most {MAX_ACTOR_FILTER} characters, no NUL")
    with get_engine().connect() as conn:
        rows, following = audit_rows(
            conn, actor=actor, tenant=tenant_id, before=before, limit=limit
        )
    return {"events": [cloud_event(row) for row in rows], "before": following}


class EventData(BaseModel):
    """What happened: each event carries the fields that concern it, the others are left out.
    The tenant's fields are as the change left its row."""

    state: str | None = Field(None, description="The tenant's provisioning state after it")
    previous_state: str | None = Field(None, description="Its state before")
    reason: str | None = Field(None, description="`influxdb_error_reason` (see the README)")
    error: str | None = Field(None, description="The stored error text, secrets removed")
    node: str | None = Field(None, description="The server holding (or to hold) its database")
    incarnation: str | None = Field(None, description="The tenant row's identity")
    attempts: int | None = Field(None, description="Attempts of the current episode")
    next_attempt_at: str | None = Field(None, description="When the scheduled retry runs")
    adopt: str | None = Field(
        None, description="`unmarked`, `any` or `remade`: whose database counts"
    )
    name: str | None = Field(None, description="operator.created: the display name")
    retention_period: str | None = Field(None, description="operator.created: its retention")
    database: str | None = Field(None, description="The tenant's database name")
    job: str | None = Field(None, description="operator.retry: `provision` or `deprovision`")
    address: str | None = Field(None, description="operator.sign_in: the client's address")


class CloudEvent(BaseModel):
    """One event in the CloudEvents 1.0 JSON format, with three extension attributes."""

    specversion: Literal["1.0"] = Field(description="CloudEvents 1.0")
    id: str = Field(
        description='Unique, and the global cursor: "<transaction id>-<event id>"',
        examples=["7342-120"],
    )
    source: str = Field(
        description="The deployment's `EVENTS_SOURCE` (default `/tenant-provisioner`)"
    )
    type: str = Field(
        description="`io.tenant-provisioner.` then `tenant.<transition>` or "
        "`operator.<action>` (docs/events.md lists them)",
        examples=["io.tenant-provisioner.tenant.provisioned"],
    )
    subject: str | None = Field(None, description="The tenant id (absent: the deployment's)")
    time: str = Field(description="When, RFC 3339 in UTC", examples=["2026-12-04T07:17:07Z"])
    datacontenttype: Literal["application/json"] = Field(description="`data` is JSON")
    data: EventData
    tenantseq: int | None = Field(
        None, description="The tenant's own sequence number: 1, 2, 3, ... without gaps"
    )
    actor: str | None = Field(
        None,
        description="Who acted: the UI's operator, `operator-token`, `cli:<user>`, `python`; "
        "absent for the worker's own transitions",
    )
    route: str | None = Field(
        None,
        description="Where from: `http`, `console`, `cli`, `python`, `worker`, `reconciler`, "
        "`external` (a row inserted outside our code), `migration`",
    )


class TenantEventsPage(BaseModel):
    """A page of one tenant's events, oldest first."""

    tenant_id: str
    events: list[CloudEvent]
    next: int = Field(description="`after` for the next page (or for polling)")
    more: bool = Field(description="The page is full: ask again with `after=next` at once")


class EventsPage(BaseModel):
    """A page of every tenant's events in the global order."""

    events: list[CloudEvent]
    next: str = Field(
        description="`after` for the next page: the last event's id, or where the log was read "
        "up to (also when the page is empty: poll with it)",
        examples=["7342-0"],
    )
    more: bool = Field(description="The page is full: ask again with `after=next` at once")
