"""SFT rows: reward threshold, one row per turn, loss on response tokens only."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from atommem.learner.batching import collate
from atommem.learner.sft import RowScore, SFTRow, row_label, sft_loss, sft_rows, validation_metrics
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
    assert rows == [SFTRow([1, 2], [3, 4], "turn/none"), SFTRow([5], [6], "turn/none"), SFTRow([8], [9], "turn/none")]
    assert rows[0].loss_mask() == [0, 0, 1, 1]


def test_a_row_is_labelled_by_turn_state_and_the_teachers_first_action():
    def turn(state, text):
        return Turn([1], [2], [0.0], 0, "read", response_text=text, state=state)

    assert row_label(turn("revision", "<modify_memory> Memory 2: user car taxi </modify_memory>")) == "revision/update"
    assert row_label(turn("relevant", "<update_query> user car </update_query><add_memory> user car truck </add_memory>")) == "relevant/read"
    assert row_label(turn("distractor", "")) == "distractor/none"
    assert row_label(turn("answer", "<final_answer> taxi </final_answer>")) == "answer/answer"


def test_validation_metrics_per_label_and_overall():
    scores = [
        RowScore("relevant/create", True, True, 0.5, 5),
        RowScore("relevant/create", True, False, 2.5, 5),
        RowScore("revision/update", False, False, 4.0, 6),
    ]
    m = validation_metrics(scores)
    assert m["val_nll"] == pytest.approx(7.0 / 16) and m["val_full"] == pytest.approx(1 / 3)
    assert (m["val_first/relevant/create"], m["val_full/relevant/create"], m["val_rows/relevant/create"]) == (1.0, 0.5, 2.0)
    assert (m["val_first/revision/update"], m["val_full/revision/update"], m["val_rows/revision/update"]) == (0.0, 0.0, 1.0)
    assert validation_metrics([]) == {}


def test_loss_is_response_token_mean_nll():
    rows = [SFTRow([1, 2], [3, 4]), SFTRow([5], [6])]
    mb = collate(rows)
    # Left-padded, the last 2 targets: row 0 -> [3, 4] with mask [1, 1]; row 1 -> [5, 6] with mask [0, 1].
    assert mb.response_mask.tolist() == [[1, 1], [0, 1]]
    logp = torch.tensor([[math.log(0.5), math.log(0.25)], [-9.0, math.log(0.5)]])
    loss = sft_loss(logp, mb.response_mask)
    assert loss.item() == pytest.approx(-(2 * math.log(0.5) + math.log(0.25)) / 3)
    assert sft_loss(logp, mb.response_mask, num_tokens=6).item() == pytest.approx(loss.item() / 2)


def test_a_first_token_weight_weighs_each_teacher_rows_operation_in_the_loss():
    rows = sft_rows([traj(1.0, [([1, 2], [3, 4, 5]), ([6], [7])])], min_reward=0.5, first_token_weight=4.0)
    mb = collate(rows + [SFTRow([8], [9, 9])])  # a ready row (the base stage's) keeps weight 1
    # Left-padded to the longest response (3): the first response token of each row sits at width - len.
    assert mb.response_mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    assert mb.loss_weights.tolist() == [[4, 1, 1], [0, 0, 4], [0, 1, 1]]
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.5], [1.0, 1.0, 0.25], [1.0, 0.5, 0.5]]))
    weighted = -(4 * math.log(0.5) + 2 * math.log(0.5) + 4 * math.log(0.25) + 2 * math.log(0.5)) / 12
    assert sft_loss(logp, mb.loss_weights).item() == pytest.approx(weighted)
    assert collate(sft_rows([traj(1.0, [([1], [2, 3])])], 0.5)).token_weights is None  # weight 1: the plain mask


def test_teacher_data_is_written_in_request_order_whatever_finishes_first(tmp_path, ray_local, monkeypatch):
    """Two runners finish episodes out of order; the SFT data (and so SFT's seeded batches) must not follow that."""
    import atommem.rollout.env_runner_group as runner_group
    from atommem.config import load_config
    from atommem.rollout.parquet import read_trajectories
    from atommem.trainer.inputs import train_samples
    from atommem.trainer.sft import collect_teacher, teacher_requests

    cfg = load_config("configs/tiny_cpu.yaml", [
        f"data.train={tmp_path / 'data/train'}", f"data.dev={tmp_path / 'data/dev'}", "data.synth.num_samples=40",
        "data.dev_samples=4", f"model.path={tmp_path / 'model'}", "model.tiny.hidden_size=32", "model.tiny.num_layers=1",
        "model.tiny.intermediate_size=64", "sft.teacher_episodes=48", "sft.val_episodes=6", f"sft.data={tmp_path / 'sft'}",
        "sft.teacher_workers=2", "rollout.num_workers=1", "rollout.envs_per_worker=8",
    ])
    started = []

    class RecordedGroup(runner_group.EnvRunnerGroup):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self.num_runners)

    monkeypatch.setattr(runner_group, "EnvRunnerGroup", RecordedGroup)
    path, kept, val = collect_teacher(cfg)
    assert started == [2]  # sft.teacher_workers, not rollout.num_workers
    requested = [r.episode_id for r in teacher_requests(cfg, train_samples(cfg))]
    expected, held_out = requested[:48], requested[48:]
    assert len(set(requested)) == 54  # 40 samples: 14 drawn again under a new nonce
    assert [t.episode_id for t in read_trajectories(path)] == expected
    assert [t.episode_id for t in ray_local.get(kept)] == expected
    # the held-out episodes come after the training ones in the same order, in their own dir
    assert [t.episode_id for t in read_trajectories(path / "val")] == held_out == [t.episode_id for t in ray_local.get(val)]
    no_val = replace(cfg, sft=replace(cfg.sft, val_episodes=0))
    assert teacher_requests(no_val, train_samples(cfg)) == teacher_requests(cfg, train_samples(cfg))[:48]
    # collected again without held-out episodes, the old ones must not stay behind to be read as these
    path, _, val = collect_teacher(no_val)
    assert val == [] and not (path / "val").exists()


