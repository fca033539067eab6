"""LearnerGroup on local Ray: 2 CPU ranks with DeepSpeed ZeRO-3 over gloo.

The first DeepSpeed CPU run on a machine JIT-compiles a small comm op with gcc (about a minute,
cached in ~/.cache/torch_extensions afterwards); later runs start in seconds.
"""

from __future__ import annotations

import asyncio
import copy
import math
import random

import pytest
import torch

from atommem.config import Config
from atommem.learner.grpo import expand_to_rows, group_advantages, grpo_loss
from atommem.learner.batching import collate, token_logprobs
from atommem.trajectory import Trajectory, Turn

pytestmark = pytest.mark.ray


def make_trajectories(vocab: int, seed: int = 0) -> list[Trajectory]:
    rng = random.Random(seed)
    out = []
    for g in range(2):
        for i in range(4):
            turns = []
            for _ in range(rng.randint(1, 3)):  # variable turn counts
                p = [rng.randrange(3, vocab) for _ in range(rng.randint(4, 12))]
                r = [rng.randrange(3, vocab) for _ in range(rng.randint(2, 6))]
                turns.append(Turn(p, r, [-math.log(vocab)] * len(r), 0, "read"))
            out.append(Trajectory(uid=f"s{g}", group_index=i, sample_id=f"s{g}", source="t", turns=turns,
                                  reward=float(rng.random() < 0.5), correct=[], f1=[], answers=[]))
    return out


@pytest.fixture(scope="module")
def setup(ray_local, tmp_path_factory):
    from helpers_models import make_tiny_model_dir
    from transformers import AutoConfig

    from atommem.learner.learner_group import LearnerGroup

    model_dir = make_tiny_model_dir(tmp_path_factory.mktemp("learner"))
    cfg = Config()
    cfg.learner.num_learners = 2
    cfg.learner.num_cpus = 1
    cfg.learner.micro_batch_tokens = 48  # several micro-batches, unequal across ranks
    cfg.learner.warmup_steps = 4  # lr differs per step: resuming must restore the scheduler
    cfg.learner.grad_clip = 1e6  # compare raw gradient norms with a plain-torch reference
    cfg.grpo.lr = 1e-3
    cfg.grpo.kl_coef = 0.01
    group = LearnerGroup(cfg, model_dir)
    vocab = AutoConfig.from_pretrained(model_dir).vocab_size
    yield group, model_dir, cfg, vocab
    group.shutdown()


def batch_for(ray, trajectories):
    adv = group_advantages([t.reward for t in trajectories], [t.uid for t in trajectories])
    return [(ray.put(t), a) for t, a in zip(trajectories, adv)], adv


