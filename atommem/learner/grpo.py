"""GRPO maths in plain torch: group advantages, turn rows, and the token-level clipped loss.

Advantages are computed per trajectory, grouped by the sample uid (never by reshaping a flat list,
since groups may arrive in any order and trajectories have different turn counts), and only then is
each trajectory expanded into one training row per turn that carries its trajectory's advantage.
Expanding first would let long trajectories dominate the group statistics.

The loss follows DAPO/verl: ratio = exp(logp - old_logp), asymmetric clip [1-eps_low, 1+eps_high],
dual clip c for negative advantages, the low-variance "k3" KL to a frozen reference, and token-mean
aggregation over every response token of the whole batch (the caller passes the batch's token count
when a batch is split into micro-batches or ranks, so the mean stays exact).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import torch

from atommem.config import GRPOConfig
from atommem.trajectory import Trajectory


def group_advantages(
    rewards: Sequence[float], uids: Sequence[str], std_normalize: bool = False, eps: float = 1e-6
) -> list[float]:
    """Reward minus its uid group's mean (optionally over the group's std), one value per trajectory."""
    if len(rewards) != len(uids):
        raise ValueError(f"{len(rewards)} rewards but {len(uids)} uids")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, uid in enumerate(uids):
        groups[uid].append(i)
    advantages = [0.0] * len(rewards)
    for members in groups.values():
        values = torch.tensor([float(rewards[i]) for i in members], dtype=torch.float64)
        centred = values - values.mean()
        if std_normalize:
            # unbiased=False: a group of one has std 0 (advantage 0), not NaN.
            centred = centred / (values.std(unbiased=False) + eps)
        for i, a in zip(members, centred.tolist()):
            advantages[i] = a
    return advantages


@dataclass
class TurnRow:
    """One training row: a turn's prompt and sampled response with its trajectory's advantage."""

    prompt_ids: list[int]
    response_ids: list[int]
    old_logprobs: list[float]  # behaviour logprobs from the engine (used for truncated IS)
    advantage: float
    uid: str

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


def expand_to_rows(trajectories: Sequence[Trajectory], advantages: Sequence[float]) -> list[TurnRow]:
    """Every turn with a non-empty response becomes a row carrying its trajectory's advantage."""
    if len(trajectories) != len(advantages):
        raise ValueError(f"{len(trajectories)} trajectories but {len(advantages)} advantages")
    rows = []
    for traj, adv in zip(trajectories, advantages):
        for turn in traj.turns:
            if not turn.response_ids:
                continue
            if len(turn.logprobs) != len(turn.response_ids):
                raise ValueError(
                    f"episode {traj.episode_id or traj.uid}: turn has {len(turn.response_ids)} response ids "
                    f"but {len(turn.logprobs)} logprobs"
                )
            rows.append(TurnRow(list(turn.prompt_ids), list(turn.response_ids), list(turn.logprobs), float(adv), traj.uid))
    return rows


def count_rows(trajectories: Sequence[Trajectory]) -> int:
    """How many rows `expand_to_rows` makes from these trajectories."""
    return sum(1 for t in trajectories for turn in t.turns if turn.response_ids)


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi || ref): exp(ref - logp) - (ref - logp) - 1 (>= 0, low variance)."""
    log_ratio = (ref_logprobs - logprobs).clamp(-20.0, 20.0)
    return torch.exp(log_ratio) - log_ratio - 1.0


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cfg: GRPOConfig,
    *,
    behaviour_logprobs: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    num_tokens: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Token-level clipped policy-gradient loss with dual clip, k3 KL and optional truncated IS.

    logprobs/old_logprobs/ref_logprobs/behaviour_logprobs/entropy/mask: (B, T) over response tokens;
    advantages: (B,) per row or (B, T). `num_tokens` is the token-mean denominator (default: mask.sum());
    pass the whole batch's response-token count when this call sees one micro-batch of it.
    Metrics are means over this call's masked tokens.
    """
    mask = mask.to(logprobs.dtype)
    if advantages.dim() == 1:
        advantages = advantages[:, None].expand_as(logprobs)
    advantages = advantages.to(logprobs.dtype)
    denom = float(num_tokens) if num_tokens is not None else float(mask.sum().clamp(min=1.0))

    log_ratio = (logprobs - old_logprobs).clamp(-20.0, 20.0)
    ratio = torch.exp(log_ratio)
    surr1 = -advantages * ratio
    surr2 = -advantages * ratio.clamp(1.0 - cfg.clip_low, 1.0 + cfg.clip_high)
    clipped = torch.maximum(surr1, surr2)
    pg = clipped
    dual_clipped = torch.zeros_like(mask, dtype=torch.bool)
    if cfg.dual_clip is not None:
        # For A < 0 a huge ratio would make -A*ratio unbounded; cap the loss at c*|A| (= -A*c).
        cap = -advantages * cfg.dual_clip
        dual_clipped = (advantages < 0) & (clipped > cap)
        pg = torch.where(advantages < 0, torch.minimum(clipped, cap), clipped)
    if behaviour_logprobs is not None and cfg.tis_cap is not None:
        # Truncated IS corrects for the engine's sampling distribution differing from the learner's.
        tis_weight = torch.exp(old_logprobs - behaviour_logprobs).clamp(max=cfg.tis_cap).detach()
        pg = pg * tis_weight
    per_token = pg
    kl = None
    if ref_logprobs is not None and cfg.kl_coef != 0.0:
        kl = k3_kl(logprobs, ref_logprobs)
        per_token = per_token + cfg.kl_coef * kl
    if entropy is not None and cfg.entropy_coef != 0.0:
        per_token = per_token - cfg.entropy_coef * entropy
    loss = (per_token * mask).sum() / denom

    with torch.no_grad():
        n = mask.sum().clamp(min=1.0)

        def masked_mean(x: torch.Tensor) -> float:
            return float((x.to(mask.dtype) * mask).sum() / n)

        big = torch.finfo(ratio.dtype).max
        metrics = {
            "pg_loss": masked_mean(pg),
            "clip_frac": masked_mean((surr2 > surr1).to(mask.dtype)),
            "dual_clip_frac": masked_mean(dual_clipped.to(mask.dtype)),
            "ratio_mean": masked_mean(ratio),
            "ratio_max": float(torch.where(mask > 0, ratio, torch.full_like(ratio, -big)).max()) if mask.any() else 1.0,
            "ratio_min": float(torch.where(mask > 0, ratio, torch.full_like(ratio, big)).min()) if mask.any() else 1.0,
            "kl": masked_mean(kl) if kl is not None else 0.0,
            "entropy": masked_mean(entropy) if entropy is not None else 0.0,
            "response_tokens": float(mask.sum()),
        }
    return loss, metrics
