"""Helpers for tests that start whole process trees (a Ray head, a training run) in their own session."""

from __future__ import annotations

import importlib.util
import subprocess
import time
from pathlib import Path

LOCAL_CLUSTER = Path(__file__).resolve().parents[1] / "cluster" / "local" / "cluster.py"


def local_cluster_script():
    """cluster/local/cluster.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("local_cluster", LOCAL_CLUSTER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def live_pids(column: str, value: int) -> list[int]:
    """Processes whose `ps` `column` ("pid", "sid" or "pgid") is `value` and that still run: exited ones stay zombies
    here (PID 1 reaps none), and killpg(pgid, 0) would count a group of zombies as alive."""
    out = subprocess.run(["ps", "-eo", f"pid=,{column}=,stat="], capture_output=True, text=True).stdout
    return [int(p) for p, v, stat in (line.split() for line in out.splitlines() if line.strip())
            if int(v) == value and "Z" not in stat]


def wait_until_gone(column: str, value: int, timeout: float) -> list[int]:
    """Wait up to `timeout` s for the processes of `live_pids(column, value)` to exit; those still running."""
    deadline = time.monotonic() + timeout
    while (left := live_pids(column, value)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left
