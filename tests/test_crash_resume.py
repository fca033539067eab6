"""kill -9 of a whole GRPO run (the driver and the Ray it started) at several points, resumed each time.

One run of 4 steps (checkpoint every step, the newest 2 kept, 6 training samples so step 4 starts a
new epoch), killed, resumed, killed, resumed:
1. inside the step-2 checkpoint write (the ATOMMEM_CRASH_AT hook: every rank's files written, no manifest);
2. from outside, as soon as the resumed run logs step 3 (wherever it then is: checkpointing, rolling out);
3. then a torn `step-9` (a newer directory with a truncated shard, what a kill during an in-place write
   left before atomic checkpoints) is planted before the last resume, which must finish the run (this one
   through `jobs/train_grpo.py --resume`, what a cluster user resubmits).
Every attempt at step k must draw the samples and train the weight version an uninterrupted run would:
the data position after step k and the weights it is trained from (version k-1) are known without one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from atommem.checkpoints import CRASH_ENV, MANIFEST, verify
from atommem.data.sampler import EpochSampler
from helpers_models import TEST_SYNTH, make_tiny_model_dir
from process_support import wait_until_gone

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]
STEPS, GROUPS, TRAIN_SAMPLES, SEED = 4, 2, 6, 0


class Run:
    """`atommem train` (or `jobs/train_grpo.py`, the same command as a Ray job's entry point) in its own
    session (its own local Ray), output in a log file."""

    def __init__(self, tmp: Path, overrides: list[str], name: str, resume: bool, env: dict | None = None,
                 job: bool = False):
        self.log = tmp / f"{name}.log"
        entry = ["jobs/train_grpo.py"] if job else ["-m", "atommem.cli", "train"]
        cmd = [sys.executable, *entry, "--config", "configs/tiny_cpu.yaml"]
        cmd += [a for o in overrides for a in ("--set", o)] + (["--resume"] if resume else [])
        environ = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", CRASH_ENV)}
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True,
                                         start_new_session=True, env={**environ, **(env or {})})

    def output(self) -> str:
        return self.log.read_text()

    def wait(self, timeout: float = 600) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.kill()

    def wait_until(self, condition, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, f"run ended ({self.proc.returncode}) first:\n{self.output()[-3000:]}"
            assert time.monotonic() < deadline, self.output()[-3000:]
            time.sleep(0.2)

    def kill(self) -> None:
        """kill -9 of everything this run started: its process group, then any straggler of its session."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=60)
        for pid in wait_until_gone("sid", self.proc.pid, 60):  # Ray's workers exit with their raylet
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crash")
    model = make_tiny_model_dir(tmp)
    synth = {f"data.synth.{k}": json.dumps(v) for k, v in vars(TEST_SYNTH).items() if k != "num_samples"}
    overrides = [
        f"data.train={tmp / 'data/train'}", f"data.dev={tmp / 'data/dev'}", f"data.synth.num_samples={TRAIN_SAMPLES}",
        "data.dev_samples=2", *[f"{k}={v}" for k, v in synth.items()], f"model.path={model}", "model.tiny=null",
        f"trainer.run_dir={tmp / 'run'}", f"trainer.steps={STEPS}", "trainer.eval_every=0", "trainer.checkpoint_every=1",
        "trainer.keep_checkpoints=2", "trainer.time_budget_s=null", "trainer.tensorboard=false", f"trainer.seed={SEED}",
        f"grpo.batch_groups={GROUPS}", "grpo.group_size=2", "sampling.max_tokens=8",
        "rollout.envs_per_worker=4", "rollout.num_workers=1", "rollout.min_workers=1", "rollout.max_workers=1",
        "rollout.num_cpus_per_worker=0.5", "engine.num_cpus=0.5", "learner.num_cpus=1", "cluster.num_cpus=3",
    ]
    return tmp, overrides


def _grpo_rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r for r in rows if r["phase"] == "grpo"]


def _expected_positions() -> dict[int, tuple[int, int]]:
    """(epoch, position) of an uninterrupted run's sampler after each step."""
    sampler, out = EpochSampler(TRAIN_SAMPLES, SEED), {}
    for step in range(1, STEPS + 1):
        sampler.take(GROUPS)
        out[step] = (sampler.epoch, sampler.pos)
    return out


