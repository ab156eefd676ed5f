"""Where each tenant's database is: the location map the data plane reads (``/locations``).

The services that write and read telemetry must send a tenant's points to the server that
holds its database - InfluxDB 3 creates a database on the first write to a name it lacks, so
a write sent anywhere else makes a stray. They keep the whole map in memory and refresh it by
version (``locations_client``); this module is the map's source of truth, in Postgres:

- ``tenant_locations`` holds one row per tenant, kept by a trigger on ``tenants`` in the
  transaction of every change of state, server or incarnation (migration 0008), and a
  tombstone for a while after the tenant is deleted;
- :func:`publish` numbers the changed rows, in one step serialized by an advisory lock, after
  their transactions committed: versions follow the order in which changes became visible, so
  a client that has read up to version V has seen every change numbered below V, and asking
  for the changes since V reads an index range - its cost grows with the changes, not with the
  tenants;
- a tenant is *ready* (given a server) only when provisioned on a server of the nodes file;
  pending, provisioning, retrying, failed, waiting and deprovisioning tenants are "not ready",
  and a deleted or unknown one has no location at all: never a default server;
- a deletion publishes its "not ready" first and deletes the database only after the clients'
  maximum staleness has passed (:func:`deletion_may_proceed`), so no writer still holding the
  old location re-creates it; the reconciler reports any that reappears (``worker.strays``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import Connection, func, select, text, update
from sqlalchemy.exc import NotSupportedError, ProgrammingError

from worker.clock import Clock
from worker.models import tenant_location_map, tenant_locations
from worker.node_config import NodeConfig
from worker.nodes import NodePool
from worker.settings import Settings
from worker.states import ProvisioningState

# Any constant distinct from the other advisory keys (tenants hash to 64 bits; the reconciler's).
PUBLISH_LOCK_KEY = 0x6C6F_6361_7465  # "locate"
# How long a deleted tenant's tombstone stays: a client further behind loads the map again.
TOMBSTONE_RETENTION = timedelta(days=7)
UNPUBLISHED_RETRY = timedelta(seconds=0.5)
_L = tenant_locations.c
logger = logging.getLogger(__name__)

_NUMBER = text(
    "UPDATE tenant_locations SET state = next_state, node = next_node, "
    "incarnation = next_incarnation, deleted = next_deleted, pending = false, "
    "version = nextval('tenant_location_version') "
    "WHERE tenant_id IN (SELECT tenant_id FROM tenant_locations WHERE pending "
    # A row a writer holds is published by a later step, after that writer commits.
    "ORDER BY changed_at FOR UPDATE SKIP LOCKED)"
)


class SinceTooOld(Exception):
    """A tombstone newer than the client's version was pruned: it must reload the map."""


class SinceInFuture(Exception):
    """The client names a version this map has not reached: it talks to another map."""


@dataclass(frozen=True)
class Location:
    """One tenant's location as served: a server only when ready for writes."""

    tenant_id: str
    database: str
    version: int
    ready: bool
    state: str | None  # the provisioning state; None for a deleted tenant
    node: str | None  # only when ready
    url: str | None  # only when ready: the server's URL from the nodes file, no credential
    incarnation: str | None
    deleted: bool

    def as_dict(self) -> dict[str, Any]:
        """The JSON form of ``/locations``."""
        return {
            "tenant_id": self.tenant_id,
            "database": self.database,
            "version": self.version,
            "ready": self.ready,
            "state": self.state,
            "node": self.node,
            "url": self.url,
            "incarnation": self.incarnation,
            "deleted": self.deleted,
        }


@dataclass(frozen=True)
class Page:
    """The changes after ``since`` up to ``next_since``, in version order, as a JSON array
    (built by Postgres: a page of 10,000 locations serialized in Python cost more than the
    query that read it)."""

    locations_json: str
    count: int
    next_since: int  # the version to ask from next time
    more: bool  # more changes wait after next_since
    current: int  # the map's version now
    epoch: str  # which map: another database (restored, re-created, failed over) has another


def publish(conn: Connection, *, wait: bool = False) -> int:
    """Publish every pending change with its version, in one step serialized with any other;
    commits. Returns how many were published. Without ``wait`` it gives way to a step already
    running (readers then see the last published state: never a hole, at worst a change
    later)."""
    if conn.execute(select(_L.tenant_id).where(_L.pending).limit(1)).first() is None:
        conn.commit()
        return 0
    lock = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
    acquired = conn.execute(text(f"SELECT {lock}(:k)"), {"k": PUBLISH_LOCK_KEY}).scalar()
    if acquired is False:
        conn.commit()
        return 0
    numbered = conn.execute(_NUMBER).rowcount
    conn.commit()  # and frees the lock: the next step numbers after these
    return int(numbered)


def current_version(conn: Connection) -> int:
    """The map's version: its highest published change (pruned tombstones included)."""
    latest = conn.execute(select(func.max(_L.version))).scalar()
    return max(int(latest or 0), _horizon(conn))


