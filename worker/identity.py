"""Whose database is it? The identity rule that keeps one tenant's data from another's.

A tenant row has an *incarnation*: a random id made with the row. The ``_init`` marker point the
worker writes into the tenant's database carries it as a field. A database of the tenant's name
is the tenant's own only when:

- its marker carries this incarnation, or
- this incarnation sent a create to that server whose answer it never saw (a timeout), and the
  database holds nothing: no marker, no table (a create makes none; writes, such as an earlier
  tenant's late writers, make theirs), or
- the row's adoption mode says so (``Adoption.UNMARKED`` for rows that predate the worker and
  ``Adoption.REMADE`` for a database deleted behind our back and made again: an unmarked one;
  ``Adoption.ANY`` after an operator's ``adopt``: any).

Anything else - another incarnation's marker (a deleted tenant of the same id), a marker of
another tenant, or no marker at all - is *not* handed to the tenant: it stops as ``name_taken``.

The marker outlives the database's retention period. InfluxDB hides a point older than the
period from every query, and the marker's timestamp is the tenant's creation, so a tenant older
than the period would lose its mark: its database would read as unknown (a deletion would leave
it in place, holding a slot). So the point also carries a field *named* after the incarnation,
``incarnation_<id>=true``, and the table's schema (``information_schema.columns``), which no
retention touches, names every incarnation that ever marked the database.

Where a row's home is unknown (rows that predate the pool), the home is *located*: every
server listed once; a server that cannot answer makes the answer "unknown", never "absent".
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from worker.states import Adoption

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MARKER_TABLE = "_init"
INCARNATION_COLUMN = "incarnation_"  # + the incarnation: a column of the marker table
# What the client reads of a database to judge it: the marker points (a few: re-runs overwrite
# one), the marker table's columns (incarnations outlive retention), and whether it holds any
# table (a create makes none; writes make theirs).
MARKER_QUERY = 'SELECT * FROM "_init" LIMIT 100'
MARKER_COLUMNS_QUERY = (
    "SELECT column_name FROM information_schema.columns "
    "WHERE table_schema = 'iox' AND table_name = '_init'"
)
TABLES_QUERY = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'iox' LIMIT 1"


def marker_line(tenant_id: str, incarnation: str, timestamp_ns: int) -> str:
    """The marker point in line protocol: ``_init,tenant=<id> incarnation="<incarnation>",
    incarnation_<incarnation>=true,initialized=1i <timestamp>``."""
    string = incarnation.replace("\\", "\\\\").replace('"', '\\"')
    column = _lp_key(INCARNATION_COLUMN + incarnation)
    return (
        f"{MARKER_TABLE},tenant={_lp_key(tenant_id)} "
        f'incarnation="{string}",{column}=true,initialized=1i {timestamp_ns}'
    )


def _lp_key(key: str) -> str:
    """A line-protocol tag value or field key: commas, equals signs and spaces escaped (tenant
    ids and incarnations hold none; a backslash before other characters is literal)."""
    for char in ",= ":
        key = key.replace(char, "\\" + char)
    return key


def marker_timestamp_ns(created_at: datetime | None) -> int:
    """The ``_init`` point's timestamp: the tenant's creation time, so re-runs overwrite it."""
    if created_at is None:
        return 0
    if created_at.tzinfo is None:  # the UI's table may hold naive timestamps: they are UTC
        created_at = created_at.replace(tzinfo=UTC)
    return (created_at - _EPOCH) // timedelta(microseconds=1) * 1000


@dataclass(frozen=True)
class Marker:
    """One ``_init`` point as read back (its ``tenant`` tag and ``incarnation`` field), or one
    incarnation column of the table's schema (no tenant)."""

    tenant: str | None
    incarnation: str | None  # None: written by the inline code, before incarnations existed

    @classmethod
    def of_point(cls, row: Mapping[str, object]) -> Marker:
        """The marker an ``_init`` row (as InfluxDB answers it, never trusted) holds."""
        tenant, incarnation = row.get("tenant"), row.get("incarnation")
        return cls(
            tenant if isinstance(tenant, str) else None,
            incarnation if isinstance(incarnation, str) and incarnation else None,
        )


