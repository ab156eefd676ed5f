"""Timing, percentiles, trends and the result rows every benchmark returns."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import requests


@dataclass(frozen=True)
class Result:
    """One line of the report's table."""

    benchmark: str
    case: str
    n: str
    result: str
    target: str
    verdict: str  # "met", "missed", "n/a" (a baseline or a number without a target), "error"


def verdict(met: bool) -> str:
    return "met" if met else "missed"


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile: the smallest value with at least p % of values at or below it."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def fmt_seconds(seconds: float) -> str:
    """Milliseconds below one second, seconds above."""
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


@dataclass
class Timings:
    """Per-request wall times of one sequential series, and what went wrong."""

    seconds: list[float] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # "HTTP 500" or an exception name
    cpu_busy: float = 0.0  # the machine's, while the series ran: what else competed

    def p(self, percent: float) -> float:
        return percentile(self.seconds, percent)

    def summary(self) -> str:
        text = f"p50 {fmt_seconds(self.p(50))} · p99 {fmt_seconds(self.p(99))}"
        text += f" · max {fmt_seconds(max(self.seconds))} · machine CPU {self.cpu_busy:.0%} busy"
        if self.unexpected:
            text += f" · {len(self.unexpected)} unexpected ({self.unexpected[0]})"
        return text


Check = Callable[[requests.Response], str | None]


def expect_status(status: int) -> Check:
    """A check that accepts exactly ``status``."""

    def check(response: requests.Response) -> str | None:
        return None if response.status_code == status else f"HTTP {response.status_code}"

    return check


def time_requests(calls: Iterable[Callable[[], requests.Response]], check: Check) -> Timings:
    """Run the calls one after another, timing each from send to the full answer.

    ``check`` looks at each answer after its time is taken; it returns what was wrong, or None.
    """
    timings = Timings()
    cpu_before = cpu_ticks()
    for call in calls:
        started = time.perf_counter()
        try:
            response = call()
            response.content  # noqa: B018 - reading the whole body is part of the request
        except requests.RequestException as exc:
            timings.seconds.append(time.perf_counter() - started)
            timings.unexpected.append(type(exc).__name__)
            continue
        timings.seconds.append(time.perf_counter() - started)
        problem = check(response)
        if problem:
            timings.unexpected.append(problem)
    timings.cpu_busy = cpu_busy_since(cpu_before)
    return timings


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def cpu_busy_since(before: tuple[int, int]) -> float:
    """Fraction of all cores' time spent busy since ``before`` (a cpu_ticks() snapshot)."""
    busy, total = cpu_ticks()
    elapsed = total - before[1]
    return (busy - before[0]) / elapsed if elapsed else 0.0


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    count = len(points)
    if count < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / count
    mean_y = sum(y for _, y in points) / count
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def _process_groups() -> dict[int, tuple[str, int]]:
    """pid -> (group, CPU jiffies so far) for every process: who is burning the CPU."""
    found: dict[int, tuple[str, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="utf-8", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                argv = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone in between
        ticks = int(fields[11]) + int(fields[12])  # utime + stime
        found[int(entry.name)] = (_group(argv), ticks)
    return found


def _group(argv: str) -> str:
    if argv.startswith("postgres"):
        return "Postgres"
    if "redis-server" in argv:
        return "Redis"
    if "rabbit" in argv or argv.startswith("/usr/lib/erlang"):
        return "RabbitMQ"
    if "influxdb3_standin" in argv:
        return "stand-in"
    if "celery" in argv and " worker" in argv:
        return "worker"
    return "other"


class ProcessCpu:
    """CPU time per process group (worker, Postgres, Redis, RabbitMQ, stand-in, other) between
    ``start()`` and ``seconds()``; processes started in between count in full."""

    def start(self) -> None:
        self._before = _process_groups()

    def seconds(self) -> dict[str, float]:
        spent: dict[str, float] = {}
        for pid, (group, ticks) in _process_groups().items():
            before = self._before.get(pid)
            delta = ticks - before[1] if before and before[0] == group else ticks
            spent[group] = spent.get(group, 0.0) + delta / _TICKS_PER_SECOND
        return spent


_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
