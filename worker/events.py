"""The tenant event log, writing side: who acts, operator actions, pruning (migration 0011).

A tenant's transitions are written by the trigger ``tenants_write_event`` on ``tenants``, in
the transaction of the change: no code path can change a tenant's state without its event, and
a change that rolls back takes its event with it. Operator actions are written by the hooks
with :func:`record`, in the transaction of their change. Both name who acted and by which
route, from two transaction-local settings that :func:`acting` sets (``set_config(..., true)``:
gone at commit, so a pooled connection carries nothing to its next user). Unset - the worker's
own transactions, which pay no extra round trip - the actor is NULL and the route ``worker``.

Reading (the CloudEvents envelope, pages, the global cursor) is ``worker.event_reads``.
"""

from __future__ import annotations

import enum
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

logger = logging.getLogger(__name__)

ACTOR_SETTING = "tenant_provisioner.actor"
ROUTE_SETTING = "tenant_provisioner.route"
KEPT_ON_SETTING = "tenant_provisioner.kept_on"  # migration 0024
MAX_ACTOR_LENGTH = 200
MAX_ACTOR_FILTER = MAX_ACTOR_LENGTH + 3  # a longer actor is stored cut, ending "..."


class Route(enum.StrEnum):
    """Where an event came from (``tenant_events.route``)."""

    HTTP = "http"  # the operator HTTP API (ours, or mounted in the UI)
    CONSOLE = "console"  # the operator console's pages
    CLI = "cli"  # tenantctl
    PYTHON = "python"  # a hook called directly (the UI's Python, a script)
    WORKER = "worker"  # a provisioning or deletion run (no route set)
    RECONCILER = "reconciler"  # a reconcile run
    EXTERNAL = "external"  # a tenants row inserted by SQL outside our code (the UI's own INSERT)
    MIGRATION = "migration"  # the tenants as they were when migration 0011 ran


class OperatorAction(enum.StrEnum):
    """The operator actions of the audit trail (event type ``operator.<action>``)."""

    CREATED = "operator.created"
    RETRY = "operator.retry"
    DELETE = "operator.delete"
    ADOPT = "operator.adopt"
    FORGET = "operator.forget"
    SIGN_IN = "operator.sign_in"


# What the trigger writes (``tenant.<transition>``); docs/events.md says when each is written.
TENANT_EVENT_TYPES = (
    "tenant.imported",
    "tenant.created",
    "tenant.provisioning_started",
    "tenant.retry_scheduled",
    "tenant.provisioned",
    "tenant.failed",
    "tenant.waiting_for_capacity",
    "tenant.waiting_for_node",
    "tenant.drift_found",
    "tenant.resumed",
    "tenant.retry_requested",
    "tenant.requeued",
    "tenant.adopted",
    "tenant.deletion_requested",
    "tenant.deletion_failed",
    "tenant.deprovisioned",
    "tenant.state_changed",
)
EVENT_TYPES = TENANT_EVENT_TYPES + tuple(a.value for a in OperatorAction)


# C0 and C1 controls and DEL: CloudEvents string attributes must not hold them (the actor is
# the envelope's `actor`), and a log line or a terminal would act on them.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")


def clean_actor(actor: str | None) -> str:
    """``actor`` fit for storage: each control character U+FFFD (NUL dropped), bounded (it is
    shown escaped wherever it is shown); "" for None (the events then name no actor)."""
    actor = _CONTROLS.sub("\ufffd", (actor or "").replace("\x00", ""))
    return actor if len(actor) <= MAX_ACTOR_LENGTH else actor[:MAX_ACTOR_LENGTH] + "..."


def kept_on(conn: Connection, nodes: str) -> None:
    """Name, for the ``tenant.deprovisioned`` event of the caller's open transaction, the
    servers where a database of the tenant's name was left in place (not its own)."""
    conn.execute(
        text("SELECT set_config(:setting, :nodes, true)"),
        {"setting": KEPT_ON_SETTING, "nodes": nodes},
    )