def test_sft_data_from_a_dir_takes_its_held_out_episodes_from_val(tmp_path, ray_local):
    from atommem.rollout.parquet import write_trajectories
    from atommem.trainer.sft import SFTData

    train = [traj(1.0, [([1, 2], [3])]) for _ in range(3)]
    held_out = [traj(1.0, [([4], [5, 6])])]
    write_trajectories(train, tmp_path / "sft")
    assert SFTData.from_path(tmp_path / "sft", batch_size=2).val_refs == []
    write_trajectories(held_out, tmp_path / "sft" / "val")
    data = SFTData.from_path(tmp_path / "sft", batch_size=2)
    assert len(data.refs) == 3 and [t.turns[0].response_ids for t in ray_local.get(data.val_refs)] == [[5, 6]]


def test_the_scripted_memagent_teaches_the_overwrite_action_set(tmp_path, ray_local):
    """Its episodes are SFT rows in the overwrite env: overwrite prompts, note rewrites and answers as token ids."""
    from atommem.config import load_config
    from atommem.errors import UserError
    from atommem.models.loading import load_tokenizer
    from atommem.trainer.sft import collect_teacher, scripted_teacher

    cfg = load_config("configs/tiny_cpu_overwrite.yaml", [
        f"data.train={tmp_path / 'data/train'}", f"data.dev={tmp_path / 'data/dev'}", "data.synth.num_samples=12",
        "data.dev_samples=4", f"model.path={tmp_path / 'model'}", "model.tiny.hidden_size=32", "model.tiny.num_layers=1",
        "model.tiny.intermediate_size=64", "sft.teacher_episodes=6", "sft.val_episodes=0", f"sft.data={tmp_path / 'sft'}",
        "rollout.envs_per_worker=8",
    ])
    with pytest.raises(UserError, match="memagent-scripted"):
        scripted_teacher(replace(cfg, sft=replace(cfg.sft, teacher="oracle")))
    _, kept, _ = collect_teacher(cfg)
    tok = load_tokenizer(str(tmp_path / "model"))
    trajectories = ray_local.get(kept)
    assert len(trajectories) == 6 and all(0.0 <= t.reward <= 1.0 for t in trajectories)
    turns = [turn for t in trajectories for turn in t.turns]
    assert {turn.response_text.split(">")[0] for turn in turns} == {"<update_memory", "<final_answer"}
    for turn in turns:
        assert turn.response_ids == tok.encode(turn.response_text, add_special_tokens=False) + [tok.eos_token_id]
        prompt = tok.decode(turn.prompt_ids)
        assert "keep what the questions need in notes" in prompt and "query:" not in prompt