def test_kill_9_at_several_points_and_resume_to_the_last_step(setup):
    tmp, overrides = setup
    run_dir, ckpts = tmp / "run", tmp / "run" / "checkpoints"

    # 1. killed inside the step-2 checkpoint write: step-1 stays, the write is a staging leftover
    first = Run(tmp, overrides, "1-crash-in-write", resume=False, env={CRASH_ENV: "checkpoint-write:step-2"})
    assert first.wait() == -signal.SIGKILL, first.output()[-3000:]
    assert verify(ckpts / "step-1")["step"] == 1
    (partial,) = [p for p in ckpts.iterdir() if p.name != "step-1"]
    assert partial.name.startswith(".step-2.partial-") and not (partial / MANIFEST).exists()
    assert any((partial / "state").iterdir())  # the ranks' files were written

    # 2. resumed from step 1 (the leftover named once), killed from outside as soon as it logs step 3
    second = Run(tmp, overrides, "2-killed-at-step-3", resume=True)
    logged_before = len(_grpo_rows(run_dir))
    second.wait_until(lambda: any(r["step"] == 3 for r in _grpo_rows(run_dir)[logged_before:]))
    second.kill()
    out = second.output()
    assert f"resumed from {ckpts / 'step-1'} at step 1 (weight version 1)" in out
    (warning,) = [line for line in out.splitlines() if line.startswith("warning: skipping incomplete checkpoints")]
    assert partial.name in warning

    # 3. a torn newer directory planted, then resumed to the end
    newest = max((p for p in ckpts.iterdir() if p.name.startswith("step-")), key=lambda p: int(p.name[5:]))
    resumed_at = verify(newest)["step"]
    torn = ckpts / "step-9"
    shutil.copytree(newest, torn)
    files = verify(torn)["files"]
    biggest = max(files, key=files.get)
    with open(torn / biggest, "r+b") as f:
        f.truncate(files[biggest] // 2)
    third = Run(tmp, overrides, "3-to-the-end", resume=True, job=True)
    assert third.wait() == 0, third.output()[-3000:]
    out = third.output()
    assert f"resumed from {newest} at step {resumed_at}" in out
    (warning,) = [line for line in out.splitlines() if line.startswith("warning: skipping incomplete checkpoints")]
    assert "step-9" in warning and "bytes" in warning
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-3", "step-4"]  # retention; leftovers removed
    assert (run_dir / "grpo" / "model" / "config.json").is_file()

    # every attempt at every step drew the samples and trained the weights an uninterrupted run would
    rows = _grpo_rows(run_dir)
    expected = _expected_positions()
    assert {r["step"] for r in rows} == set(range(1, STEPS + 1))
    assert sum(r["step"] == 2 for r in rows) == 2  # done again after the crash in its checkpoint write
    for r in rows:
        assert (r["data_epoch"], r["data_pos"]) == expected[r["step"]], r
        assert (r["policy_version"], r["weight_version"]) == (r["step"] - 1, r["step"]), r
        assert r["episodes"] == GROUPS * 2
    assert expected[STEPS][0] == 1  # the last step crossed into the second epoch


def test_resume_under_a_different_config_is_refused_before_anything_starts(setup):
    tmp, overrides = setup
    if not (tmp / "run" / "checkpoints").is_dir():
        pytest.skip("needs the checkpoints of the kill -9 test")
    run = Run(tmp, [*overrides, "grpo.group_size=4", "learner.zero_stage=0"], "4-other-config", resume=True)
    assert run.wait(timeout=120) == 2
    (line,) = [line for line in run.output().splitlines() if line.startswith("error:")]
    assert "grpo.group_size: 2 -> 4" in line and "learner.zero_stage: 3 -> 0" in line and "trainer.run_dir" in line
    fresh = Run(tmp, overrides, "5-fresh-over-old", resume=False)
    assert fresh.wait(timeout=120) == 2
    assert "continue it with --resume" in fresh.output()
