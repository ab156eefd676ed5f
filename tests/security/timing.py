"""How the security suite times a piece of work on a shared, loaded machine."""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable


def cpu_seconds(work: Callable[[str], object], text: str, runs: int = 5) -> float:
    """The best of ``runs`` timings of ``work(text)`` in this thread's CPU seconds - wall time
    also counts the time others had the core - with the garbage collector off (as timeit
    does): findall's 100,000 empty matches would otherwise time a collection."""
    best = math.inf
    collecting = gc.isenabled()
    gc.disable()
    try:
        for _ in range(runs):
            started = time.thread_time()
            work(text)
            best = min(best, time.thread_time() - started)
    finally:
        if collecting:
            gc.enable()
    return best