def settled_version(conn: Connection) -> int:
    """Publish what is pending, then the map's version: a tenant changed after this returns is
    pending or numbered above it (the reconciler tells what its listings may predate)."""
    publish(conn, wait=True)
    version = current_version(conn)
    conn.commit()
    return version


# One statement: the page (ready only on a configured server, whose URL comes from the nodes
# file as a parameter), its last version, whether more follow, the map's version and horizon.
_PAGE = text(
    """
    WITH page AS (
        SELECT * FROM tenant_locations WHERE version > :since ORDER BY version LIMIT :over
    ), judged AS (
        SELECT page.*, configured.url,
               NOT page.deleted AND page.state = :provisioned AND configured.url IS NOT NULL
                   AS ready,
               row_number() OVER (ORDER BY page.version) AS position
        FROM page
        LEFT JOIN unnest(CAST(:names AS text[]), CAST(:urls AS text[])) AS configured(name, url)
            ON configured.name = page.node
    )
    SELECT
        -- A row's JSON from its columns, named as the API's keys: a third cheaper than
        -- json_build_object's nine pairs, on a whole-map load of a million.
        coalesce(json_agg((
            SELECT location FROM (SELECT tenant_id, :prefix || tenant_id AS database, version,
                ready, state, CASE WHEN ready THEN node END AS node,
                CASE WHEN ready THEN url END AS url, incarnation, deleted) AS location
        ) ORDER BY version) FILTER (WHERE position <= :limit), '[]')::text AS locations,
        count(*) FILTER (WHERE position <= :limit) AS found,
        max(version) FILTER (WHERE position <= :limit) AS last,
        count(*) > :limit AS more,
        (SELECT max(version) FROM tenant_locations) AS latest,
        (SELECT horizon FROM tenant_location_map) AS horizon,
        (SELECT epoch FROM tenant_location_map) AS epoch
    FROM judged
    """
)


# Which database a connection reaches, in what changes when it is restored or failed over:
# the cluster (another after initdb), the database (another OID when it is created again, from
# a dump too, even in the same cluster) and the WAL timeline (another after a point-in-time
# recovery or the promotion of a replica; a server still in recovery has none to give yet).
# A plain role may read all three.
_DATABASE_IDENTITY = text(
    "SELECT concat_ws('.', "
    "(SELECT system_identifier FROM pg_control_system()), "
    "(SELECT oid FROM pg_database WHERE datname = current_database()), "
    "CASE WHEN NOT pg_is_in_recovery() THEN left(pg_walfile_name(pg_current_wal_lsn()), 8) END)"
)
_identity_refused: list[str] = []  # the error, once a server refused: every connection agrees
_identity_read: list[bool] = []  # once a server told it: this process's role may read it


def database_identity(conn: Connection) -> str:
    """What identifies the database behind ``conn`` across restores (``_DATABASE_IDENTITY``),
    read for every answer: a connection pooler in front of Postgres keeps our connections open
    across a failover, so nothing read once per connection can be trusted to tell (three
    cheap catalog reads beside a page's). Empty, with one warning, for the rest of the process
    once the server refuses (the stored epoch alone is left): every connection serves the same
    epoch, and a client is not sent from one map to another by the pool. Read in a savepoint
    until the server first tells it (0.9 ms an answer more); a refusal after that (a right
    revoked while we run) rolls back the caller's transaction, which holds only reads here."""
    if _identity_refused:
        return ""
    bare = bool(_identity_read)
    try:
        if bare:
            known = conn.execute(_DATABASE_IDENTITY).scalar_one()
        else:
            with conn.begin_nested():
                known = conn.execute(_DATABASE_IDENTITY).scalar_one()
            _identity_read.append(True)
    except (ProgrammingError, NotSupportedError) as exc:  # not allowed or not there; a
        # lost connection raises on: a passing fault must not change the epoch
        if bare:
            conn.rollback()  # (aborted by the refusal)
        _identity_refused.append(type(exc.orig).__name__)
        logger.warning(
            "cannot tell this database's identity (%s): after a restore, give the location "
            "map a new epoch by hand (docs/operating.md)",
            _identity_refused[0],
        )
        return ""
    return str(known)


