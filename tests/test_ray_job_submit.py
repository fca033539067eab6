"""The jobs run under `ray job submit` on a real (local, single-node) Ray cluster with the dashboard.

The head is started with the venv's `ray` and the venv first on PATH, so the job's `python` is the
venv's. Everything the head starts lives in one process group and its own temp dir and ports, so
teardown stops exactly this cluster (never `ray stop`, which would stop every Ray on the machine) and no
other `ray.init()` on the machine can attach to it. Ray >= 2.5x turns on token authentication for
`ray start --head`; the job CLI then needs RAY_AUTH_MODE=token and finds the token the head uses in
~/.ray/auth_token.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from process_support import local_cluster_script, wait_until_gone

pytestmark = [pytest.mark.slow, pytest.mark.ray]

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
RAY = VENV_BIN / "ray"
START_TIMEOUT_S = 240
JOB_TIMEOUT_S = 420
EXCLUDES = [".venv/", "runs/", ".git/", "**/__pycache__/", ".pytest_cache/", ".hypothesis/"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_AUTH_MODE"] = "token"
    env.pop("RAY_ADDRESS", None)
    return env


def _stop(proc: subprocess.Popen) -> None:
    """Stop the head's process group: SIGTERM, then SIGKILL whatever is left after 5 s (the raylet and the
    workers are gone in 2 s; `ray start --block` and the GCS outlast any grace, 20 s tried)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if wait_until_gone("pgid", proc.pid, 5):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    temp = tmp_path_factory.mktemp("ray_head")
    names = ["port", "dashboard-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
             "ray-client-server-port", "metrics-export-port", "runtime-env-agent-port", "node-manager-port",
             "object-manager-port"]
    ports = dict(zip(names, local_cluster_script().free_ports(len(names))))
    cmd = [str(RAY), "start", "--head", "--block", "--num-cpus", "2", "--include-dashboard", "true",
           "--dashboard-host", "127.0.0.1", "--temp-dir", str(temp), "--disable-usage-stats"]
    cmd += [f"--{name}={port}" for name, port in ports.items()]
    log = open(temp / "ray_start.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"ray start exited: {(temp / 'ray_start.log').read_text()[-3000:]}"
            out = subprocess.run([str(RAY), "job", "list", "--address", address], env=_env(),
                                 capture_output=True, text=True, timeout=60)
            if out.returncode == 0:
                break
            assert time.monotonic() < deadline, f"dashboard never answered: {out.stderr[-2000:]}"
            time.sleep(2)
        assert (Path.home() / ".ray" / "auth_token").is_file(), "token auth is on but ~/.ray/auth_token is missing"
        yield address
    finally:
        _stop(proc)
        log.close()


def _submit(address: str, *job_args: str) -> str:
    """`ray job submit` (waits for the end), then the job's final status; fails with its logs."""
    job_id = f"atommem-test-{uuid.uuid4().hex[:8]}"
    runtime_env = {"excludes": EXCLUDES, "env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}}
    cmd = [str(RAY), "job", "submit", "--address", address, "--submission-id", job_id, "--working-dir", ".",
           "--runtime-env-json", json.dumps(runtime_env), "--", "python", *job_args]
    out = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    query = ("import sys; from ray.job_submission import JobSubmissionClient as C; "
             "print(C(sys.argv[1]).get_job_status(sys.argv[2]).value)")
    status = subprocess.run([sys.executable, "-c", query, address, job_id], env=_env(),
                            capture_output=True, text=True, timeout=120)
    assert status.stdout.strip() == "SUCCEEDED", (
        f"job {job_args[0]} status {status.stdout.strip()!r} {status.stderr[-1000:]}\n"
        f"--- submit output ---\n{out.stdout[-4000:]}\n{out.stderr[-2000:]}"
    )
    return out.stdout


def test_prepare_data_then_one_grpo_step_under_ray_job_submit(head, tmp_path):
    from atommem.config import load_config
    from atommem.data.schema import read_samples

    data = [f"data.train={tmp_path / 'data' / 'train'}", f"data.dev={tmp_path / 'data' / 'dev'}", "data.val=null",
            "data.synth.num_samples=16", "data.dev_samples=4"]
    sets = [arg for item in data for arg in ("--set", item)]
    logs = _submit(head, "jobs/prepare_data.py", "--config", "configs/tiny_cpu.yaml", *sets)
    assert str(tmp_path / "data" / "train") in logs  # the job printed where it wrote
    assert len(read_samples(tmp_path / "data" / "train")) == 16
    assert len(read_samples(tmp_path / "data" / "dev")) == 4
    # The job's python was the venv's and it imported the uploaded working dir, not the checkout.
    probe = _submit(head, "-c", "import sys, atommem; print('EXE', sys.executable); print('PKG', atommem.__file__)")
    assert f"EXE {VENV_BIN}" in probe
    assert "PKG " in probe and str(ROOT / "atommem") not in probe

    run_dir = tmp_path / "run"
    grpo = [*data, f"model.path={tmp_path / 'model'}", f"trainer.run_dir={run_dir}", "trainer.steps=1",
            "trainer.eval_every=0", "trainer.checkpoint_every=1", "trainer.tensorboard=false",
            "grpo.batch_groups=2", "grpo.group_size=2", "rollout.envs_per_worker=4",
            "rollout.num_cpus_per_worker=0.25", "engine.num_cpus=0.5", "learner.num_cpus=1"]
    _submit(head, "jobs/train_grpo.py", "--config", "configs/tiny_cpu.yaml",
            *[arg for item in grpo for arg in ("--set", item)])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["phase"] == "grpo"] == [1]
    assert (run_dir / "grpo" / "model" / "config.json").is_file()
    assert (run_dir / "checkpoints" / "step-1").is_dir()
    assert load_config(run_dir / "config.yaml").trainer.steps == 1
