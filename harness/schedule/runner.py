"""Runs a schedule (``harness.schedule.plan``) against the real system, step by step.

Before each step the faults whose time is up are healed (servers, a killed worker, a stopped
broker); after it the invariants that always hold are checked (``harness.schedule.checks``);
a ``settle`` step heals everything, returns every server to the nodes file, waits for the
system to come to rest within ``SETTLE_BOUND_SECONDS`` (every tenant final, two reconcile
runs without a change) and checks the quiet-point invariants too. A violation seen by a
cheap check is looked at again three times, 0.3 s apart (the servers and Postgres are read
one after the other, so a change in between can fake one); it counts only if it stays.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from harness.schedule import checks
from harness.schedule.plan import Step
from harness.schedule.system import SETTLE_BOUND_SECONDS, System


@dataclass
class Failure:
    step: Step
    invariant: str


@dataclass
class Tally:
    """What a run did: operations, API answers, faults, settles."""

    ops: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    settle_seconds: list[float] = field(default_factory=list)
    final_states: Counter[str] = field(default_factory=Counter)
    seen_states: Counter[str] = field(default_factory=Counter)  # tenant-steps in each state
    checks: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "ops": dict(sorted(self.ops.items())),
            "answers": dict(sorted(self.answers.items())),
            "faults": dict(sorted(self.faults.items())),
            "settles": len(self.settle_seconds),
            "longest_settle_seconds": round(max(self.settle_seconds, default=0.0), 1),
            "final_states": dict(sorted(self.final_states.items())),
            "seen_states": dict(sorted(self.seen_states.items())),
            "checks": self.checks,
        }


class Runner:
    def __init__(self, system: System) -> None:
        self.system = system
        self.tally = Tally()
        self.live: set[str] = set()  # created (201) and not deleted (202) since
        self.handmade: set[tuple[str, str]] = set()
        self.adopted: set[tuple[str, str]] = set()  # (tenant, incarnation) adopt accepted
        self.ever_listed: set[str] = set(system.listed)
        self.heal_at: dict[str, int] = {}
        self.worker_back_at: int | None = None
        self.broker_back_at: int | None = None
        self.writes = 0

    def run(self, plan: list[Step]) -> Failure | None:
        for step in plan:
            self._heal_due(step.index)
            self.tally.ops[step.op] += 1
            if step.op == "settle":
                problem = self._settle()
                self._progress(step, problem)
            else:
                getattr(self, f"_op_{step.op}")(step)
                problem = self._check()
            if problem:
                return Failure(step, problem)
        return None

    def _progress(self, step: Step, problem: str | None) -> None:
        seconds = self.tally.settle_seconds[-1] if self.tally.settle_seconds else 0.0
        states = " ".join(f"{k}={v}" for k, v in sorted(self.tally.final_states.items()))
        verdict = "broken" if problem else f"at rest in {seconds:.1f}s"
        print(f"step {step.index}: {verdict}; {states or 'no tenants'}", flush=True)  # noqa: T201

    # ---- healing -----------------------------------------------------------------------------

    def _supervise(self) -> None:
        """What a supervisor does (a restart policy and a liveness probe): a worker that is
        not down on purpose but exited, or wedged (``System.worker_wedged``), is replaced."""
        if self.worker_back_at is not None:
            return
        wedged = self.system.worker_alive() and self.system.worker_wedged()
        if wedged:
            self.system.kill_worker()
            self.tally.faults["worker_wedged_replaced"] += 1
        if self.system.worker_alive():
            return
        if not wedged:
            self.tally.faults["worker_exited_replaced"] += 1
        if self.system.redis_alive():
            self.system.start_worker()
        else:
            self.worker_back_at = self.broker_back_at

    def _heal_due(self, index: int) -> None:
        self._supervise()
        for node, until in list(self.heal_at.items()):
            if until <= index:
                self.system.heal(node)
                del self.heal_at[node]
        if self.broker_back_at is not None and self.broker_back_at <= index:
            self.system.start_redis()
            self.broker_back_at = None
        if self.worker_back_at is not None and self.worker_back_at <= index:
            self.system.start_worker()
            self.worker_back_at = None

    def _heal_all(self) -> None:
        for node in list(self.heal_at):
            self.system.heal(node)
        self.heal_at.clear()
        for node in sorted(self.ever_listed - self.system.listed):
            self.system.set_listed(node, True)
        if not self.system.redis_alive():
            self.system.start_redis()
        self.broker_back_at = None
        if self.worker_back_at is not None:  # killed by the schedule: back now
            self.worker_back_at = None
            if not self.system.worker_alive():
                self.system.start_worker()
        self._supervise()
        if self.system.ensure_beat():
            self.tally.faults["beat_restarted"] += 1

    # ---- checks ------------------------------------------------------------------------------

    def _check(self) -> str | None:
        self.tally.checks += 1
        world = checks.look(self.system)
        self.tally.seen_states.update(
            f"{r.state}/{r.reason}" if r.state == "failed" else r.state for r in world.rows.values()
        )
        found = checks.always(world, self._handmade_now(), self.adopted)
        for _ in range(3):
            if not found:
                return None
            time.sleep(0.3)
            world = checks.look(self.system)
            again = set(checks.always(world, self._handmade_now(), self.adopted))
            found = [v for v in found if v in again]
        return found[0] if found else None

    def _handmade_now(self) -> set[tuple[str, str]]:
        # A hand-made database an operator adopted and then deleted is gone: forget it.
        self.handmade = {(n, d) for n, d in self.handmade if d in self.system.nodes[n].databases()}
        return self.handmade

    def _settle(self) -> str | None:
        self._heal_all()
        started = time.monotonic()
        base = self._runs()
        stable: tuple[Any, ...] | None = None
        stable_at = 0
        while True:
            self._supervise()
            world = checks.look(self.system)
            runs = self._runs()
            if not checks.not_final(world) and runs >= base + 2:
                fingerprint = checks.fingerprint(world)
                if fingerprint != stable:
                    stable, stable_at = fingerprint, runs
                elif runs >= stable_at + 2:
                    break
            else:
                stable = None
            if time.monotonic() - started > SETTLE_BOUND_SECONDS:
                rows = checks.not_final(world)
                late = ", ".join(f"{r.tenant}:{r.state}/{r.reason}" for r in rows)
                return (
                    f"settle: not at rest within {SETTLE_BOUND_SECONDS:g}s after faults stopped "
                    f"(reconcile runs since: {runs - base}; not final: {late or 'none'})"
                )
            time.sleep(0.3)
        self.tally.settle_seconds.append(time.monotonic() - started)
        self.tally.checks += 1
        found = checks.always(world, self._handmade_now(), self.adopted)
        found += checks.settled(world, self.live, self.system.listed)
        self.tally.final_states = Counter(
            f"{r.state}/{r.reason}" if r.state == "failed" else r.state for r in world.rows.values()
        )
        return found[0] if found else None

    def _runs(self) -> int:
        return int(self.system.query("SELECT runs_total FROM reconcile_stats")[0][0])

    # ---- operations --------------------------------------------------------------------------

    def _answer(self, op: str, status: int) -> int:
        self.tally.answers[f"{op} {status}"] += 1
        return status

    def _op_create(self, step: Step) -> None:
        tenant = step.args["tenant"]
        body = {"tenant_id": tenant, "name": f"Schedule {tenant}"}
        if self._answer("create", self.system.call("POST", "/operator/tenants", body)) == 201:
            self.live.add(tenant)

    def _op_delete(self, step: Step) -> None:
        tenant = step.args["tenant"]
        status = self._answer("delete", self.system.call("DELETE", f"/operator/tenants/{tenant}"))
        if status in (202, 404):
            self.live.discard(tenant)

    def _op_retry(self, step: Step) -> None:
        path = f"/operator/tenants/{step.args['tenant']}/influxdb/retry"
        self._answer("retry", self.system.call("POST", path))

    def _op_adopt(self, step: Step) -> None:
        tenant = step.args["tenant"]
        path = f"/operator/tenants/{tenant}/influxdb/adopt"
        if self._answer("adopt", self.system.call("POST", path, {})) == 202:
            row = self.system.query(
                "SELECT influxdb_incarnation, influxdb_node FROM tenants WHERE tenant_id = %s",
                (tenant,),
            )
            self.adopted.update((tenant, str(r[0])) for r in row)
            # The database there is the tenant's now: no longer hand-made, never unmade.
            self.handmade -= {(str(r[1]), checks.PREFIX + tenant) for r in row}

    def _op_write(self, step: Step) -> None:
        tenant = step.args["tenant"]
        found = self.system.query(
            "SELECT influxdb_state, influxdb_node, influxdb_incarnation FROM tenants "
            "WHERE tenant_id = %s",
            (tenant,),
        )
        if not found or found[0][0] != "provisioned" or found[0][1] not in self.system.listed:
            self.tally.answers["write not_ready"] += 1
            return  # a writer asking where the tenant is gets "not ready": it writes nowhere
        _, node, incarnation = found[0]
        self.writes += 1
        lines = [
            f'telemetry,tenant={tenant},inc={incarnation} v={self.writes}i,src="w" '
            f"{1_700_000_000_000_000_000 + self.writes * 1000 + k}"
            for k in range(2)
        ]
        ok = self.system.write_points(node, checks.PREFIX + tenant, lines)
        self.tally.answers["write " + ("ok" if ok else "refused")] += 1

    def _op_handmade(self, step: Step) -> None:
        node, database = step.args["node"], step.args["database"]
        server = self.system.nodes[node]
        if node in self.heal_at or database in server.databases():
            self.tally.answers["handmade skipped"] += 1
            return
        try:
            server.create_database(database)  # by hand, e.g. `influxdb3 create database`
        except ValueError:
            self.tally.answers["handmade refused"] += 1  # the server is full
            return
        tenant = database.removeprefix(checks.PREFIX)
        lines = [
            f"_init,tenant={tenant} initialized=1i 1600000000000000000",
            f'telemetry,tenant={tenant},inc=handmade v=1i,src="h" 1600000000000000000',
        ]
        if self.system.write_points(node, database, lines):
            self.handmade.add((node, database))
            self.tally.answers["handmade made"] += 1
        else:
            server.delete_database(database)
            self.tally.answers["handmade refused"] += 1

    def _op_unmake(self, step: Step) -> None:
        node, database = step.args["node"], step.args["database"]
        if (node, database) not in self._handmade_now():
            self.tally.answers["unmake gone"] += 1  # adopted (and maybe deleted) meanwhile
            return
        self.system.nodes[node].delete_database(database)
        self.handmade.discard((node, database))
        self.tally.answers["unmake deleted"] += 1

    def _op_node_add(self, step: Step) -> None:
        self._op_node_return(step)

    def _op_node_return(self, step: Step) -> None:
        self.system.set_listed(step.args["node"], True)
        self.ever_listed.add(step.args["node"])

    def _op_node_remove(self, step: Step) -> None:
        self.system.set_listed(step.args["node"], False)

    def _fault(self, step: Step) -> None:
        node = step.args["node"]
        if node in self.heal_at:
            self.system.heal(node)
        self.system.fault(node, step.op, float(step.args.get("rate", 1.0)))
        self.heal_at[node] = int(step.args["until"])
        self.tally.faults[step.op] += 1

    _op_outage = _op_hang = _op_errors = _op_full = _fault

    def _op_kill_worker(self, step: Step) -> None:
        self.system.kill_worker()
        self.tally.faults["worker_sigkill"] += 1
        self.worker_back_at = int(step.args["until"])
        if not self.system.redis_alive():
            self.worker_back_at = max(self.worker_back_at, self.broker_back_at or 0)
        self._heal_due(step.index)

    def _op_broker_flush(self, step: Step) -> None:
        if self.system.flush_broker():
            self.tally.faults["broker_flushdb"] += 1

    def _op_broker_restart(self, step: Step) -> None:
        self.system.kill_redis()
        self.tally.faults["broker_restart"] += 1
        self.broker_back_at = int(step.args["until"])
        if self.worker_back_at is not None:
            self.worker_back_at = max(self.worker_back_at, self.broker_back_at)
        self._heal_due(step.index)

    def _op_api_restart(self, step: Step) -> None:
        self.system.restart_api()
        self.tally.faults["api_restart"] += 1

    def _op_reconcile(self, step: Step) -> None:
        self.tally.answers[f"reconcile exit {self.system.cli('reconcile')}"] += 1

    def _op_pause(self, step: Step) -> None:
        time.sleep(float(step.args["seconds"]))
