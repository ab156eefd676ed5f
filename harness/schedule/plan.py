"""The schedule: a list of steps drawn from ``random.Random(seed)`` alone, before anything runs.

Each step names one operation and its arguments. The generator keeps a small model of what the
schedule itself has done (ids created and deleted, servers listed, hand-made databases, faults
in force) so that its choices make sense - deleting a live id, returning a removed server - but
never looks at the system: the same seed gives the same list, which is what a failing run
prints and what ``--replay`` runs again. Faults carry ``until``, the step index at which the
runner heals them; a ``settle`` step (every ``settle_every`` steps, and last) is a quiet point.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

NODES = ("n1", "n2", "n3", "n4")  # n4 runs from the start but joins the nodes file later
FIRST_LISTED = ("n1", "n2", "n3")
TENANT_IDS = tuple(f"t{k:02d}" for k in range(16))  # a small pool: ids come back after deletes
MAX_HANDMADE = 4

# Relative weights of the operations (settle steps come on their own schedule).
WEIGHTS: dict[str, float] = {
    "create": 20,
    "delete": 9,
    "retry": 5,
    "adopt": 3,
    "write": 12,
    "handmade": 5,
    "unmake": 2,
    "node_add": 1,
    "node_remove": 1.5,
    "node_return": 1.5,
    "outage": 3,
    "hang": 2,
    "errors": 3,
    "full": 2,
    "kill_worker": 1.2,
    "broker_flush": 1.5,
    "broker_restart": 0.8,
    "api_restart": 0.6,
    "reconcile": 1.5,
    "pause": 5,
}
FAULTS = ("outage", "hang", "errors", "full")


@dataclass(frozen=True)
class Step:
    """One operation of the schedule; ``args`` is JSON-able."""

    index: int
    op: str
    args: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        detail = " ".join(f"{k}={v}" for k, v in sorted(self.args.items()))
        return f"{self.index:5d} {self.op} {detail}".rstrip()

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "op": self.op, "args": self.args}


def dump(steps: list[Step]) -> str:
    return json.dumps([s.as_json() for s in steps])


def load(text: str) -> list[Step]:
    return [Step(int(s["index"]), str(s["op"]), dict(s["args"])) for s in json.loads(text)]


class _Model:
    """What the schedule has done so far, as far as its own steps tell."""

    def __init__(self) -> None:
        self.live: set[str] = set()
        self.listed: set[str] = set(FIRST_LISTED)
        self.ever_listed: set[str] = set(FIRST_LISTED)
        self.handmade: list[tuple[str, str]] = []
        self.fault_until: dict[str, int] = {}  # node -> step index its fault heals at
        self.worker_down_until = -1
        self.broker_down_until = -1

    def heal(self, index: int) -> None:
        self.fault_until = {n: u for n, u in self.fault_until.items() if u > index}

    def settle(self) -> None:
        self.fault_until.clear()
        self.listed |= self.ever_listed
        self.worker_down_until = self.broker_down_until = -1


def make_plan(seed: int, steps: int, settle_every: int = 100) -> list[Step]:
    """``steps`` steps for ``seed``; the last one, and every ``settle_every``-th, is a settle."""
    rng = random.Random(seed)
    model = _Model()
    plan: list[Step] = []
    ops = list(WEIGHTS)
    weights = [WEIGHTS[o] for o in ops]
    for index in range(steps):
        model.heal(index)
        if index == steps - 1 or (index + 1) % settle_every == 0:
            model.settle()
            plan.append(Step(index, "settle"))
            continue
        step = None
        while step is None:
            step = _draw(rng, rng.choices(ops, weights)[0], index, model)
        plan.append(step)
    return plan


def _draw(rng: random.Random, op: str, index: int, model: _Model) -> Step | None:  # noqa: PLR0912, PLR0915
    """One step of kind ``op``, or None when it makes no sense now (another is drawn)."""
    live = sorted(model.live)
    if op == "create":
        free = [t for t in TENANT_IDS if t not in model.live]
        if not free:
            return None
        tenant = rng.choice(free)
        model.live.add(tenant)
        return Step(index, op, {"tenant": tenant})
    if op in ("delete", "adopt", "write"):
        if not live:
            return None
        tenant = rng.choice(live)
        if op == "delete":
            model.live.discard(tenant)
        return Step(index, op, {"tenant": tenant})
    if op == "retry":
        return Step(index, op, {"tenant": rng.choice(live or list(TENANT_IDS))})
    if op == "handmade":
        if len(model.handmade) >= MAX_HANDMADE:
            return None
        node = rng.choice(sorted(model.listed))
        # Mostly the name of an id not live now (a later create meets it), else no tenant's.
        idle = [t for t in TENANT_IDS if t not in model.live]
        name = f"telemetry_{rng.choice(idle)}" if idle and rng.random() < 0.7 else None
        name = name or f"telemetry_hm{index}"
        model.handmade.append((node, name))
        return Step(index, op, {"node": node, "database": name})
    if op == "unmake":
        if not model.handmade:
            return None
        node, name = model.handmade.pop(rng.randrange(len(model.handmade)))
        return Step(index, op, {"node": node, "database": name})
    if op == "node_add":
        if "n4" in model.ever_listed:
            return None
        model.listed.add("n4")
        model.ever_listed.add("n4")
        return Step(index, op, {"node": "n4"})
    if op == "node_remove":
        if len(model.listed) <= 2:
            return None
        node = rng.choice(sorted(model.listed))
        model.listed.discard(node)
        return Step(index, op, {"node": node})
    if op == "node_return":
        away = sorted(model.ever_listed - model.listed)
        if not away:
            return None
        node = rng.choice(away)
        model.listed.add(node)
        return Step(index, op, {"node": node})
    if op in FAULTS:
        calm = [n for n in NODES if n not in model.fault_until]
        if not calm:
            return None
        node = rng.choice(calm)
        until = index + rng.randint(1, 12)
        model.fault_until[node] = until
        args: dict[str, Any] = {"node": node, "until": until}
        if op == "errors":
            args["rate"] = rng.choice((0.3, 0.6, 1.0))
        return Step(index, op, args)
    if op in ("kill_worker", "broker_restart"):
        attr = "worker_down_until" if op == "kill_worker" else "broker_down_until"
        if getattr(model, attr) > index:
            return None
        until = index + rng.randint(0, 6)
        setattr(model, attr, until)
        return Step(index, op, {"until": until})
    if op == "pause":
        return Step(index, op, {"seconds": rng.choice((0.2, 0.5, 1.0))})
    return Step(index, op)  # broker_flush, api_restart, reconcile
