"""bench/gpu_check.sh where it cannot run (no CUDA here): it says so at once, in its one JSON line, exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the script runs its whole check (minutes)")
def test_without_cuda_the_gpu_check_fails_at_once_and_says_why(tmp_path):
    env = {**os.environ, "GPU_CHECK_DIR": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", "bench/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["ok"] is False and "no CUDA GPU visible to torch" in summary["error"]
    assert not list(tmp_path.glob("*.rc"))  # no part was started
