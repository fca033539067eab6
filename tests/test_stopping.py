"""stopping.py: SIGTERM asks a running command to finish its work in flight; a second one stops it at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LOOP = """
import sys, time
from atommem.stopping import stop_on_signals, stop_requested, stop_reason
with stop_on_signals():
    print("ready", flush=True)
    while not stop_requested():
        time.sleep(0.01)
    print("draining after", stop_reason(), flush=True)
    if sys.argv[1] == "slow-drain":
        time.sleep(120)
    print("drained", flush=True)
"""


def _run_and_signal(mode: str, signals: int) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([sys.executable, "-c", LOOP, mode], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGTERM)
    if signals == 2:
        assert proc.stdout.readline().strip() == "draining after SIGTERM"
        os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_sigterm_lets_the_loop_finish_and_exit_0():
    out = _run_and_signal("drain", 1)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["draining after SIGTERM", "drained"]
    assert "SIGTERM received" in out.stderr


def test_a_second_sigterm_stops_at_once():
    out = _run_and_signal("slow-drain", 2)
    assert out.returncode != 0 and "drained" not in out.stdout
    assert "KeyboardInterrupt" in out.stderr