class _ScriptedLearner:
    """Stands in for the learner group: each validation scores the next entry of `script` ({label: share right})."""

    def __init__(self, script):
        self.script, self.updates = list(script), 0

    def update_sft(self, batch):
        self.updates += 1
        return {"loss": 1.0}

    def score_sft(self, refs):
        shares = self.script.pop(0)
        return [RowScore(label, True, i < round(share * 20), 0.0, 1) for label, share in shares.items() for i in range(20)]

    # the updates made stand in for the weights: a checkpoint holds them and loading one puts them back
    def save_checkpoint(self, directory, extra_state=None, meta=None):
        self.saved = {"updates": self.updates, **(extra_state or {})}

    def load_checkpoint(self, directory):
        self.updates = self.saved["updates"]
        return self.saved

    def shutdown(self):
        pass


def _sft_trainer(tmp_path, monkeypatch, script, **sft):
    from atommem.config import load_config
    from atommem.learner import learner_group
    from atommem.tracking import RunLogger
    from atommem.trainer.sft import SFTData, SFTTrainer

    cfg = load_config("configs/tiny_cpu.yaml")
    cfg = replace(cfg, sft=replace(cfg.sft, **{"val_every": 10, "until_after": 0, **sft}))
    monkeypatch.setattr(learner_group, "LearnerGroup", lambda *a, **k: _ScriptedLearner(script))
    data = SFTData(["t0", "t1", "t2"], batch_size=2, val_refs=["v0"])
    return SFTTrainer(cfg, "unused", data, RunLogger(tmp_path, tensorboard=False))


def test_sft_stops_at_the_first_validation_where_every_named_decision_passes_the_bar(tmp_path, monkeypatch):
    script = [{"relevant/read": 0.5, "answer/answer": 1.0, "revision/update": 0.3},
              {"relevant/read": 0.95, "answer/answer": 0.85, "revision/update": 0.3},
              {"relevant/read": 0.9, "answer/answer": 0.95, "revision/update": 0.3},  # revision/update is not named
              {"relevant/read": 1.0, "answer/answer": 1.0, "revision/update": 1.0}]
    bar = dict(until_full=0.9, until_labels=["relevant/read", "answer/answer"])
    trainer = _sft_trainer(tmp_path, monkeypatch, script, **bar)
    assert trainer.run(100, until_bar=True) == 30 and trainer.stopped_by == "bar" and trainer.learner.updates == 30
    # ...and not before sft.until_after
    trainer = _sft_trainer(tmp_path, monkeypatch, script, until_after=31, **bar)
    assert trainer.run(100, until_bar=True) == 40 and trainer.stopped_by == "bar"
    # the same validations without until_bar (the equal-time control trains on): no stop before the step cap
    trainer = _sft_trainer(tmp_path, monkeypatch, script, **bar)
    assert trainer.run(40) == 40 and trainer.stopped_by == "steps"