class Contents(NamedTuple):
    """What the rule reads of a database: its markers, and whether it holds no table at all
    (as a create leaves it; writes make theirs)."""

    markers: list[Marker]
    empty: bool


def schema_markers(columns: Iterable[str]) -> list[Marker]:
    """The incarnations the marker table's columns name (no tenant: the schema has no values)."""
    prefix = len(INCARNATION_COLUMN)
    return [
        Marker(None, column[prefix:])
        for column in sorted(columns)
        if column.startswith(INCARNATION_COLUMN) and column[prefix:]
    ]


class Verdict(enum.StrEnum):
    """What a database of the tenant's name is to the tenant."""

    OURS = "ours"
    FOREIGN = "foreign"  # marked for another incarnation or tenant
    UNKNOWN = "unknown"  # no marker of ours and no reason to believe it is ours


def judge(
    markers: Iterable[Marker],
    *,
    tenant_id: str,
    incarnation: str,
    adoption: Adoption | None,
    own_create_unanswered: bool,
) -> Verdict:
    """Apply the identity rule (module docstring) to the markers found in the database."""
    markers = list(markers)
    incarnations = {m.incarnation for m in markers if m.incarnation}
    if incarnation in incarnations:
        return Verdict.OURS
    if adoption == Adoption.ANY:
        return Verdict.OURS
    other_tenants = {m.tenant for m in markers if m.tenant and m.tenant != tenant_id}
    if incarnations or other_tenants:
        return Verdict.FOREIGN
    # Unmarked, or marked by the inline code for this tenant id (no incarnation).
    if adoption in (Adoption.UNMARKED, Adoption.REMADE):
        return Verdict.OURS
    if own_create_unanswered and not markers:
        return Verdict.OURS
    return Verdict.UNKNOWN


def describe(verdict: Verdict, database: str, node: str) -> str:
    """The operator-facing sentence for a database that is not the tenant's."""
    whose = (
        "is marked for another tenant or an earlier tenant of this id"
        if verdict is Verdict.FOREIGN
        else "has no marker of this tenant (unknown origin)"
    )
    return (
        f"database {database} already exists on node {node} and {whose}; it was not used. "
        "Adopt it (tenantctl adopt) or delete it there and retry"
    )


@dataclass(frozen=True)
class Location:
    """Where a database of a given name was seen across the pool."""

    found: tuple[str, ...]  # nodes listing it
    unanswered: tuple[str, ...]  # nodes that could not be listed

    @property
    def absent(self) -> bool:
        """Confirmed absent: every server answered and none has it."""
        return not self.found and not self.unanswered

    @property
    def home(self) -> str | None:
        """The one server holding it, known only once every server answered: a silent one may
        hold the tenant's data, and the copy found elsewhere be a stray of a misrouted write."""
        return self.found[0] if len(self.found) == 1 and not self.unanswered else None


def locate(
    database: str, listings: Mapping[str, Collection[str] | None], departed: Iterable[str] = ()
) -> Location:
    """Where ``database`` is, from one listing per node (None: the node did not answer);
    ``departed``: servers just left out of the nodes file (unanswered: they may be back)."""
    listings = {**dict.fromkeys(departed), **listings}
    found = tuple(
        sorted(n for n, names in listings.items() if names is not None and database in names)
    )
    unanswered = tuple(sorted(n for n, names in listings.items() if names is None))
    return Location(found, unanswered)


def retention_note(row: Any, adoption: Adoption | None, created: bool | None) -> str | None:
    """What to tell of a database taken as the tenant's that the worker did not create (an
    adopted, remade or pre-worker one): it keeps the retention it was made with (by a write:
    none), which InfluxDB 3 Core cannot change, not the row's ``influxdb_retention_period``."""
    period = row.influxdb_retention_period
    if created or adoption is None or not period:
        return None
    return (
        f"taken as made elsewhere ({adoption}): its retention is the one it was made with "
        f"(none, if by a write), not {period}; InfluxDB 3 Core cannot change it"
    )
