"""Delivering webhooks: one dispatcher per endpoint at a time, each tenant's events in order.

A dispatch run (the ``webhooks`` queue's task, every WEBHOOKS_POLL_SECONDS) mirrors the
endpoints file, then for each endpoint whose lock it gets (a session advisory lock: Postgres
frees it when the holder dies, so a killed dispatcher blocks nobody) works until nothing is
due or its time budget is spent. It fans out new events (one short transaction), reads each
tenant's oldest pending delivery - its **head**; a tenant's later events wait behind it,
other tenants' do not - and keeps a few threads busy sending due heads of tenants not already
in flight, with no transaction open; each outcome is recorded in a short transaction as it
comes, so a slow receiver answer holds back its own tenant only:

- 2xx: the delivery is deleted (at least once: a receiver that took it but whose answer was
  lost gets it again, with the same ``webhook-id``);
- anything else: the delivery is kept, tried again after a capped, jittered exponential
  backoff (``worker.runs.next_backoff``; a longer ``Retry-After`` is honoured up to the cap),
  and the endpoint is failing since its oldest unresolved failure. Failing longer than
  WEBHOOKS_DISABLE_AFTER_HOURS - or answering 410 Gone - disables it: nothing is sent until an
  operator re-enables it (:func:`enable`), while its fan-out goes on, so nothing is lost.

Times are the database's (``worker.clock``), or the injected clock of the fast tests.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, text

from worker.clock import Clock, database_clock
from worker.db import advisory_lock
from worker.redaction import redact_url
from worker.runs import next_backoff
from worker.store import clean_error
from worker.webhook_config import Endpoint
from worker.webhook_fanout import fan_out, sync_endpoints
from worker.webhook_sending import Attempt, Sender, post

if TYPE_CHECKING:
    from worker.settings import Settings

logger = logging.getLogger(__name__)

_LOCK_NAMESPACE = b"tenant-provisioner:webhook:"
BACKOFF_BASE_SECONDS = 1.0
FAN_OUT_SECONDS = 1.0  # while busy sending, new events are fanned out at most this often


@dataclass(frozen=True)
class Policy:
    """How deliveries are made: timeouts, backoff, when an endpoint is disabled, and how much
    one run does (requests in flight per endpoint, seconds per endpoint)."""

    read_timeout: float = 10.0
    backoff_cap: float = 300.0
    disable_after: timedelta = timedelta(hours=24)
    backoff_base: float = BACKOFF_BASE_SECONDS
    threads: int = 8
    budget_seconds: float = 20.0

    @classmethod
    def of(cls, settings: Settings) -> Policy:
        """The policy the settings give."""
        return cls(
            read_timeout=settings.webhooks_read_timeout_seconds,
            backoff_cap=settings.webhooks_backoff_cap_seconds,
            disable_after=timedelta(hours=settings.webhooks_disable_after_hours),
        )


@dataclass
class Summary:
    """What one run did (the task's return value; not shown in Flower: the poll sends no events)."""

    endpoints: int = 0
    served: list[str] = field(default_factory=list)
    fanned_out: int = 0
    delivered: int = 0
    failed: int = 0
    disabled: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able."""
        return dict(self.__dict__)


def lock_key(endpoint: str) -> int:
    """The endpoint's advisory lock key (signed 64 bits, its own namespace)."""
    digest = hashlib.blake2b(_LOCK_NAMESPACE + endpoint.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def dispatch(
    conn: Connection,
    endpoints: Sequence[Endpoint],
    policy: Policy,
    *,
    secrets: Sequence[str] = (),
    clock: Clock | None = None,
    rng: random.Random | None = None,
) -> Summary:
    """One run over every configured endpoint (see the module docstring). ``secrets``: the
    deployment's, kept out of stored errors with the endpoints' own."""
    clock = clock or database_clock(conn)
    record_file_error(conn, None, clock())  # the file was read: whatever it said is over
    sync_endpoints(conn, endpoints, clock())
    summary = Summary(endpoints=len(endpoints))
    with Sender(policy.threads) as sender:
        for endpoint in endpoints:
            with advisory_lock(conn, lock_key(endpoint.name)) as mine:
                if not mine:
                    continue  # another dispatcher works it now
                hidden = (*secrets, *endpoint.secrets)
                _serve(conn, endpoint, policy, sender, summary, hidden, clock, rng)
    return summary


def _serve(
    conn: Connection,
    endpoint: Endpoint,
    policy: Policy,
    sender: Sender,
    summary: Summary,
    secrets: Sequence[str],
    clock: Clock,
    rng: random.Random | None,
) -> None:
    """Keep the sender's threads busy with due heads of tenants not already in flight, and
    record outcomes as they come: one slow answer holds back its own tenant only."""
    summary.served.append(endpoint.name)
    deadline = time.monotonic() + policy.budget_seconds
    flying: dict[Future[Attempt], Any] = {}
    fanned_at, stopping = -FAN_OUT_SECONDS, False
    while True:
        if not stopping and len(flying) <= policy.threads // 2:  # refill once half are free
            now = clock()
            if not flying or time.monotonic() - fanned_at >= FAN_OUT_SECONDS:
                summary.fanned_out += fan_out(conn, endpoint, now)
                fanned_at = time.monotonic()
            busy = [_lane(head) for head in flying.values()]
            for head in due_heads(conn, endpoint.name, now, policy.threads - len(flying), busy):
                sending = sender.submit(_send, sender, endpoint, head, now, policy.read_timeout)
                flying[sending] = head
        if not flying:
            return  # nothing due (or disabled), nothing in flight
        done, _ = wait(flying, return_when=FIRST_COMPLETED)
        heads = [flying.pop(future) for future in done]
        attempts = [future.result() for future in done]
        delivered = sum(attempt.delivered for attempt in attempts)
        summary.delivered += delivered
        summary.failed += len(attempts) - delivered
        if record(conn, endpoint.name, heads, attempts, policy, clock(), secrets, rng):
            summary.disabled.append(endpoint.name)
            stopping = True  # what is in flight is still recorded
        stopping = stopping or time.monotonic() > deadline


def _send(
    sender: Sender, endpoint: Endpoint, head: Any, now: datetime, read_timeout: float
) -> Attempt:
    # In a sender thread: no transaction is open, and none is touched.
    stamp = int(now.timestamp())
    try:
        return post(sender.session(), endpoint, head.event_id, head.payload, stamp, read_timeout)
    except Exception as exc:  # a fault of ours: recorded as a failure, the others still served
        logger.exception("sending event %s to %s failed", head.event_id, endpoint.name)
        return Attempt(None, f"not sent: {type(exc).__name__}")


def _lane(head: Any) -> str:
    return "" if head.tenant_id is None else str(head.tenant_id)  # '': the deployment's events


def due_heads(
    conn: Connection, endpoint: str, now: datetime, limit: int, busy: Sequence[str] = ()
) -> list[Any]:
    """Each tenant's oldest pending delivery (the deployment's events: one lane, ``''``),
    those due at ``now`` and not of a ``busy`` lane, oldest first, at most ``limit``; none
    while the endpoint is disabled. Committed."""
    if limit <= 0:
        return []
    rows = conn.execute(
        text(
            "WITH heads AS (SELECT DISTINCT ON (tenant_id) id, tenant_id, next_attempt_at "
            "FROM webhook_deliveries WHERE endpoint = :endpoint ORDER BY tenant_id, seq, id) "
            "SELECT d.id, d.event_id, d.tenant_id, d.seq, d.payload, d.attempts "
            "FROM heads JOIN webhook_deliveries d ON d.id = heads.id "
            "WHERE heads.next_attempt_at <= :now "
            "AND coalesce(heads.tenant_id, '') <> ALL(CAST(:busy AS text[])) "
            "AND NOT EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.name = :endpoint "
            "AND e.disabled_at IS NOT NULL) ORDER BY d.id LIMIT :limit"
        ),
        {"endpoint": endpoint, "now": now, "limit": limit, "busy": list(busy)},
    ).all()
    conn.commit()
    return list(rows)


def record(
    conn: Connection,
    endpoint: str,
    heads: Sequence[Any],
    attempts: Sequence[Attempt],
    policy: Policy,
    now: datetime,
    secrets: Sequence[str],
    rng: random.Random | None = None,
) -> bool:
    """Record outcomes in one transaction; True when the endpoint was disabled
    by it (failing longer than the policy allows, or 410 Gone)."""
    done = [head.id for head, attempt in zip(heads, attempts, strict=True) if attempt.delivered]
    failed = []
    for head, attempt in zip(heads, attempts, strict=True):
        if attempt.delivered:
            continue
        delay = next_backoff(head.attempts + 1, policy.backoff_base, policy.backoff_cap, rng)
        if attempt.retry_after is not None:
            delay = max(delay, min(attempt.retry_after, policy.backoff_cap))
        error = clean_error(attempt.error or "", secrets)
        failed.append({"id": head.id, "next": now + timedelta(seconds=delay), "error": error})
    if done:
        conn.execute(text("DELETE FROM webhook_deliveries WHERE id = ANY(:ids)"), {"ids": done})
    if failed:
        conn.execute(
            text(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = :next, "
                "first_failed_at = coalesce(first_failed_at, :now), last_error = :error "
                "WHERE id = :id"
            ),
            [{**row, "now": now} for row in failed],
        )
    last = attempts[-1]
    disabled = conn.execute(
        text(
            "UPDATE webhook_endpoints e SET failing_since = f.since, "
            "delivered = delivered + :done, last_attempt_at = :now, "
            "last_success_at = CASE WHEN :done > 0 THEN :now ELSE last_success_at END, "
            "last_status = :status, last_error = :error, "
            # Failing without a break: nothing delivered in the window either, so one event the
            # receiver keeps refusing holds its tenant's line (shown pending), not every tenant's.
            "disabled_at = CASE WHEN e.disabled_at IS NULL AND (:gone OR (f.since <= :limit "
            "AND :done = 0 AND (e.last_success_at IS NULL OR e.last_success_at <= :limit))) "
            "THEN :now ELSE e.disabled_at END "
            "FROM (SELECT min(first_failed_at) AS since FROM webhook_deliveries "
            "WHERE endpoint = :name AND first_failed_at IS NOT NULL) f "
            "WHERE e.name = :name RETURNING e.disabled_at = :now AND e.disabled_at IS NOT NULL"
        ),
        {
            "name": endpoint,
            "done": len(done),
            "now": now,
            "status": last.status,
            "error": failed[-1]["error"] if failed else None,
            "gone": any(attempt.gone for attempt in attempts),
            "limit": now - policy.disable_after,
        },
    ).scalar_one()
    conn.commit()
    if failed:
        logger.warning(
            "webhook endpoint %s: %d delivered, %d failed (last: %s)",
            endpoint,
            len(done),
            len(failed),
            failed[-1]["error"],
            extra={"endpoint": endpoint},
        )
    if disabled:
        logger.error(
            "webhook endpoint %s disabled: failing since longer than %s, or 410 Gone; "
            "deliveries are kept (tenantctl webhooks --enable %s)",
            endpoint,
            policy.disable_after,
            endpoint,
            extra={"endpoint": endpoint},
        )
    return bool(disabled)


def enable(conn: Connection, name: str, now: datetime) -> bool:
    """Re-enable an endpoint: its failure window starts afresh and every waiting delivery is
    due now. False for an unknown name. Commits."""
    found = conn.execute(
        text(
            "UPDATE webhook_endpoints SET disabled_at = NULL, failing_since = NULL "
            "WHERE name = :name RETURNING name"
        ),
        {"name": name},
    ).first()
    if found is not None:
        conn.execute(
            text(
                "UPDATE webhook_deliveries SET attempts = 0, first_failed_at = NULL, "
                "next_attempt_at = :now WHERE endpoint = :name"
            ),
            {"name": name, "now": now},
        )
    conn.commit()
    return found is not None


def record_file_error(conn: Connection, error: str | None, now: datetime) -> None:
    """Whether the webhooks file could be used (``error``: why not, naming the file and the
    entry, never a secret; None: it was). Written only when that changes; commits."""
    conn.execute(
        text(
            "INSERT INTO webhook_config AS c (only_row, error, since) "
            "VALUES (true, CAST(:error AS text), :now) "
            "ON CONFLICT (only_row) DO UPDATE SET error = excluded.error, "
            "since = CASE WHEN (c.error IS NULL) = (excluded.error IS NULL) THEN c.since "
            "ELSE excluded.since END "
            "WHERE c.error IS DISTINCT FROM excluded.error"
        ),
        {"error": error, "now": now},
    )
    conn.commit()


def file_error(conn: Connection) -> tuple[str, datetime] | None:
    """Why the webhooks worker could not use the webhooks file at its last dispatch, and
    since when: nothing is sent to any endpoint meanwhile. None when it could (or never ran)."""
    row = conn.execute(
        text("SELECT error, since FROM webhook_config WHERE error IS NOT NULL")
    ).first()
    conn.commit()
    return None if row is None else (str(row.error), row.since)


def endpoint_status(conn: Connection) -> list[dict[str, Any]]:
    """Every endpoint known, by name: configured or not, pending deliveries, the oldest one's
    fan-out time, failing since, disabled at, the last attempt, delivered so far."""
    rows = conn.execute(
        text(
            "SELECT e.name, e.url, e.configured, e.failing_since, e.disabled_at, "
            "e.last_attempt_at, e.last_success_at, e.last_status, e.last_error, e.delivered, "
            "count(d.id) AS pending, min(d.created_at) AS oldest_pending_at "
            "FROM webhook_endpoints e LEFT JOIN webhook_deliveries d ON d.endpoint = e.name "
            "GROUP BY e.name ORDER BY e.name"
        )
    ).all()
    conn.commit()
    return [{**row._asdict(), "url": redact_url(row.url)} for row in rows]