def reference_grad_norm(model_dir, cfg, trajectories, adv):
    """Full-batch gradient norm in one plain-torch process (the token mean over ALL rows)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    rows = expand_to_rows(trajectories, adv)
    mb = collate(rows)
    logp, _ = token_logprobs(model, mb)
    loss, _ = grpo_loss(logp, logp.detach(), logp.detach(), mb.advantages, mb.response_mask, cfg.grpo)
    loss.backward()
    return math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in model.parameters() if p.grad is not None))


def test_two_rank_grpo_step_token_mean_and_identical_params(setup):
    import ray

    group, model_dir, cfg, vocab = setup
    trajs = make_trajectories(vocab)
    before = group.param_digests()[0]
    batch, adv = batch_for(ray, trajs)
    m = group.update_grpo(batch)
    rows = sum(t.num_turns for t in trajs)
    assert m["rows_produced"] == m["rows_shipped"] == m["rows_consumed"] == rows
    assert math.isfinite(m["loss"]) and m["tokens"] == sum(t.generated_tokens for t in trajs)
    assert 0 <= m["clip_frac"] <= 1 and m["kl"] == pytest.approx(0.0, abs=1e-6)  # policy == reference at step 0
    # Token mean across micro-batches AND ranks: the same gradient as one process on the whole batch.
    assert m["grad_norm"] == pytest.approx(reference_grad_norm(model_dir, cfg, trajs, adv), rel=1e-3)
    d0, d1 = group.param_digests()
    assert d0 == d1  # both ranks see the same full parameters
    assert d0 != before  # and the step changed them


def test_weight_sync_to_engine_and_save_hf(setup, tmp_path):
    import ray
    from transformers import AutoModelForCausalLM

    from atommem.engines.base import SamplingParams
    from atommem.engines.fleet import EngineFleet
    from atommem.engines.hf import HFEngine

    group, model_dir, cfg, vocab = setup
    cfg = copy.deepcopy(cfg)
    cfg.engine.num_cpus = 0  # the two learner ranks hold both CPUs of this Ray
    fleet = EngineFleet(cfg, str(model_dir))
    engine = fleet.handles[0]
    try:
        info = fleet.sync_weights(group, version=7)
        assert info["bytes"] > 0 and info["seconds"] > 0
        hf_dir = group.save_hf(tmp_path / "hf")
        saved = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
        learner_state = group.state_dict()
        for name, t in learner_state.items():
            assert torch.equal(saved.state_dict()[name], t), name
        assert (hf_dir / "tokenizer.json").is_file() or (hf_dir / "tokenizer_config.json").is_file()
        local = HFEngine(str(hf_dir), max_batch_size=1, batch_wait_ms=0.0)
        params = SamplingParams(temperature=0.0, max_tokens=8)
        prompt = [5, 9, 11, 13, 17]
        got = ray.get(engine.generate.remote(prompt, params))
        want = asyncio.run(local.generate(prompt, params))
        assert got.weight_version == 7
        assert got.token_ids == want.token_ids
        # A second sync reuses the group.
        group.update_grpo(batch_for(ray, make_trajectories(vocab, seed=1))[0])
        fleet.sync_weights(group, version=8)
        assert ray.get(engine.generate.remote(prompt, params)).weight_version == 8
    finally:
        fleet.shutdown()


def test_checkpoint_resume_gives_the_same_next_step(setup, tmp_path):
    import ray

    group, model_dir, cfg, vocab = setup
    group.save_checkpoint(tmp_path / "ckpt", {"data_position": 3, "weight_version": 8})
    nxt = make_trajectories(vocab, seed=2)
    first = group.update_grpo(batch_for(ray, nxt)[0])
    digest_first = group.param_digests()[0]
    extra = group.load_checkpoint(tmp_path / "ckpt")
    assert extra == {"data_position": 3, "weight_version": 8}
    again = group.update_grpo(batch_for(ray, nxt)[0])
    for key in ("loss", "grad_norm", "lr", "entropy", "kl"):
        assert again[key] == pytest.approx(first[key], rel=1e-6, abs=1e-9), key
    assert group.param_digests()[0] == pytest.approx(digest_first, rel=1e-6, abs=1e-9)


def test_sft_steps_lower_the_response_nll(setup):
    import ray

    group, model_dir, cfg, vocab = setup
    trajs = make_trajectories(vocab, seed=3)
    for t in trajs:
        t.reward = 1.0
    refs = [ray.put(trajs[:3])] + [ray.put(t) for t in trajs[3:]]  # a ref may hold a list of trajectories
    nlls = [group.update_sft(refs)["nll"] for _ in range(3)]
    assert all(math.isfinite(x) for x in nlls)
    assert nlls[-1] < nlls[0]


def test_a_rank_without_rows_still_steps_with_the_others(setup):
    import ray

    group, model_dir, cfg, vocab = setup
    one = make_trajectories(vocab, seed=4)[:1]  # 1 trajectory, 2 ranks: rank 1 gets nothing
    m = group.update_grpo([(ray.put(one[0]), 0.5)])
    assert m["rows_consumed"] == one[0].num_turns and m["tokens"] == one[0].generated_tokens
    assert math.isfinite(m["loss"]) and m["grad_norm"] > 0
    d0, d1 = group.param_digests()
    assert d0 == d1


def test_sft_validation_scores_every_row_as_the_plain_model_does(setup):
    """score_sft on 2 ZeRO-3 ranks (unequal packs) against one plain-torch forward; half the turns are the model's own
    greedy continuations, so they must score right at every token and the random ones not."""
    import ray
    from transformers import AutoModelForCausalLM

    from atommem.learner.batching import teacher_forced
    from atommem.learner.sft import sft_rows

    group, model_dir, cfg, vocab = setup
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    loaded = model.load_state_dict(group.state_dict(), strict=False)  # the group's weights after the earlier tests
    assert loaded.missing_keys == ["lm_head.weight"] and not loaded.unexpected_keys  # tied to the embeddings
    trajs = make_trajectories(vocab, seed=5)
    with torch.no_grad():
        for i, t in enumerate(trajs):
            t.reward = 1.0
            for turn in t.turns:
                turn.state = "greedy" if i % 2 else "random"
                if i % 2:
                    ids = list(turn.prompt_ids)
                    for _ in turn.response_ids:
                        ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
                    turn.response_ids = ids[len(turn.prompt_ids):]
    scores = group.score_sft([ray.put(t) for t in trajs])
    rows = sft_rows(trajs, min_reward=0.0)
    assert len(scores) == len(rows)
    assert {s.label for s in scores if s.all_right} == {"greedy/none"} and sum(s.all_right for s in scores) == sum(
        r.label == "greedy/none" for r in rows)
    expected = []
    for row in rows:
        with torch.no_grad():
            logp, hit = teacher_forced(model, collate([row]))
        expected.append((row.label, bool(hit[0, 0]), bool(hit.all()), float(-logp.sum()), len(row.response_ids)))
    got = [(s.label, s.first_right, s.all_right, s.nll, s.tokens) for s in scores]
    key = lambda x: (x[0], x[4], round(x[3], 2))  # noqa: E731 - ranks and packing reorder rows
    for g, e in zip(sorted(got, key=key), sorted(expected, key=key)):
        assert g[:3] == e[:3] and g[4] == e[4] and g[3] == pytest.approx(e[3], rel=1e-4)
