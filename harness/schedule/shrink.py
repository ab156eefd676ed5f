"""Shrinking a failing schedule: fewer steps that still break the same invariant.

Steps keep their original indices (a fault's ``until`` still heals it at the same point), and
a shortened schedule always ends with a quiet point. First the steps after the failing one go;
then chunks of the rest, halving the chunk size (a simple delta debugging), each candidate run
on a fresh system. Timing varies from run to run, so a candidate that passes once is kept out;
the result is a schedule that failed, not a minimal one.
"""

from __future__ import annotations

from collections.abc import Callable

from harness.schedule.plan import Step
from harness.schedule.runner import Failure

Run = Callable[[list[Step]], Failure | None]


def family(invariant: str) -> str:
    """The invariant's name: the text before its first colon ("identity", "orphan", ...)."""
    return invariant.split(":", 1)[0]


def with_quiet_end(steps: list[Step]) -> list[Step]:
    if steps and steps[-1].op == "settle":
        return steps
    return [*steps, Step(steps[-1].index + 1 if steps else 0, "settle")]


def shrink(
    steps: list[Step], failure: Failure, run: Run, budget: int, say: Callable[[str], None]
) -> tuple[list[Step], Failure]:
    """A shorter schedule breaking the same invariant, within ``budget`` runs."""
    wanted = family(failure.invariant)
    best = with_quiet_end([s for s in steps if s.index <= failure.step.index])
    best_failure = failure
    runs = 0

    def still_fails(candidate: list[Step]) -> Failure | None:
        nonlocal runs
        runs += 1
        found = run(candidate)
        verdict = "fails" if found and family(found.invariant) == wanted else "passes"
        say(f"shrink run {runs}/{budget}: {len(candidate)} steps: {verdict}")
        return found if found and family(found.invariant) == wanted else None

    if best != steps and runs < budget:
        found = still_fails(best)
        if found is None:
            return steps, failure  # the steps after the failure mattered (or timing did)
        best_failure = found
    chunk = max(1, (len(best) - 1) // 2)
    while chunk >= 1 and runs < budget:
        start = 0
        body = best[:-1]  # the final quiet point stays
        while start < len(body) and runs < budget:
            candidate = with_quiet_end(body[:start] + body[start + chunk :])
            found = still_fails(candidate) if len(candidate) < len(best) else None
            if found is not None:
                best, best_failure = candidate, found
                body = best[:-1]
            else:
                start += chunk
        chunk //= 2
    return best, best_failure