def changes(
    conn: Connection,
    since: int,
    limit: int,
    nodes: Sequence[NodeConfig],
    prefix: str,
    *,
    whole: bool = False,
) -> Page:
    """The locations changed after version ``since``, at most ``limit``, in version order,
    served with ``nodes`` (one read of the nodes file per answer). ``since`` 0 reads the whole
    map; ``whole``: ``since`` is where a page of a whole load ended, not a map its reader
    holds, and tombstones pruned after it are nothing to that reader (its map starts empty).
    Raises SinceTooOld and SinceInFuture."""
    row = conn.execute(
        _PAGE,
        {
            "since": since,
            "limit": limit,
            "over": limit + 1,
            "names": [node.name for node in nodes],
            "urls": [public_url(node.url) for node in nodes],
            "prefix": prefix,
            "provisioned": ProvisioningState.PROVISIONED.value,
        },
    ).one()
    horizon = int(row.horizon or 0)
    current = max(int(row.latest or 0), horizon)
    if since > current:
        raise SinceInFuture(f"since {since} is ahead of this map's version ({current})")
    if 0 < since < horizon and not whole:
        raise SinceTooOld(f"since {since} is older than the tombstones kept; load the map again")
    # The last page takes its reader to the map's version, not only to its last row: what lies
    # between are pruned tombstones, and a reader left below the horizon would be answered 410,
    # load the whole map again, end below it again, at every refresh.
    next_since = int(row.last) if row.more else current
    # The stored epoch (an operator may renew it) and the database's identity: a restore
    # brings the stored one back, not the identity.
    epoch = ".".join(filter(None, (row.epoch, database_identity(conn))))
    return Page(row.locations, int(row.found), next_since, bool(row.more), current, epoch)


def locate(conn: Connection, tenant_id: str, pool: NodePool, settings: Settings) -> Location | None:
    """The tenant's published location; None for an unknown or deleted tenant."""
    row = conn.execute(
        select(tenant_locations).where(_L.tenant_id == tenant_id, _L.version.is_not(None))
    ).first()  # the published state (a pending change shows once published)
    if row is None or row.deleted:
        return None
    return _location(row, pool, settings)


def prune_tombstones(conn: Connection, older_than: datetime, batch: int) -> int:
    """Delete published tombstones of tenants deleted before ``older_than`` (one batch) and
    raise the horizon past them; commits. Returns how many were deleted."""
    oldest = (
        select(_L.tenant_id)
        .where(_L.deleted, ~_L.pending, _L.changed_at < older_than, _L.version.is_not(None))
        .order_by(_L.changed_at)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    versions: Sequence[int] = (
        conn.execute(
            tenant_locations.delete()
            .where(_L.tenant_id.in_(oldest.scalar_subquery()))
            .returning(_L.version)
        )
        .scalars()
        .all()
    )
    if versions:
        conn.execute(
            update(tenant_location_map)
            .where(tenant_location_map.c.id == 1)
            .values(horizon=func.greatest(tenant_location_map.c.horizon, max(versions)))
        )
    conn.commit()
    return len(versions)


@dataclass(frozen=True)
class DeletionWait:
    """Not yet: come back at ``until``; record ``delete_after`` (None: the wait has not begun,
    the tenant's "not ready" could not be published yet)."""

    until: datetime
    delete_after: datetime | None


def deletion_may_proceed(
    conn: Connection,
    tenant_id: str,
    delete_after: datetime | None,
    clock: Clock,
    staleness: float,
    not_before: datetime | None = None,
) -> DeletionWait | None:
    """None when the tenant's database may be deleted now; else how long to wait.

    The first time, the tenant's "not ready" is published (waiting for a step running
    elsewhere) and the wait starts, from the moment it is published: every client refreshing
    at least once per ``staleness`` seconds has stopped writing by its end; and it lasts at
    least until ``not_before``.
    """
    if delete_after is not None:
        now = clock()
        return None if now >= delete_after else DeletionWait(delete_after, delete_after)
    publish(conn, wait=True)
    published = conn.execute(
        select(_L.state).where(_L.tenant_id == tenant_id, ~_L.pending, _L.version.is_not(None))
    ).scalar()
    conn.commit()
    now = clock()  # after the publish, which may have waited for another step
    floor = not_before or now
    if published != ProvisioningState.DEPROVISIONING:
        # A writer held its row: the next step publishes it; the wait has not begun.
        return DeletionWait(max(now + UNPUBLISHED_RETRY, floor), None)
    until = max(now + timedelta(seconds=staleness), floor)
    return DeletionWait(until, until) if until > now else None


def public_url(url: str) -> str:
    """``url`` without its userinfo, query or fragment (the settings refuse the last two; a
    credential may hide in any): a node's URL is served to every location client."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=host, query="", fragment=""))


def _horizon(conn: Connection) -> int:
    value = conn.execute(select(tenant_location_map.c.horizon)).scalar()
    return int(value or 0)


def _location(row: Any, pool: NodePool, settings: Settings) -> Location:
    node = pool.node(row.node) if row.node is not None else None  # published columns
    ready = not row.deleted and row.state == ProvisioningState.PROVISIONED and node is not None
    return Location(
        tenant_id=row.tenant_id,
        database=settings.database_name(row.tenant_id),
        version=int(row.version),
        ready=ready,
        state=row.state,
        node=node.name if ready and node else None,
        url=public_url(node.url) if ready and node else None,
        incarnation=row.incarnation,
        deleted=bool(row.deleted),
    )
