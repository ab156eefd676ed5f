"""``python -m harness.schedule --seed N --steps S``: run one schedule on the real system.

Prints the counts of every operation and fault at the end. A broken invariant prints the
schedule up to the failing step (to replay: the same seed, or ``--replay FILE`` with the steps
as JSON, which may be cut down by hand), the invariant, and exits 1; with ``--shrink N``, up
to N more runs look for a shorter schedule that breaks the same invariant
(``harness.schedule.shrink``), printed after the first.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from harness.schedule import plan as plans
from harness.schedule.plan import Step
from harness.schedule.runner import Failure, Runner, Tally
from harness.schedule.shrink import shrink
from harness.schedule.system import SETTLE_BOUND_SECONDS, System


def run_once(steps: list[Step], seed: int) -> tuple[Failure | None, Tally, float, Path]:
    """One run of ``steps`` on a fresh system; the failure (if any), counts, seconds, logs."""
    workdir = Path(tempfile.mkdtemp(prefix=f"schedule-{seed}-"))
    (workdir / "schedule.json").write_text(plans.dump(steps))
    print(f"logs and the schedule: {workdir}", flush=True)  # noqa: T201 - a command prints
    system = System(workdir, f"{seed}")
    runner = Runner(system)
    started = time.monotonic()
    failure = None
    try:
        system.start()
        failure = runner.run(steps)
    finally:
        elapsed = time.monotonic() - started
        system.stop()
    return failure, runner.tally, elapsed, workdir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/schedule", description=__doc__)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--settle-every", type=int, default=100, help="steps between quiet points")
    parser.add_argument("--replay", type=Path, help="run these steps (JSON) instead of a plan")
    parser.add_argument("--shrink", type=int, default=0, help="on failure, up to N more runs")
    parser.add_argument("--keep", action="store_true", help="keep the logs' folder")
    args = parser.parse_args(argv)

    if args.replay:
        steps = plans.load(args.replay.read_text())
    else:
        steps = plans.make_plan(args.seed, args.steps, args.settle_every)
    say = print
    say(f"schedule seed={args.seed} steps={len(steps)} settle_every={args.settle_every}")
    failure, tally, elapsed, workdir = run_once(steps, args.seed)
    summary = {
        "seed": args.seed,
        "steps": len(steps),
        "clean": failure is None,
        "seconds": round(elapsed, 1),
        "settle_bound_seconds": SETTLE_BOUND_SECONDS,
        **tally.as_dict(),
    }
    if failure is not None:
        report(args.seed, steps, failure, workdir, f"--steps {len(steps)}")
        if args.shrink:
            shrunk, shrunk_failure = shrink(
                steps, failure, lambda c: run_once(c, args.seed)[0], args.shrink, say
            )
            if len(shrunk) < len(steps):
                kept = Path(workdir) / "shrunk.json"
                kept.write_text(plans.dump(shrunk))
                say(f"\nSHRUNK to {len(shrunk)} steps:")
                report(args.seed, shrunk, shrunk_failure, workdir, f"--replay {kept}")
    say("RESULT " + json.dumps(summary))
    if failure is None and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if failure is None else 1


def report(seed: int, steps: list[Step], failure: Failure, workdir: Path, how: str) -> None:
    say = print
    say(f"\nSCHEDULE (seed {seed}), up to the failing step:")
    for step in steps:
        if step.index <= failure.step.index:
            say(step.line())
    say(f"\nFIRST BROKEN INVARIANT at step {failure.step.index} ({failure.step.op}):")
    say(f"  {failure.invariant}")
    say(f"replay: bash scripts/schedule --seed {seed} {how}")
    if not how.startswith("--replay"):
        say(f"    or: bash scripts/schedule --seed {seed} --replay {workdir}/schedule.json")


if __name__ == "__main__":
    sys.exit(main())
