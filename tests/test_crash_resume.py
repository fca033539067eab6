"""kill -9 of a whole GRPO run (the driver and the Ray it started) at several points, resumed each time,
against a real uninterrupted run of the same seed.

One run of 4 steps (checkpoint every step, the newest 2 kept, 6 training samples so step 4 starts a
new epoch, two engines), killed, resumed, killed, resumed:
1. inside the step-2 checkpoint write (the ATOMMEM_CRASH_AT hook: every rank's files written, no manifest);
2. from outside, as soon as the resumed run logs step 3 (wherever it then is: checkpointing, rolling out);
3. then a torn `step-9` (a newer directory with a truncated shard, what a kill during an in-place write
   left before atomic checkpoints) is planted before the last resume, which must finish the run (this one
   through `jobs/train_grpo.py --resume`, what a cluster user resubmits).
Each resume must bring back the checkpoint's weights: the sha256 of its tensors (computed here from the
files with DeepSpeed's zero_to_fp32) equals the learner's after loading and every engine's after the
resume's sync (both printed by the run). Every attempt at step k must draw the samples and train from the
weight version the uninterrupted run did at step k, and (deterministic replay: per-episode seeds from
the run's seed, the step and the draw, the HF engine, sync mode, one learner rank) end with its weights
bit for bit, its checkpoints and rewards step by step too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from atommem.checkpoints import CRASH_ENV, MANIFEST, verify, weights_digest
from helpers_models import TEST_SYNTH, ZERO3_WITH_REFERENCE, make_tiny_model_dir
from process_support import wait_until_gone

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]
STEPS, GROUPS, TRAIN_SAMPLES, SEED, ENGINES = 4, 2, 6, 0, 2


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
        f"data.train={tmp / 'data/train'}", f"data.dev={tmp / 'data/dev'}", "data.val=null", f"data.synth.num_samples={TRAIN_SAMPLES}",
        "data.dev_samples=2", *[f"{k}={v}" for k, v in synth.items()], f"model.path={model}", "model.tiny=null",
        f"trainer.steps={STEPS}", "trainer.eval_every=0", "trainer.checkpoint_every=1",
        "trainer.keep_checkpoints=2", "trainer.time_budget_s=null", "trainer.tensorboard=false", f"trainer.seed={SEED}",
        f"grpo.batch_groups={GROUPS}", "grpo.group_size=2", "sampling.max_tokens=8",
        # rewards that differ within a group (format errors cost) and an entropy bonus: every step moves the weights
        "env.format_penalty=0.05", "grpo.entropy_coef=0.01", "grpo.lr=1e-2",
        "rollout.envs_per_worker=4", "rollout.num_workers=1", "rollout.min_workers=1", "rollout.max_workers=1",
        "rollout.num_cpus_per_worker=0.5", f"engine.num_engines={ENGINES}", "engine.num_cpus=0.5", "learner.num_cpus=1",
        *ZERO3_WITH_REFERENCE, "cluster.num_cpus=3",
    ]
    # the reference: the same run, never interrupted (it also prepares the data the others read)
    straight = Run(tmp, [*overrides, f"trainer.run_dir={tmp / 'straight'}", "trainer.keep_checkpoints=0"], "0-straight",
                   resume=False)
    assert straight.wait() == 0, straight.output()[-3000:]
    return tmp, [*overrides, f"trainer.run_dir={tmp / 'run'}"]


def _grpo_rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r for r in rows if r["phase"] == "grpo"]


def checkpoint_digest(path: Path) -> str:
    """sha256 of the weights in a checkpoint's files, as DeepSpeed's zero_to_fp32 rebuilds them (a tied
    lm_head, which it lists under its own name too, once, as the learner's parameters list it)."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    seen: set[int] = set()
    state = get_fp32_state_dict_from_zero_checkpoint(str(path), tag="state")
    return weights_digest((n, t) for n, t in state.items() if not (t.data_ptr() in seen or seen.add(t.data_ptr())))


def resume_digests(out: str) -> dict[str, list[str]]:
    """The weights sha256 a resumed run printed: {"checkpoint": [d], "learner": [d], "engines": [d, ...]}."""
    (line,) = [line for line in out.splitlines() if line.startswith("resumed weights sha256:")]
    parts = dict(re.match(r"\s*(\w+) (.*)", part).groups() for part in line.split(":", 1)[1].split(", ", 2))
    return {k: v.split(", ") for k, v in parts.items()}


def hf_digest(model_dir: Path) -> str:
    from safetensors.torch import load_file

    return weights_digest(load_file(model_dir / "model.safetensors").items())


def test_kill_9_at_several_points_and_resume_to_the_last_step(setup):
    tmp, overrides = setup
    run_dir, ckpts = tmp / "run", tmp / "run" / "checkpoints"

    straight_dir = tmp / "straight"
    straight = {r["step"]: r for r in _grpo_rows(straight_dir)}
    assert sorted(straight) == list(range(1, STEPS + 1))
    assert straight[STEPS]["data_epoch"] == 1  # the last step crossed into the second epoch
    digests: dict[Path, str] = {}  # checkpoint resumed from -> sha256 of its files' weights

    # 1. killed inside the step-2 checkpoint write: step-1 stays, the write is a staging leftover
    first = Run(tmp, overrides, "1-crash-in-write", resume=False, env={CRASH_ENV: "checkpoint-write:step-2"})
    assert first.wait() == -signal.SIGKILL, first.output()[-3000:]
    assert verify(ckpts / "step-1")["step"] == 1
    (partial,) = [p for p in ckpts.iterdir() if p.name != "step-1"]
    assert partial.name.startswith(".step-2.partial-") and not (partial / MANIFEST).exists()
    assert any((partial / "state").iterdir())  # the ranks' files were written
    digests[ckpts / "step-1"] = checkpoint_digest(ckpts / "step-1")

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
    digests[newest] = checkpoint_digest(newest)
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

    # each resume put the checkpoint's weights on the learner and on every engine
    assert len(set(digests.values())) == 2  # not vacuous: the steps moved the weights
    for (ckpt, digest), run in zip(digests.items(), (second, third)):
        printed = resume_digests(run.output())
        print(f"resumed from {ckpt.name}: files {digest}, printed {printed}")
        assert printed["checkpoint"] == printed["learner"] == [digest], (ckpt, printed)
        assert printed["engines"] == [digest] * ENGINES, (ckpt, printed)
        assert digest == verify(straight_dir / "checkpoints" / ckpt.name)["weights_sha256"]  # the straight run's too

    # every attempt at every step drew the samples and trained from the weights the straight run did
    rows = _grpo_rows(run_dir)
    assert {r["step"] for r in rows} == set(range(1, STEPS + 1))
    assert sum(r["step"] == 2 for r in rows) == 2  # done again after the crash in its checkpoint write
    replayed = ("data_epoch", "data_pos", "samples", "policy_version", "weight_version", "episodes",
                "reward_mean", "generated_tokens", "loss")
    for r in rows:
        assert {k: r[k] for k in replayed} == {k: straight[r["step"]][k] for k in replayed}, r["step"]
    # and ended with its weights, bit for bit, checkpoint by checkpoint
    for name in ("step-3", "step-4"):
        assert verify(ckpts / name)["weights_sha256"] == verify(straight_dir / "checkpoints" / name)["weights_sha256"]
    final = hf_digest(run_dir / "grpo" / "model")
    assert final == hf_digest(straight_dir / "grpo" / "model") and final not in digests.values()
    print(f"final weights sha256 (resumed and uninterrupted): {final}")


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


def test_the_weights_digest_changes_with_any_name_dtype_shape_or_bit_and_not_with_order():
    import torch

    weights = [("a.weight", torch.arange(6.0).reshape(2, 3)), ("b.bias", torch.ones(3)), ("c", torch.tensor(2.0))]
    digest = weights_digest(weights)
    assert weights_digest(weights[::-1]) == digest
    flipped = weights[0][1].clone()
    flipped.view(torch.int32)[0, 0] ^= 1  # the last bit of one float
    for other in ([("a.weight", flipped), *weights[1:]], [("a.w", weights[0][1]), *weights[1:]],
                  [("a.weight", weights[0][1].reshape(3, 2)), *weights[1:]],
                  [("a.weight", weights[0][1].double()), *weights[1:]], weights[:2]):
        assert weights_digest(other) != digest
