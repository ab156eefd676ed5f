"""The report: machine facts as a header, then one markdown table of every result."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime

from bench import config
from bench.measure import Result


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=config.ROOT, check=False, capture_output=True, text=True
    )
    return done.stdout.rstrip() if done.returncode == 0 else "unknown"


def _meminfo_gib(field: str) -> str:
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith(f"{field}:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def _cpu_model() -> str:
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def loadavg() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def machine_facts(postgres_version: str, redis_version: str) -> dict[str, str]:
    """What a reader needs to compare two runs."""
    revision = _git("rev-parse", "--short", "HEAD")
    changed = [line[3:] for line in _git("status", "--porcelain").splitlines() if line[3:]]
    if changed:
        revision += f" + uncommitted changes to {', '.join(changed)}"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git rev": revision,
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": _cpu_model(),
        "memory": _meminfo_gib("MemTotal"),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "postgres": postgres_version,
        "redis": redis_version,
        "load average at start (1/5/15 min)": loadavg(),
    }


def render(
    title: str, facts: dict[str, str], results: Sequence[Result], footer: Sequence[str]
) -> str:
    lines = [f"# {title}", ""]
    lines += [f"- {name}: {value}" for name, value in facts.items()]
    lines += [
        "",
        "| benchmark | case | N | result | target | verdict |",
        "|---|---|---:|---|---|---|",
    ]
    for row in results:
        cells = (row.benchmark, row.case, row.n, row.result, row.target, row.verdict)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    if footer:
        lines.append("")
        lines += list(footer)
    return "\n".join(lines) + "\n"
