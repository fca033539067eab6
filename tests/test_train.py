"""Training-loop pieces that need no Ray: the resumable sampler and the per-step rollout statistics."""

import pytest

from atommem.errors import UserError
from atommem.rollout.records import TrajectorySummary
from atommem.data.sampler import EpochSampler
from atommem.trainer.grpo import rollout_record


def test_sampler_covers_each_epoch_once_and_reshuffles():
    s = EpochSampler(10, seed=3)
    first, second = s.take(10), s.take(10)
    assert sorted(first) == sorted(second) == list(range(10))
    assert first != second  # a fresh permutation per epoch
    assert s.epoch == 1 and s.pos == 10


def test_sampler_resumes_exactly():
    a = EpochSampler(7, seed=1)
    a.take(5)
    b = EpochSampler.from_state(a.state_dict())
    assert [a.take(4) for _ in range(5)] == [b.take(4) for _ in range(5)]


def test_sampler_depends_on_seed_and_rejects_empty_data():
    assert EpochSampler(50, seed=0).take(50) != EpochSampler(50, seed=1).take(50)
    with pytest.raises(UserError, match="empty"):
        EpochSampler(0)


def _summary(uid, g, reward, correct, counts, turns):
    return TrajectorySummary(f"{uid}#{g}", uid, g, reward, turns, 7, correct, counts, counts.get("error", 0), 0, "synthetic", 40)


def test_rollout_record_rates_are_ops_per_turn():
    summaries = [
        _summary("a", 0, 1.0, [True], {"create": 2, "read": 1, "answer": 1}, 4),
        _summary("a", 1, 0.0, [False, False], {"create": 0, "read": 2, "answer": 2, "error": 1}, 6),
    ]
    st = rollout_record(summaries, [1000])
    assert st["reward_mean"] == pytest.approx(0.5) and st["reward_std"] == pytest.approx(0.5)
    assert st["em"] == pytest.approx(1 / 3)  # question-weighted
    assert st["rate_create"] == pytest.approx(0.2) and st["rate_read"] == pytest.approx(0.3)
    assert st["rate_error"] == pytest.approx(0.1)
    assert st["turns_per_episode"] == pytest.approx(5.0) and st["generated_tokens"] == 14
    assert not any(k.startswith("rate_revision") for k in st)  # unlabelled turns: no per-state rates


def test_rollout_record_has_per_state_rates():
    a = _summary("a", 0, 1.0, [True], {"create": 1, "update": 1}, 4)
    a.state_counts = {"revision": {"turns": 2, "update": 1, "create": 1}, "answer": {"turns": 2, "answer": 1, "read": 1}}
    b = _summary("a", 1, 0.0, [False], {"create": 2}, 4)
    b.state_counts = {"revision": {"turns": 2, "create": 2}, "answer": {"turns": 2, "answer": 1, "read": 1}}
    st = rollout_record([a, b], [1000])
    assert st["rate_revision_update"] == pytest.approx(0.25) and st["rate_revision_create"] == pytest.approx(0.75)
    assert st["rate_answer_answer"] == pytest.approx(0.5) and "rate_revision_turns" not in st


def test_sft_learner_takes_its_own_cpus_stage_and_schedule_and_leaves_the_grpo_learner_alone():
    from atommem.config import load_config
    from atommem.trainer.pretrain import sft_learner_config

    cfg = load_config(None, ["learner.num_cpus=1", "learner.zero_stage=3", "sft.learner_cpus=2", "sft.zero_stage=0",
                             "sft.lr_schedule=cosine"])
    sft = sft_learner_config(cfg)
    assert (sft.learner.num_cpus, sft.learner.zero_stage, sft.learner.lr_schedule) == (2, 0, "cosine")
    assert sft.grpo == cfg.grpo and (cfg.learner.num_cpus, cfg.learner.zero_stage, cfg.learner.lr_schedule) == (1, 3, "constant")
    plain = sft_learner_config(load_config(None, ["learner.num_cpus=1", "learner.zero_stage=3"])).learner
    assert (plain.num_cpus, plain.zero_stage, plain.lr_schedule) == (1, 3, "constant")