def acting(conn: Connection, actor: str | None, route: str) -> None:
    """Name who acts, and by which route, for every event of the caller's open transaction
    (the trigger's included); cleared by its commit or rollback. Call it before the change."""
    conn.execute(
        text(
            "SELECT set_config(:actor_setting, :actor, true), "
            "set_config(:route_setting, :route, true)"
        ),
        {
            "actor_setting": ACTOR_SETTING,
            "actor": clean_actor(actor),
            "route_setting": ROUTE_SETTING,
            "route": str(route),
        },
    )


def encode(data: Mapping[str, Any]) -> str:
    """An event's ``data`` as JSON, its None values left out (as the trigger leaves out NULL
    columns)."""
    return json.dumps({k: v for k, v in data.items() if v is not None}, default=str)


def record(
    conn: Connection, tenant_id: str | None, event_type: str, data: Mapping[str, Any]
) -> int:
    """Append one event in the caller's transaction (the caller commits); its id. A tenant's
    event takes the tenant's next ``seq``; ``tenant_id`` None is an event of the deployment.
    ``data`` goes through :func:`encode`."""
    written = conn.execute(
        text("SELECT tenant_events_append(:tenant_id, :type, CAST(:data AS jsonb))"),
        {
            "tenant_id": tenant_id,
            "type": str(event_type),
            "data": encode(data),
        },
    ).scalar_one()
    return int(written)


@contextmanager
def session_route(conn: Connection, route: Route) -> Iterator[None]:
    """Every transaction of ``conn`` inside the block writes its events with ``route`` (a
    session setting: a reconcile run commits many times). Cleared on the way out; a connection
    that cannot be cleared is not given back to the pool."""
    conn.execute(
        text("SELECT set_config(:setting, :route, false)"),
        {"setting": ROUTE_SETTING, "route": route.value},
    )
    conn.commit()  # a session setting made in a transaction that rolls back is undone
    try:
        yield
    finally:
        try:
            conn.rollback()
            conn.execute(text("SELECT set_config(:setting, '', false)"), {"setting": ROUTE_SETTING})
            conn.commit()
        except DBAPIError:
            # Never hide why the block ended; the connection leaves the pool with its session.
            logger.warning("could not clear the session's event route", exc_info=True)
            conn.invalidate()
        except BaseException:
            conn.invalidate()
            raise


def prune(
    conn: Connection,
    older_than: datetime,
    batch_size: int,
    stop: Callable[[], bool],
    held_before: datetime | None = None,
) -> int:
    """Delete events written before ``older_than``, ``batch_size`` per transaction (each
    committed), until none is left or ``stop()``; the number deleted.

    A tenant's last event is kept, however old: the next one's ``seq`` follows it (also for an
    id deleted and created again), and the log's last word on every tenant stays its state.
    So is every event a configured webhook endpoint has not had yet (its dispatcher stopped,
    its file unusable): pruned, it would never reach the receiver - unless written before
    ``held_before``: a dispatcher gone for good must not keep the whole log.
    """
    # A log restored from another cluster is shifted by its newest id (migration 0021): that
    # shift is committed before any row goes, so every session computes the same one.
    conn.execute(text("SELECT tenant_event_shift()"))
    conn.commit()
    deleted = 0
    while not stop():
        held = {"older_than": older_than, "held_before": held_before, "batch": batch_size}
        count = conn.execute(_PRUNE, held).rowcount
        conn.commit()
        deleted += count
        if count < batch_size:
            break
    return deleted


_PRUNE = text(
    """
    DELETE FROM tenant_events WHERE id IN (
        SELECT old.id FROM tenant_events old
        WHERE old.time < :older_than
          AND (old.tenant_id IS NULL OR EXISTS (
              SELECT 1 FROM tenant_events newer
              WHERE newer.tenant_id = old.tenant_id AND newer.seq > old.seq))
          AND (old.time < CAST(:held_before AS timestamptz) OR NOT EXISTS (
              SELECT 1 FROM webhook_endpoints e
              WHERE e.configured AND (old.xid, old.id) > (e.cursor_xid, e.cursor_id)))
        ORDER BY old.time
        LIMIT :batch)
    """
)
