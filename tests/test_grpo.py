"""GRPO maths checked against numbers worked out by hand, plus a tiny-model learning test."""

from __future__ import annotations

import math

import pytest
import torch

from atommem.config import GRPOConfig
from atommem.learner.batching import collate, pack_micro_batches, token_logprobs
from atommem.learner.grpo import (
    TurnRow,
    count_rows,
    expand_to_rows,
    group_advantages,
    grpo_loss,
    k3_kl,
)
from atommem.trajectory import Trajectory, Turn


def traj(uid: str, reward: float, turn_lengths: list[int], gi: int = 0) -> Trajectory:
    turns = [
        Turn(prompt_ids=[1, 2, k], response_ids=list(range(10, 10 + n)), logprobs=[-0.5] * n, weight_version=0, phase="read")
        for k, n in enumerate(turn_lengths)
    ]
    return Trajectory(uid=uid, group_index=gi, sample_id=uid, source="t", turns=turns, reward=reward, correct=[], f1=[], answers=[])


def cfg(**kw) -> GRPOConfig:
    base = dict(clip_low=0.2, clip_high=0.28, dual_clip=3.0, kl_coef=0.0, tis_cap=None, entropy_coef=0.0)
    base.update(kw)
    return GRPOConfig(**base)


# ---------------------------------------------------------------- advantages


def test_group_advantages_groups_by_uid_not_by_position():
    # Interleaved groups: a reshape into (2, 3) would mix them.
    rewards = [1.0, 0.0, 0.0, 1.0, 0.5, 1.0]
    uids = ["a", "b", "a", "b", "a", "b"]
    adv = group_advantages(rewards, uids)
    mean_a, mean_b = 0.5, 2.0 / 3.0
    assert adv == pytest.approx([1 - mean_a, 0 - mean_b, 0 - mean_a, 1 - mean_b, 0.5 - mean_a, 1 - mean_b])


def test_group_advantages_std_normalize():
    adv = group_advantages([1.0, 0.0, 1.0, 0.0], ["g"] * 4, std_normalize=True, eps=0.0)
    # mean 0.5, population std 0.5 -> +-1
    assert adv == pytest.approx([1.0, -1.0, 1.0, -1.0])
    # A constant group has zero advantage, never NaN.
    assert group_advantages([0.3, 0.3], ["x", "x"], std_normalize=True) == [0.0, 0.0]


def test_advantages_before_expansion_with_variable_turn_counts():
    # Same group: a long failing trajectory (5 turns) and a short successful one (1 turn).
    ts = [traj("g", 0.0, [2, 3, 1, 1, 1], gi=0), traj("g", 1.0, [4], gi=1)]
    adv = group_advantages([t.reward for t in ts], [t.uid for t in ts])
    assert adv == pytest.approx([-0.5, 0.5])  # per trajectory; expanding first would give mean 1/6
    rows = expand_to_rows(ts, adv)
    assert len(rows) == count_rows(ts) == 6
    assert [r.advantage for r in rows] == pytest.approx([-0.5] * 5 + [0.5])
    assert [len(r.response_ids) for r in rows] == [2, 3, 1, 1, 1, 4]
    assert rows[1].prompt_ids == [1, 2, 1] and rows[1].old_logprobs == [-0.5] * 3
    assert all(r.uid == "g" for r in rows)


def test_expand_skips_empty_turns_and_checks_logprob_lengths():
    t = traj("g", 1.0, [2, 0, 1])
    assert len(expand_to_rows([t], [1.0])) == 2 == count_rows([t])
    t.turns[0].logprobs = [-1.0]
    with pytest.raises(ValueError, match="logprobs"):
        expand_to_rows([t], [1.0])


# ---------------------------------------------------------------- loss terms


def _one_token(ratio: float, adv: float, c: GRPOConfig):
    logp = torch.tensor([[math.log(ratio)]], requires_grad=True)
    old = torch.zeros(1, 1)
    loss, m = grpo_loss(logp, old, None, torch.tensor([adv]), torch.ones(1, 1), c)
    return loss, m, logp


@pytest.mark.parametrize(
    "ratio, adv, expected",
    [
        (1.5, 1.0, -1.28),  # positive advantage, ratio above 1+eps_high: clipped to 1.28
        (0.5, 1.0, -0.5),  # positive advantage, ratio below: unclipped (pessimistic max)
        (1.1, 1.0, -1.1),  # inside the trust region
        (0.5, -1.0, 0.8),  # negative advantage, ratio below 1-eps_low: clipped to 0.8
        (1.5, -1.0, 1.5),  # negative advantage, ratio above: unclipped
        (5.0, -1.0, 3.0),  # negative advantage, huge ratio: dual clip caps at c*|A| = 3
        (5.0, -2.0, 6.0),  # c*|A| scales with |A|
    ],
)
def test_clipped_surrogate_by_hand(ratio, adv, expected):
    loss, m, _ = _one_token(ratio, adv, cfg())
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert m["ratio_mean"] == pytest.approx(ratio, rel=1e-5)


