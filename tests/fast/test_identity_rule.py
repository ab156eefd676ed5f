"""Whose database is it (worker.identity): the rule, case by case, and locating one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from worker.identity import Marker, Verdict, judge, locate, marker_timestamp_ns
from worker.states import Adoption

OURS = "inc-ours"


@pytest.mark.parametrize(
    ("markers", "adoption", "unanswered", "verdict"),
    [
        ([Marker("acme", OURS)], None, False, Verdict.OURS),
        ([Marker("acme", OURS), Marker("acme", None)], None, False, Verdict.OURS),
        ([Marker("acme", "inc-other")], None, False, Verdict.FOREIGN),
        ([Marker("acme", "inc-other")], Adoption.UNMARKED, False, Verdict.FOREIGN),
        ([Marker("acme", "inc-other")], Adoption.ANY, False, Verdict.OURS),
        ([Marker("globex", None)], Adoption.UNMARKED, False, Verdict.FOREIGN),
        ([Marker("acme", None)], None, False, Verdict.UNKNOWN),
        ([Marker("acme", None)], Adoption.UNMARKED, False, Verdict.OURS),
        ([Marker("acme", None)], None, True, Verdict.UNKNOWN),  # another marker is there
        ([], None, False, Verdict.UNKNOWN),
        ([], None, True, Verdict.OURS),  # our unanswered create, nothing else there
        ([], Adoption.UNMARKED, False, Verdict.OURS),
    ],
)
def test_the_identity_rule(markers, adoption, unanswered, verdict):
    result = judge(
        markers,
        tenant_id="acme",
        incarnation=OURS,
        adoption=adoption,
        own_create_unanswered=unanswered,
    )
    assert result is verdict


def test_locating_needs_every_server_to_say_absent():
    listings = {"a": {"telemetry_x"}, "b": set(), "c": None}
    assert locate("telemetry_x", listings).found == ("a",)
    missing = locate("telemetry_y", listings)
    assert (missing.found, missing.unanswered, missing.absent) == ((), ("c",), False)
    assert locate("telemetry_y", {"a": set(), "b": set()}).absent


def test_the_marker_time_is_the_tenants_creation_naive_or_not():
    created = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    expected = 1767323045678901000
    assert marker_timestamp_ns(created) == expected
    assert marker_timestamp_ns(created.replace(tzinfo=None)) == expected
    assert marker_timestamp_ns(created + timedelta(microseconds=1)) == expected + 1000