def test_keep_best_rewinds_sft_to_its_best_validation_the_earliest_on_a_tie(tmp_path, monkeypatch):
    script = [{"answer/answer": 0.5}, {"answer/answer": 0.9}, {"answer/answer": 0.6}, {"answer/answer": 0.9}]
    trainer = _sft_trainer(tmp_path, monkeypatch, list(script), keep_best=True, val_episodes=6)
    assert trainer.run(40) == 40 and trainer.learner.updates == 40
    assert trainer.keep_best() == 20
    # the learner's state, the step, the data position and the validation are step 20's again
    assert trainer.learner.updates == 20 and trainer.step == 20 and trainer.validated_step == 20
    assert trainer.validation["val_full"] == 0.9
    twenty = _sft_trainer(tmp_path, monkeypatch, list(script))
    twenty.run(20)
    assert [trainer.data.next_batch() for _ in range(5)] == [twenty.data.next_batch() for _ in range(5)]
    # without keep_best nothing is saved and the last step stays
    trainer = _sft_trainer(tmp_path, monkeypatch, list(script))
    assert trainer.run(40) == 40 and not hasattr(trainer.learner, "saved") and trainer.best is None


def test_keep_best_without_validations_is_a_config_error():
    from atommem.config import ConfigError, SFTConfig

    with pytest.raises(ConfigError, match="sft.keep_best"):
        SFTConfig(keep_best=True, val_episodes=10)
    with pytest.raises(ConfigError, match="sft.keep_best"):
        SFTConfig(keep_best=True, val_every=10)


def test_a_bar_label_no_held_out_turn_has_is_named_with_the_labels_there(tmp_path, monkeypatch):
    from atommem.errors import UserError

    trainer = _sft_trainer(tmp_path, monkeypatch, [{"relevant/read": 1.0}], until_full=0.9, until_labels=["revision/raed"])
    with pytest.raises(UserError, match="revision/raed.*relevant/read"):
        trainer.run(100, until_bar=True)


def test_until_full_without_labels_or_validation_is_a_config_error():
    from atommem.config import ConfigError, SFTConfig

    with pytest.raises(ConfigError, match="sft.until_labels"):
        SFTConfig(until_full=0.9, val_episodes=10, val_every=10)
    with pytest.raises(ConfigError, match="sft.val_episodes"):
        SFTConfig(until_full=0.9, until_labels=["relevant/read"])


def test_a_first_token_weight_that_is_not_positive_is_a_config_error():
    from atommem.config import ConfigError, SFTConfig

    with pytest.raises(ConfigError, match="sft.first_token_weight must be > 0"):
        SFTConfig(first_token_weight=0.0)


def test_the_rows_mixed_into_sft_are_restated_documents_even_when_the_base_stage_restates_prompts(tmp_path, monkeypatch):
    import random

    import numpy as np

    from atommem.data.schema import Document, Sample
    from atommem.learner.pretrain import BASE_LABEL, PROMPT_LABEL, BaseCorpus
    from atommem.trainer import sft as sft_module

    class Words:
        def encode(self, text, add_special_tokens=False):
            return [len(w) for w in text.split(" ")]

        def decode(self, ids, skip_special_tokens=False):
            return "chunk:\n" + " ".join("x" * i for i in ids) + " ."

    samples = [Sample(id="s", source="synthetic", documents=[Document("notes 5", " kiv food pie .")], questions=[])]
    corpus = BaseCorpus(samples, Words(), prompts=[np.asarray([3, 4, 5], dtype=np.int32)], prompt_share=1.0)
    assert {r.label for r in corpus.rows(8, random.Random(0))} == {PROMPT_LABEL}  # the base stage's
    trainer = _sft_trainer(tmp_path, monkeypatch, [])
    trainer.mix = corpus
    monkeypatch.setattr(sft_module, "row_refs", lambda rows, ranks: [rows])
    mixed = trainer._next_batch()[-1]
    assert len(mixed) == trainer.cfg.pretrain.mix_rows > 0 and {r.label for r in mixed} == {BASE_LABEL}
