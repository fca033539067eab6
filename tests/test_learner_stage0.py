"""A one-rank learner without ZeRO partitioning (stage 0, as the demo's SFT): its grad_norm is the true
gradient norm (DeepSpeed reports none there in fp32), and its checkpoints are atomic and verified."""

from __future__ import annotations

import math

import pytest
import torch

from atommem.config import Config
from atommem.learner.batching import collate, token_logprobs
from atommem.learner.sft import sft_loss, sft_rows
from atommem.checkpoints import MANIFEST, IncompleteCheckpoint, verify
from test_learner_group import batch_for, make_trajectories, reference_grad_norm

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def stage0(ray_local, tmp_path_factory):
    from helpers_models import make_tiny_model_dir
    from transformers import AutoConfig

    from atommem.learner.learner_group import LearnerGroup

    model_dir = make_tiny_model_dir(tmp_path_factory.mktemp("stage0"))
    cfg = Config()
    cfg.learner.num_learners = 1
    cfg.learner.zero_stage = 0
    cfg.learner.grad_clip = 1e6  # compare raw gradient norms with a plain-torch reference
    cfg.grpo.kl_coef = 0.01
    cfg.sft.min_reward = 0.0
    group = LearnerGroup(cfg, model_dir, stage="grpo")
    yield group, model_dir, cfg, AutoConfig.from_pretrained(model_dir).vocab_size
    group.shutdown()


def reference_sft_grad_norm(model_dir, trajectories, ready=(), first_token_weight=1.0):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    mb = collate(sft_rows(trajectories, 0.0, first_token_weight) + list(ready))
    logp, _ = token_logprobs(model, mb)
    sft_loss(logp, mb.loss_weights).backward()
    return math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in model.parameters() if p.grad is not None))


def test_grad_norm_is_the_true_norm_without_zero(stage0):
    import ray

    group, model_dir, cfg, vocab = stage0
    trajs = make_trajectories(vocab, seed=5)
    batch, adv = batch_for(ray, trajs)
    grpo = group.update_grpo(batch)
    assert grpo["grad_norm"] == pytest.approx(reference_grad_norm(model_dir, cfg, trajs, adv), rel=1e-3)
    # SFT from the weights after that step, against the same step in plain torch
    sft_trajs = make_trajectories(vocab, seed=6)
    tmp = model_dir.parent / "after-grpo"
    group.save_hf(tmp)
    sft = group.update_sft([ray.put(t) for t in sft_trajs])
    assert sft["grad_norm"] == pytest.approx(reference_sft_grad_norm(tmp, sft_trajs), rel=1e-3)


def test_ready_rows_of_the_base_stage_train_beside_trajectories(stage0):
    """A ref may hold ready rows (the base stage's sequences, mixed into SFT steps): they enter the same token-mean
    loss as the trajectories' rows; dropped, the gradient norm would be the trajectories' alone."""
    import ray

    from atommem.learner.sft import SFTRow

    group, model_dir, cfg, vocab = stage0
    tmp = model_dir.parent / "before-ready-rows"
    group.save_hf(tmp)
    trajs = make_trajectories(vocab, seed=7)
    ready = [SFTRow([3], [5, 6, 7, 5, 6, 7], "base/restate"), SFTRow([4], [9, 8, 9, 8], "base/restate")]
    sft = group.update_sft([ray.put(t) for t in trajs] + [ray.put(ready)])
    assert sft["rows"] == len(sft_rows(trajs, 0.0)) + 2
    assert sft["grad_norm"] == pytest.approx(reference_sft_grad_norm(tmp, trajs, ready), rel=1e-3)
    assert sft["grad_norm"] != pytest.approx(reference_sft_grad_norm(tmp, trajs), rel=1e-3)