def test_clip_metrics_and_gradients():
    loss, m, logp = _one_token(1.5, 1.0, cfg())
    loss.backward()
    assert m["clip_frac"] == 1.0 and m["dual_clip_frac"] == 0.0
    assert logp.grad.item() == 0.0  # clipped: no gradient
    loss, m, logp = _one_token(1.1, 1.0, cfg())
    loss.backward()
    assert m["clip_frac"] == 0.0
    assert logp.grad.item() == pytest.approx(-1.1)  # d(-A*exp(logp-old))/dlogp = -A*ratio
    loss, m, logp = _one_token(5.0, -1.0, cfg())
    loss.backward()
    assert m["dual_clip_frac"] == 1.0 and logp.grad.item() == 0.0
    loss, _, _ = _one_token(5.0, -1.0, cfg(dual_clip=None))
    assert loss.item() == pytest.approx(5.0)


def test_k3_kl_by_hand():
    logp = torch.tensor([math.log(0.5), math.log(0.3)])
    ref = torch.tensor([math.log(0.25), math.log(0.3)])
    # r = ref/p = 0.5: 0.5 - ln(0.5) - 1 = 0.19315; equal policies: 0
    assert k3_kl(logp, ref).tolist() == pytest.approx([0.5 - math.log(0.5) - 1.0, 0.0], abs=1e-6)


def test_kl_term_enters_loss_with_its_coefficient():
    logp = torch.tensor([[math.log(0.5), math.log(0.5)]])
    ref = torch.tensor([[math.log(0.25), math.log(0.5)]])
    mask = torch.ones(1, 2)
    loss, m = grpo_loss(logp, logp.clone(), ref, torch.tensor([0.0]), mask, cfg(kl_coef=0.1))
    k = 0.5 - math.log(0.5) - 1.0
    assert m["kl"] == pytest.approx(k / 2, rel=1e-5)
    assert loss.item() == pytest.approx(0.1 * k / 2, rel=1e-5)
    loss0, m0 = grpo_loss(logp, logp.clone(), ref, torch.tensor([0.0]), mask, cfg(kl_coef=0.0))
    assert loss0.item() == 0.0 and m0["kl"] == 0.0


def test_token_mean_over_all_batch_tokens():
    # Row 0: 3 response tokens, row 1: 1 token (+2 padding). Ratio 1 everywhere, so loss = -A per token.
    logp = torch.zeros(2, 3)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    adv = torch.tensor([1.0, -2.0])
    loss, m = grpo_loss(logp, logp.clone(), None, adv, mask, cfg())
    assert loss.item() == pytest.approx((-1 - 1 - 1 + 2) / 4)  # token mean, not mean of row means (0.5)
    assert m["response_tokens"] == 4.0
    # Split into two micro-batches with the batch denominator: the sum equals the full loss.
    l0, _ = grpo_loss(logp[:1], logp[:1], None, adv[:1], mask[:1], cfg(), num_tokens=4)
    l1, _ = grpo_loss(logp[1:], logp[1:], None, adv[1:], mask[1:], cfg(), num_tokens=4)
    assert (l0 + l1).item() == pytest.approx(loss.item())


def test_truncated_importance_sampling_weight():
    old = torch.tensor([[math.log(0.5), math.log(0.5)]])
    behaviour = torch.tensor([[math.log(0.25), math.log(0.625)]])  # weights 2.0 -> capped 1.5, and 0.8
    mask = torch.ones(1, 2)
    adv = torch.tensor([1.0])
    loss, _ = grpo_loss(old.clone(), old, None, adv, mask, cfg(tis_cap=1.5), behaviour_logprobs=behaviour)
    assert loss.item() == pytest.approx((-1.5 - 0.8) / 2, rel=1e-5)
    loss_off, _ = grpo_loss(old.clone(), old, None, adv, mask, cfg(tis_cap=None), behaviour_logprobs=behaviour)
    assert loss_off.item() == pytest.approx(-1.0)


def test_entropy_bonus_and_metric():
    logp = torch.zeros(1, 2)
    ent = torch.tensor([[2.0, 4.0]])
    loss, m = grpo_loss(logp, logp, None, torch.tensor([0.0]), torch.ones(1, 2), cfg(entropy_coef=0.5), entropy=ent)
    assert m["entropy"] == pytest.approx(3.0)
    assert loss.item() == pytest.approx(-0.5 * 3.0)


