"""Console sign-in sessions, kept in Postgres so that they can end (migration 0010).

The browser holds ``<session id>.<signature>``: a random id, signed with a key derived from the
deployment's secret and the operator token (changing the token signs every session out, and a
forged cookie is refused before Postgres is asked). Postgres holds the id's SHA-256 - a copy of
the table signs nobody in - with its times. A session is valid while its row is not ended
(sign-out, ``tenantctl sessions --end``), not past ``CONSOLE_SESSION_MINUTES`` from sign-in,
and was used within ``CONSOLE_SESSION_IDLE_MINUTES``. Every time is Postgres' own
(``worker.clock``): no process clock is compared with a stored one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from fastapi import HTTPException, Request, status
from sqlalchemy import ColumnElement, Connection, Engine, func, select, text, true, update

from api_hooks.actors import OPERATOR_TOKEN_ACTOR
from api_hooks.console.guard import comparable, key_for, mac_of
from worker import events
from worker.db import get_engine
from worker.models import console_sessions

SESSION_COOKIE = "tp_console_session"
# Requests a page makes by itself (the timeline's reconnects, each RECHECK_SECONDS): checked,
# but not counted as use (api_hooks.console.live).
UNATTENDED_ROUTES = frozenset({"console_timeline"})
_TOUCH = text(
    "UPDATE console_sessions SET last_seen_at = clock_timestamp() "
    "WHERE id_hash = :id_hash AND ended_at IS NULL AND expires_at > clock_timestamp() "
    "AND last_seen_at > clock_timestamp() - make_interval(secs => :idle) RETURNING actor"
)
_LOOK = text(  # the same session, not marked used
    "SELECT actor FROM console_sessions "
    "WHERE id_hash = :id_hash AND ended_at IS NULL AND expires_at > clock_timestamp() "
    "AND last_seen_at > clock_timestamp() - make_interval(secs => :idle)"
)
RETAINED_DAYS = 7  # ended sessions stay listed this long, then the next sign-in deletes them
ACTOR = OPERATOR_TOKEN_ACTOR  # who signs in to the standalone console: the token's holder


class ConsoleSessions:
    """Sign-in sessions of the standalone app (see the module docstring)."""

    def __init__(
        self,
        operator_token: str,
        minutes: int,
        idle_minutes: int,
        secret: Callable[[], bytes],
        engine: Callable[[], Engine] = get_engine,
    ) -> None:
        self._token = operator_token.encode()
        self._secret = secret
        self._signing_key: bytes | None = None
        self._engine = engine
        self.max_age = minutes * 60
        self.idle = idle_minutes * 60

    @property
    def _key(self) -> bytes:
        # Read on first use: the secret lives in Postgres (worker.db.deployment_secret).
        if self._signing_key is None:
            self._signing_key = key_for(self._secret() + self._token, "session")
        return self._signing_key

    def token_matches(self, supplied: str) -> bool:
        """The operator token, compared in constant time."""
        return hmac.compare_digest(supplied.encode(), self._token)

    def issue(self, address: str | None) -> str:
        """A new session for a browser at ``address``; its cookie value. The sign-in is
        recorded in the event log (``operator.sign_in``) in the same transaction."""
        session_id = secrets.token_urlsafe(32)
        with self._engine().begin() as conn:
            conn.execute(
                text(
                    "DELETE FROM console_sessions WHERE coalesce(ended_at, expires_at) "
                    "< clock_timestamp() - make_interval(days => :days)"
                ),
                {"days": RETAINED_DAYS},
            )
            conn.execute(
                text(
                    "INSERT INTO console_sessions "
                    "(id_hash, actor, address, created_at, last_seen_at, expires_at) "
                    "VALUES (:id_hash, :actor, :address, clock_timestamp(), clock_timestamp(), "
                    "clock_timestamp() + make_interval(secs => :max_age))"
                ),
                {
                    "id_hash": _digest(session_id),
                    "actor": ACTOR,
                    "address": (address or "")[:64] or None,
                    "max_age": self.max_age,
                },
            )
            events.acting(conn, ACTOR, events.Route.CONSOLE)
            signed_in = {"address": (address or "")[:64] or None}
            events.record(conn, None, events.OperatorAction.SIGN_IN, signed_in)
        return f"{session_id}.{mac_of(self._key, session_id)}"

    def valid(self, cookie: str | None) -> bool:
        """The cookie is ours and its session is live; marks it used now."""
        return self.actor(cookie) is not None

    def actor(self, cookie: str | None, *, touch: bool = True) -> str | None:
        """Who the cookie's session signed in as, if the cookie is ours and its session is
        live (None otherwise); marks it used now (``touch=False``: a request the page made by
        itself, which must not keep an unattended session from idling out)."""
        id_hash = self._id_hash(cookie)
        if id_hash is None:
            return None
        query = _TOUCH if touch else _LOOK
        with self._engine().begin() as conn:
            actor: str | None = conn.execute(
                query, {"id_hash": id_hash, "idle": self.idle}
            ).scalar()
            return actor

    def end(self, cookie: str | None) -> None:
        """Sign-out: the session ends at once, wherever a copy of its cookie is."""
        if (id_hash := self._id_hash(cookie)) is not None:
            with self._engine().begin() as conn:
                _end(conn, console_sessions.c.id_hash == id_hash, "sign-out")

    def _id_hash(self, cookie: str | None) -> bytes | None:
        if not cookie or cookie.count(".") != 1 or len(cookie) > 200:
            return None
        session_id, mac = cookie.split(".")
        # As bytes: compare_digest refuses (TypeError) a str that is not ASCII ("x.\\351").
        if not hmac.compare_digest(comparable(mac), comparable(mac_of(self._key, session_id))):
            return None
        return _digest(session_id)

    def dependency(self, sign_in_route: str) -> Callable[[Request], str]:
        """A ``require_operator`` for the console, returning who the session signed in as:
        without a valid session, a redirect to the sign-in page that comes back to the page
        asked for."""

        def require_console_session(request: Request) -> str:
            route = getattr(request.scope.get("route"), "name", None)
            touch = route not in UNATTENDED_ROUTES
            if (actor := self.actor(request.cookies.get(SESSION_COOKIE), touch=touch)) is not None:
                return actor
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            sign_in = request.url_for(sign_in_route).path
            raise HTTPException(
                status.HTTP_303_SEE_OTHER,
                detail="sign in first",
                headers={"Location": f"{sign_in}?next={quote(target, safe='/')}"},
            )

        return require_console_session


def live_sessions(conn: Connection, idle_minutes: int) -> list[dict[str, Any]]:
    """Every live session, newest first: its short id (the first 12 hex digits of the hash),
    who, from where, and its times."""
    rows = conn.execute(
        text(
            "SELECT left(encode(id_hash, 'hex'), 12) AS id, actor, address, created_at, "
            "last_seen_at, expires_at FROM console_sessions WHERE ended_at IS NULL "
            "AND expires_at > clock_timestamp() "
            "AND last_seen_at > clock_timestamp() - make_interval(mins => :idle) "
            "ORDER BY created_at DESC"
        ),
        {"idle": idle_minutes},
    )
    return [dict(row._mapping) for row in rows]


def end_sessions(conn: Connection, short_id: str | None) -> int:
    """End the live session whose short id starts with ``short_id`` (None: every one);
    how many ended. ValueError unless ``short_id`` is 6 to 64 hex digits."""
    if short_id is None:
        return _end(conn, true(), "revoked")
    if not (6 <= len(short_id) <= 64) or any(c not in "0123456789abcdef" for c in short_id):
        raise ValueError("a session id is 6 to 64 lowercase hex digits (see `tenantctl sessions`)")
    table = console_sessions
    matching = conn.execute(
        select(func.count()).where(table.c.ended_at.is_(None), _hex_starts_with(short_id))
    ).scalar_one()
    if matching > 1:
        raise ValueError(f"{matching} live sessions start with {short_id}: give more digits")
    return _end(conn, _hex_starts_with(short_id), "revoked")


def _end(conn: Connection, which: ColumnElement[bool], by: str) -> int:
    table = console_sessions
    ended = conn.execute(
        update(table)
        .where(table.c.ended_at.is_(None), which)
        .values(ended_at=func.clock_timestamp(), ended_by=by)
    )
    return ended.rowcount


def _hex_starts_with(prefix: str) -> ColumnElement[bool]:
    return func.starts_with(func.encode(console_sessions.c.id_hash, "hex"), prefix)


def _digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()
