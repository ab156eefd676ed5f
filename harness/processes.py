"""Starting and stopping the processes a test or benchmark needs, from the repository root.

Every process starts in its own session, so that stopping it by process group takes its
children (a prefork worker's pool) with it. Logs go to a file per process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def wait_until(
    condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1
) -> Any:
    """Poll ``condition`` until it returns something truthy; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def http_ok(url: str) -> bool:
    """True when ``url`` answers 2xx within half a second (a server's readiness check)."""
    try:
        with urllib.request.urlopen(url, timeout=0.5) as response:  # noqa: S310 - our URL
            return 200 <= int(response.status) < 300
    except (OSError, ValueError):
        return False


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(
    argv: list[str],
    log_path: Path,
    *,
    ready: Callable[[], bool],
    what: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session, logging to ``log_path``; return once ``ready()``.

    Raises RuntimeError if it exits first and TimeoutError if it is not ready in time (it is
    stopped in both cases)."""
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=dict(os.environ if env is None else env),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def started() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}; see {log_path}")
        return ready()

    try:
        wait_until(started, timeout, what)
    except BaseException:
        stop(process)
        raise
    return process


def stop(process: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """Stop a process we started: SIGTERM to its group (a Celery worker then stops its own
    pool), SIGKILL to the group if anything is still there after ``grace`` seconds."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        # Not reaped yet, so the group id is still ours: the pool children go too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def _log_count(log_path: Path, text: str) -> int:
    return log_path.read_text(errors="replace").count(text) if log_path.exists() else 0


def start_worker(
    log_path: Path,
    *,
    concurrency: int,
    hostname: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    pool: str = "prefork",
    queues: str | None = None,
) -> subprocess.Popen[bytes]:
    """A real ``celery -A worker worker`` (prefork unless ``pool`` says otherwise), ready
    when its log says so; ``queues``: only these (``-Q``), e.g. ``webhooks``."""
    options = [
        f"--pool={pool}",
        f"--concurrency={concurrency}",
        f"--hostname={hostname}",
        "--without-mingle",
        "--without-gossip",
    ]
    if queues:
        options.append(f"--queues={queues}")
    return _celery("worker", options, log_path, "ready.", env, timeout)


def start_beat(
    log_path: Path, schedule: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A real ``celery -A worker beat`` (the reconcile schedule), ready once it runs."""
    options = ["--loglevel=DEBUG", f"--schedule={schedule}", "--max-interval=1"]
    return _celery("beat", options, log_path, "beat: Starting", env, 30.0)


def _celery(
    command: str,
    options: list[str],
    log_path: Path,
    ready_line: str,
    env: Mapping[str, str] | None,
    timeout: float,
) -> subprocess.Popen[bytes]:
    # Ready once the log shows ``ready_line`` once more than before (the log may be reused).
    seen_before = _log_count(log_path, ready_line)
    return start(
        [sys.executable, "-m", "celery", "-A", "worker", command, *options],
        log_path,
        ready=lambda: _log_count(log_path, ready_line) > seen_before,
        what=f"celery {command}",
        env=env,
        timeout=timeout,
    )


def start_api(
    log_path: Path, port: int, env: Mapping[str, str] | None = None, timeout: float = 30.0
) -> subprocess.Popen[bytes]:
    """The operator API (``python -m api_hooks``) on 127.0.0.1:``port``, ready once /healthz
    answers (which reads neither Postgres nor the broker)."""
    return start(
        [sys.executable, "-m", "api_hooks", "--port", str(port)],
        log_path,
        ready=lambda: http_ok(f"http://127.0.0.1:{port}/healthz"),
        what="the operator API",
        env=env,
        timeout=timeout,
    )


def pool_pids(parent: int) -> list[int]:
    """Pids of the direct children of ``parent`` (a prefork worker's pool processes)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            children.append(int(entry.name))
    return sorted(children)
