"""The failure switches: latency, random 5xx / hangs / resets, hanging every request, and
answers trickled a byte at a time.

Real servers only show these on bad days; here they are switched on so that retry and failure
handling can be tested over real HTTP. Every request passes :meth:`Faults.pre_answer` before it is
answered. State is guarded by the stand-in's lock, through the condition built on it, which also
wakes hanging requests and latency sleeps when they must give up.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Literal

from influxdb3_standin.messages import Response, text_error

Fate = Literal["ok", "error", "reset", "hang", "drop"]

_FAULT_ERRORS = (
    (500, "internal error: WAL buffer full"),
    (503, "service unavailable: the write buffer is busy, try again later"),
)


@dataclass
class _Switches:
    latency: float = 0.0
    error_rate: float = 0.0
    hang_rate: float = 0.0
    reset_rate: float = 0.0
    hang: bool = False
    trickle: float = 0.0


class Faults:
    """The switches and the generations that release waiting requests."""

    def __init__(self, changed: threading.Condition) -> None:
        self._changed = changed  # a condition on the stand-in's lock; `with` takes the lock
        self._switches = _Switches()
        self._random = random.Random()
        self._hang_generation = 0  # bumped to release hanging requests
        self._disconnect_generation = 0  # bumped by outage/stop: in-flight requests give up

    def set_latency(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        with self._changed:
            self._switches.latency = float(seconds)

    def set_faults(
        self,
        error_rate: float = 0.0,
        hang_rate: float = 0.0,
        reset_rate: float = 0.0,
        seed: int | None = None,
    ) -> None:
        for name, rate in (
            ("error_rate", error_rate),
            ("hang_rate", hang_rate),
            ("reset_rate", reset_rate),
        ):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        with self._changed:
            self._switches.error_rate = float(error_rate)
            self._switches.hang_rate = float(hang_rate)
            self._switches.reset_rate = float(reset_rate)
            if seed is not None:
                self._random.seed(seed)
            self.release_hangs()

    def update_faults(
        self,
        error_rate: float | None,
        hang_rate: float | None,
        reset_rate: float | None,
        seed: int | None,
    ) -> None:
        """:meth:`set_faults`, keeping the rates given as None at their current values."""
        with self._changed:
            current = self._switches
            self.set_faults(
                error_rate=current.error_rate if error_rate is None else error_rate,
                hang_rate=current.hang_rate if hang_rate is None else hang_rate,
                reset_rate=current.reset_rate if reset_rate is None else reset_rate,
                seed=seed,
            )

    def set_trickle(self, seconds_per_byte: float) -> None:
        if seconds_per_byte < 0:
            raise ValueError("trickle must be >= 0")
        with self._changed:
            self._switches.trickle = float(seconds_per_byte)

    def trickle(self) -> float:
        with self._changed:
            return self._switches.trickle

    def set_hang(self, on: bool) -> None:
        with self._changed:
            self._switches.hang = on
            if not on:
                self.release_hangs()

    def release_hangs(self) -> None:
        """Let every hanging request go (it is dropped unanswered)."""
        with self._changed:
            self._hang_generation += 1
            self._changed.notify_all()

    def disconnect(self) -> None:
        """Outage or stop: hanging requests and latency sleeps give up, unanswered."""
        with self._changed:
            self._hang_generation += 1
            self._disconnect_generation += 1
            self._changed.notify_all()

    def reset(self) -> None:
        """All switches off, a fresh random generator; requests hanging or in a latency sleep
        are dropped unanswered, as by a restart (one past both, answering at that moment,
        still lands)."""
        with self._changed:
            self._switches = _Switches()
            self._random = random.Random()
            self.disconnect()

    def snapshot(self) -> dict[str, object]:
        with self._changed:
            switches = self._switches
            return {
                "latency": switches.latency,
                "error_rate": switches.error_rate,
                "hang_rate": switches.hang_rate,
                "reset_rate": switches.reset_rate,
                "hang": switches.hang,
                "trickle": switches.trickle,
            }

    def pre_answer(self) -> Fate:
        """Apply latency and the fault switches; a hang blocks here until it is released."""
        with self._changed:
            latency = self._switches.latency
            disconnects = self._disconnect_generation
            if latency > 0 and self._changed.wait_for(
                lambda: self._disconnect_generation != disconnects, timeout=latency
            ):
                return "drop"
            switches = self._switches
            # One draw per request: [0, error) errors, then hangs, then resets.
            draw = self._random.random()
            error_below = switches.error_rate
            hang_below = error_below + switches.hang_rate
            reset_below = hang_below + switches.reset_rate
            fate: Fate = "ok"
            if switches.hang or error_below <= draw < hang_below:
                fate = "hang"
            elif draw < error_below:
                fate = "error"
            elif draw < reset_below:
                fate = "reset"
            if fate == "hang":
                # Released by set_hang(False), set_faults(), an outage, reset() or stop(); the
                # request is then dropped unanswered (the client has given up long ago).
                hangs = self._hang_generation
                self._changed.wait_for(lambda: self._hang_generation != hangs)
                return "drop"
            return fate

    def fault_error(self) -> Response:
        """A 500 or 503 as Core sends them when its write buffer is in trouble."""
        with self._changed:
            status, message = self._random.choice(_FAULT_ERRORS)
        return text_error(status, message)
