"""The operator CLI is installed as ``tenantctl`` (and stays ``python -m worker``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

TENANTCTL = Path(sys.executable).parent / "tenantctl"


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def test_tenantctl_and_python_m_worker_are_the_same_cli(db):
    db.execute("INSERT INTO tenants (tenant_id, name) VALUES ('acme', 'Acme')")
    for argv in ([str(TENANTCTL)], [sys.executable, "-m", "worker"]):
        listed = run(*argv, "--json", "list")
        assert listed.returncode == 0, listed.stderr
        assert [t["tenant_id"] for t in json.loads(listed.stdout)] == ["acme"]
    usage = run(str(TENANTCTL), "--help").stdout
    assert usage.startswith("usage: tenantctl ")
    assert run(str(TENANTCTL), "status", "nobody").returncode == 3