def test_sft_first_token_weight_enters_the_learners_loss(stage0):
    """sft.first_token_weight weighs the first response token of the trajectories' rows (not the ready rows) in
    the learner's loss: its gradient is plain torch's on that weighted loss, not on the unweighted one."""
    import ray
    from dataclasses import replace

    from atommem.learner.learner_group import LearnerGroup
    from atommem.learner.sft import SFTRow

    _, model_dir, cfg, vocab = stage0
    weighted = LearnerGroup(replace(cfg, sft=replace(cfg.sft, first_token_weight=5.0)), model_dir, stage="sft")
    try:
        trajs = make_trajectories(vocab, seed=8)
        ready = [SFTRow([3], [5, 6, 7, 5], "base/restate")]
        sft = weighted.update_sft([ray.put(t) for t in trajs] + [ray.put(ready)])
    finally:
        weighted.shutdown()
    assert sft["grad_norm"] == pytest.approx(reference_sft_grad_norm(model_dir, trajs, ready, 5.0), rel=1e-3)
    assert sft["grad_norm"] != pytest.approx(reference_sft_grad_norm(model_dir, trajs, ready), rel=1e-3)


def test_a_checkpoint_lists_its_rank_files_and_a_torn_one_is_refused(stage0, tmp_path):
    group, *_ = stage0
    path = group.save_checkpoint(tmp_path / "step-1", {"sampler": {"pos": 4}}, meta={"step": 1})
    manifest = verify(path)
    assert manifest["step"] == 1 and "state/rng_rank0.pt" in manifest["files"]
    assert any(name.startswith("state/") and "model_states" in name for name in manifest["files"])
    assert [p.name for p in tmp_path.iterdir()] == ["step-1"]
    assert group.load_checkpoint(path) == {"sampler": {"pos": 4}}
    biggest = max(manifest["files"], key=manifest["files"].get)
    with open(path / biggest, "r+b") as f:
        f.truncate(manifest["files"][biggest] // 2)
    with pytest.raises(IncompleteCheckpoint, match="bytes"):
        group.load_checkpoint(path)
    (path / MANIFEST).unlink()
    with pytest.raises(IncompleteCheckpoint, match="no checkpoint.json"):
        group.load_checkpoint(path)


def test_a_stale_cpu_op_build_lock_is_an_error_naming_the_file(tmp_path, monkeypatch):
    """A build killed midway leaves torch's lock, and every learner would wait on it forever: say so instead."""
    import os
    import sys
    import time

    from atommem.errors import UserError
    from atommem.learner.learner_worker import check_cpu_op_build_lock

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    check_cpu_op_build_lock()  # no lock: nothing to say
    lock = tmp_path / f"py{sys.version_info.major}{sys.version_info.minor}_cpu" / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    check_cpu_op_build_lock()  # a build in progress holds a fresh lock
    old = time.time() - 3600
    os.utime(lock, (old, old))
    with pytest.raises(UserError, match=str(lock)):
        check_cpu_op_build_lock()


def test_a_cpu_learner_builds_its_op_with_the_ninja_of_its_own_environment(monkeypatch):
    """ninja 1.11 (the system's) and pip's 1.13 hash commands differently: a learner that found the system's and
    one started with the venv on PATH (`ray job submit`) rebuilt DeepSpeed's CPU op for each other (50 s each)."""
    import os
    import shutil
    import sys
    from pathlib import Path

    from atommem.learner.learner_worker import LearnerWorker

    own = Path(sys.executable).parent / "ninja"
    assert own.is_file(), "deepspeed depends on pip's ninja: it is in every environment it is installed in"
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    cfg = Config()
    cfg.learner.num_cpus = torch.get_num_threads()  # constructing sets the thread count: leave this process's
    LearnerWorker(cfg, "unused", rank=0, world_size=1)
    assert shutil.which("ninja") == str(own)
    LearnerWorker(cfg, "unused", rank=0, world_size=1)  # a second learner in the process: PATH stays as it is
    assert os.environ["PATH"] == f"{own.parent}{os.pathsep}/usr/bin:/bin"


def test_a_learner_start_leaves_no_shared_memory_behind(stage0, tmp_path):
    """DeepSpeed's CPU comm op left a 69 MB /dev/shm buffer per rank at every start (17 GB in a day here)."""
    import glob
    import os

    from helpers_models import make_tiny_model_dir

    from atommem.learner.learner_group import LearnerGroup

    pattern = f"/dev/shm/deepspeed_allreduce_buffer_{os.getuid()}_*"
    before = set(glob.glob(pattern))
    cfg = Config()
    cfg.learner.num_learners = 1
    cfg.learner.zero_stage = 0
    group = LearnerGroup(cfg, make_tiny_model_dir(tmp_path), stage="sft")
    try:
        assert set(glob.glob(pattern)) == before
    finally:
        group.shutdown()
