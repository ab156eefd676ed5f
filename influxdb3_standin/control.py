"""The ``/_standin/*`` control endpoints: state, reset and switches over HTTP.

For a stand-in running as a separate process (``python -m influxdb3_standin``, the benchmarks),
where the ``StandIn`` methods cannot be called directly. Not part of the InfluxDB API: exempt from
auth, latency and faults, and they never show up in the request counters.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from influxdb3_standin.faults import Faults
from influxdb3_standin.messages import (
    ApiError,
    Request,
    Response,
    json_ok,
    load_json_object,
    text_error,
)


class Switchable(Protocol):
    """What the control endpoints drive: the ``StandIn``'s own switches and inspection."""

    def state(self) -> dict[str, object]: ...
    def reset(self) -> None: ...
    def set_latency(self, seconds: float) -> None: ...
    def set_hang(self, on: bool) -> None: ...
    def set_trickle(self, seconds_per_byte: float) -> None: ...
    def set_database_limit(self, limit: int) -> None: ...


_SWITCHES = frozenset(
    {
        "latency",
        "error_rate",
        "hang_rate",
        "reset_rate",
        "seed",
        "hang",
        "trickle",
        "database_limit",
        "outage_seconds",
    }
)


def answer(standin: Switchable, faults: Faults, request: Request) -> tuple[Response, float | None]:
    """The answer, and the seconds of an outage to start once it is sent (if one was asked)."""
    if request.path == "/_standin/state" and request.method == "GET":
        return json_ok(standin.state()), None
    if request.path == "/_standin/reset" and request.method == "POST":
        standin.reset()
        return json_ok(standin.state()), None
    if request.path == "/_standin/switches" and request.method == "POST":
        payload = load_json_object(request.body)
        outage_seconds = _apply_switches(standin, faults, payload)
        response = json_ok(standin.state())
        if outage_seconds is not None:
            # This connection closes with its answer (FIN after the body), so the outage,
            # which tears connections down, cannot cut the answer short under load.
            response = dataclasses.replace(response, headers=(("Connection", "close"),))
        return response, outage_seconds
    return text_error(404, "Not found"), None


def _apply_switches(standin: Switchable, faults: Faults, payload: dict[str, Any]) -> float | None:
    """Check every value first, then switch; returns ``outage_seconds`` for the caller."""
    unknown = sorted(set(payload) - _SWITCHES)
    if unknown:
        raise ApiError(text_error(400, f"unknown switch(es): {', '.join(unknown)}"))

    def number(key: str, low: float, high: float | None = None) -> float | None:
        value = payload.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ApiError(text_error(400, f"{key} must be a number"))
        if value < low or (high is not None and value > high):
            raise ApiError(text_error(400, f"{key} out of range"))
        return float(value)

    latency = number("latency", 0.0)
    trickle = number("trickle", 0.0)
    rates = {key: number(key, 0.0, 1.0) for key in ("error_rate", "hang_rate", "reset_rate")}
    limit = number("database_limit", 0.0)
    if limit is not None and not limit.is_integer():
        raise ApiError(text_error(400, "database_limit must be an integer"))
    outage_seconds = number("outage_seconds", 0.0)
    hang = payload.get("hang")
    if hang is not None and not isinstance(hang, bool):
        raise ApiError(text_error(400, "hang must be true or false"))
    seed = payload.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ApiError(text_error(400, "seed must be an integer"))

    if latency is not None:
        standin.set_latency(latency)
    if any(rate is not None for rate in rates.values()) or seed is not None:
        faults.update_faults(
            error_rate=rates["error_rate"],
            hang_rate=rates["hang_rate"],
            reset_rate=rates["reset_rate"],
            seed=seed,
        )
    if hang is not None:
        standin.set_hang(hang)
    if trickle is not None:
        standin.set_trickle(trickle)
    if limit is not None:
        standin.set_database_limit(int(limit))
    return outage_seconds
