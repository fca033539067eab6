"""SFT rows: reward threshold, one row per turn, loss on response tokens only."""

from __future__ import annotations

import math

import pytest
import torch

from atommem.learner.batching import collate
from atommem.learner.sft import SFTRow, sft_loss, sft_rows
from atommem.trajectory import Trajectory, Turn


def traj(reward, turns):
    return Trajectory(
        uid="u", group_index=0, sample_id="s", source="t", reward=reward, correct=[], f1=[], answers=[],
        turns=[Turn(prompt_ids=p, response_ids=r, logprobs=[0.0] * len(r), weight_version=0, phase="read") for p, r in turns],
    )


def test_rows_keep_good_trajectories_and_every_turn():
    good = traj(1.0, [([1, 2], [3, 4]), ([5], [6]), ([7], [])])
    borderline = traj(0.5, [([8], [9])])
    bad = traj(0.4, [([1], [2])])
    rows = sft_rows([good, borderline, bad], min_reward=0.5)
    assert rows == [SFTRow([1, 2], [3, 4]), SFTRow([5], [6]), SFTRow([8], [9])]
    assert rows[0].loss_mask() == [0, 0, 1, 1]


def test_loss_is_response_token_mean_nll():
    rows = [SFTRow([1, 2], [3, 4]), SFTRow([5], [6])]
    mb = collate(rows)
    # Left-padded, the last 2 targets: row 0 -> [3, 4] with mask [1, 1]; row 1 -> [5, 6] with mask [0, 1].
    assert mb.response_mask.tolist() == [[1, 1], [0, 1]]
    logp = torch.tensor([[math.log(0.5), math.log(0.25)], [-9.0, math.log(0.5)]])
    loss = sft_loss(logp, mb.response_mask)
    assert loss.item() == pytest.approx(-(2 * math.log(0.5) + math.log(0.25)) / 3)
    assert sft_loss(logp, mb.response_mask, num_tokens=6).item() == pytest.approx(loss.item() / 2)


def test_teacher_data_is_written_in_request_order_whatever_finishes_first(tmp_path, ray_local):
    """Two runners finish episodes out of order; the SFT data (and so SFT's seeded batches) must not follow that."""
    from atommem.config import load_config
    from atommem.rollout.parquet import read_trajectories
    from atommem.trainer.inputs import train_samples
    from atommem.trainer.sft import collect_teacher, teacher_requests

    cfg = load_config("configs/tiny_cpu.yaml", [
        f"data.train={tmp_path / 'data/train'}", f"data.dev={tmp_path / 'data/dev'}", "data.synth.num_samples=40",
        "data.dev_samples=4", f"model.path={tmp_path / 'model'}", "model.tiny.hidden_size=32", "model.tiny.num_layers=1",
        "model.tiny.intermediate_size=64", "sft.teacher_episodes=48", f"sft.data={tmp_path / 'sft'}",
        "rollout.num_workers=2", "rollout.envs_per_worker=8",
    ])
    path, kept = collect_teacher(cfg)
    expected = [r.episode_id for r in teacher_requests(cfg, train_samples(cfg))]
    assert len(expected) == 48 and len(set(expected)) == 48  # 40 samples: 8 drawn again under a new nonce
    assert [t.episode_id for t in read_trajectories(path)] == expected
    assert [t.episode_id for t in ray_local.get(kept)] == expected