# ---------------------------------------------------------------- batching


def test_pack_and_collate_masks_only_response_targets():
    rows = [TurnRow([1, 2], [3, 4, 5], [-0.1, -0.2, -0.3], 1.0, "u"), TurnRow([7], [8], [-0.4], -1.0, "v")]
    packs = pack_micro_batches(rows + [TurnRow([1] * 9, [2], [-1.0], 0.0, "w")], micro_batch_tokens=10)
    assert [[len(r.prompt_ids) for r in p] for p in packs] == [[9], [2, 1]]  # longest first, 2*5 <= 10
    mb = collate(rows)
    assert mb.input_ids.tolist() == [[1, 2, 3, 4, 5], [0, 0, 0, 7, 8]]  # left-padded: responses end together
    assert mb.position_ids.tolist() == [[0, 1, 2, 3, 4], [0, 0, 0, 0, 1]]
    assert mb.response_mask.tolist() == [[1, 1, 1], [0, 0, 1]]  # over the last 3 targets only
    assert mb.behaviour_logprobs.flatten().tolist() == pytest.approx([-0.1, -0.2, -0.3, 0, 0, -0.4])
    assert mb.advantages.tolist() == [1.0, -1.0] and mb.response_tokens == 4


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_token_logprobs_of_a_padded_batch_match_each_row_alone(arch):
    """Left padding, position ids and the logits kept for the tail only change nothing a row scores."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    torch.manual_seed(0)
    kind = {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch]
    model = AutoModelForCausalLM.from_config(
        kind(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4)
    ).eval()
    rows = [TurnRow([1, 2, 3, 4, 5, 6], [7, 8], [0.0] * 2, 0.0, "a"), TurnRow([9], [10, 11, 12, 13], [0.0] * 4, 0.0, "b"),
            TurnRow([14, 15, 16], [17], [0.0], 0.0, "c")]
    mb = collate(rows)
    with torch.no_grad():
        logp, entropy = token_logprobs(model, mb, with_entropy=True)
        for i, r in enumerate(rows):
            ids = torch.tensor([r.prompt_ids + r.response_ids])
            logits = model(input_ids=ids).logits[0, :-1].float()
            alone = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None])[:, 0][-len(r.response_ids):]
            k = len(r.response_ids)
            assert logp[i, -k:].tolist() == pytest.approx(alone.tolist(), abs=1e-5)
            assert torch.isfinite(entropy[i]).all()


# ---------------------------------------------------------------- learning


@pytest.fixture
def one_thread():
    # Tiny matmuls: intra-op threads only add contention on a shared CPU.
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def test_grpo_raises_frequency_of_rewarded_token(one_thread):
    """A tiny LM rewarded for emitting token 5 learns to emit it more often (plain torch, seeded)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    vocab, target, n, length = 16, 5, 8, 4
    model = LlamaForCausalLM(
        LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4)
    )
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    c = cfg(kl_coef=0.0)
    prompts = [[1, 2, 3], [4, 6, 7]]

    def sample(prompt):
        ids = torch.tensor([prompt] * n)
        with torch.no_grad():
            for _ in range(length):
                probs = torch.softmax(model(input_ids=ids).logits[:, -1].float(), dim=-1)
                ids = torch.cat([ids, torch.multinomial(probs, 1)], dim=1)
        return ids[:, len(prompt) :].tolist()

    def target_freq():
        # Exact probability of the target as the first response token, averaged over prompts.
        with torch.no_grad():
            logits = model(input_ids=torch.tensor(prompts)).logits[:, -1]
        return float(torch.softmax(logits, -1)[:, target].mean())

    before = target_freq()
    for _ in range(15):
        rows_in, rewards, uids = [], [], []
        for gi, p in enumerate(prompts):
            for r in sample(p):
                rows_in.append((p, r))
                rewards.append(r.count(target) / length)
                uids.append(str(gi))
        adv = group_advantages(rewards, uids)
        rows = [TurnRow(p, r, [0.0] * length, a, u) for (p, r), a, u in zip(rows_in, adv, uids)]
        mb = collate(rows)
        with torch.no_grad():
            old, _ = token_logprobs(model, mb)
        logp, _ = token_logprobs(model, mb)
        loss, m = grpo_loss(logp, old, None, mb.advantages, mb.response_mask, c)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert math.isfinite(loss.item())
    after = target_freq()
    print(f"p(target) {before:.3f} -> {after:.3f}")
    assert before < 0.2
    assert after > before + 0.3, (before, after)
