"""The app is built by a factory: ``uvicorn api_hooks.app:create_app --factory`` and
``python -m api_hooks`` serve it; importing ``api_hooks.app`` needs no settings.

The servers started here answer /healthz only, which reads no database and no broker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, free_port, stop_process, wait_for


def test_importing_the_app_module_needs_no_settings():
    # Only PATH: no OPERATOR_TOKEN. A module-level app would fail right here.
    imported = subprocess.run(
        [sys.executable, "-c", "import api_hooks.app as m; print(hasattr(m, 'app'))"],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "False"


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "uvicorn", "api_hooks.app:create_app", "--factory", "--host", "127.0.0.1"],
        ["-m", "api_hooks", "--host", "127.0.0.1"],
    ],
    ids=["uvicorn-factory", "python-m-api_hooks"],
)
def test_the_api_serves_from_its_factory(command, tmp_path: Path):
    port = free_port()
    log_path = tmp_path / "api.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, *command, "--port", str(port)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        # Stop waiting as soon as the process is gone: a failed start shows in its log below.
        wait_for(lambda: process.poll() is not None or _healthy(base), timeout=30)
        assert process.poll() is None, f"{' '.join(command)} exited with {process.returncode}"
        assert requests.get(f"{base}/operator/tenants/acme/stats", timeout=5).status_code == 401
    except BaseException:
        print(log_path.read_text(errors="replace"))  # pytest shows it with the failure
        raise
    finally:
        stop_process(process)


def _healthy(base: str) -> bool:
    try:
        response = requests.get(f"{base}/healthz", timeout=2)
    except requests.ConnectionError:
        return False
    return response.status_code == 200 and response.json() == {"status": "ok"}
