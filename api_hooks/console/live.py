"""The tenant page's timeline, live: a Server-Sent Events stream of the tenant's events in its
own sequence (``api_hooks.stream.tenant_stream``), read by the page's one script.

The script is inlined and allowed by its SHA-256 in the Content-Security-Policy, as the
stylesheet is; it may only connect to this origin. Without script the page is as before: the
timeline as it was when the page was read.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import datetime
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Header, HTTPException, Query, status
from fastapi.responses import StreamingResponse

from api_hooks.console.render import STATE_SIGNS, moment
from api_hooks.errors import InvalidTenantId
from api_hooks.stream import (
    StreamSlot,
    TooManyStreams,
    reserve,
    tenant_events_after,
    tenant_stream,
)
from api_hooks.tenants import validate_tenant_id
from worker.event_reads import TYPE_PREFIX, BadCursor

MAX_SEQ = 2**31 - 1
# How long a timeline runs before it ends for its session to be checked again; it ends at its
# next event or keepalive (every 15 s), so a sign-out stops it within a minute.
RECHECK_SECONDS = 45.0
SIGNS = {str(state): sign for state, sign in STATE_SIGNS.items()}


def timeline_route(router: APIRouter) -> None:
    """``GET <console>/tenants/{id}/timeline``: the tenant's events after ``after`` (or the
    ``Last-Event-ID`` a reconnecting EventSource sends), then each one as it commits."""

    @router.get("/tenants/{tenant_id}/timeline", name="console_timeline")
    async def timeline_stream(
        tenant_id: str,
        after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    ) -> StreamingResponse:
        try:
            tenant_id = validate_tenant_id(tenant_id)
        except InvalidTenantId as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
        if last_event_id and last_event_id.isascii() and last_event_id.isdigit():
            after = min(int(last_event_id[:10]), MAX_SEQ)
        try:  # a cursor past the tenant's events (a stale page of an earlier tenant of the id)
            await to_thread.run_sync(tenant_events_after, tenant_id, after)
        except BadCursor as exc:  # an EventSource stops at a 400, not reconnecting for ever
            raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(exc)) from exc
        try:
            body = reserve(lambda slot: _messages(tenant_id, after, slot))
        except TooManyStreams as exc:  # the page still shows the timeline as it was read
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                detail="too many event streams on this process; try again later",
                headers={"Retry-After": "5"},
            ) from exc
        return StreamingResponse(
            body,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )


async def _messages(tenant_id: str, after: int, slot: StreamSlot) -> AsyncIterator[bytes]:
    # The operator check ran when the stream opened, not since: it ends after RECHECK_SECONDS
    # (at its next event or keepalive) and the browser's EventSource reconnects from its last
    # id through the check again. Signed out, ended or expired, that reconnect is refused.
    ends_at = time.monotonic() + RECHECK_SECONDS
    yield b"retry: 3000\n\n"
    async with aclosing(tenant_stream(tenant_id, after, slot)) as events:  # its slot back now
        async for event in events:
            if time.monotonic() >= ends_at:  # the page reconnects at once, quietly (timeline.js)
                yield b"event: recheck\ndata: session\n\n"
                return
            if not event:
                yield b": keepalive\n\n"
                continue
            row = shown(event)
            yield f"id: {row['seq']}\nevent: tenant-event\ndata: {json.dumps(row)}\n\n".encode()


def shown(event: dict[str, Any]) -> dict[str, Any]:
    """What a timeline row shows of a CloudEvent, as the page's table shows it."""
    data = event.get("data") or {}
    state = data.get("state") or ""
    by = event.get("actor") or ""
    if event.get("route"):
        by = f"{by} ({event['route']})".strip()
    return {
        "seq": event.get("tenantseq"),
        "when": moment(datetime.fromisoformat(event["time"])),
        "type": str(event["type"]).removeprefix(TYPE_PREFIX),
        "state": state,
        "sign": SIGNS.get(state, ""),
        "reason": data.get("reason") or "",
        "node": data.get("node") or "",
        "by": by,
    }
