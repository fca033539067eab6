"""Supervised rows from teacher trajectories: every turn of a good-enough episode is a (prompt, response) row.

The loss covers response tokens only; the prompt (instructions, memory, chunk) is context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from atommem.trajectory import Trajectory


@dataclass
class SFTRow:
    prompt_ids: list[int]
    response_ids: list[int]

    def loss_mask(self) -> list[int]:
        """1 on response tokens, 0 on prompt tokens (aligned with prompt_ids + response_ids)."""
        return [0] * len(self.prompt_ids) + [1] * len(self.response_ids)


def sft_rows(trajectories: Sequence[Trajectory], min_reward: float = 0.5) -> list[SFTRow]:
    """One row per non-empty turn of every trajectory whose reward is at least `min_reward`."""
    rows = []
    for traj in trajectories:
        if traj.reward < min_reward:
            continue
        for turn in traj.turns:
            if not turn.prompt_ids or not turn.response_ids:
                continue
            rows.append(SFTRow(list(turn.prompt_ids), list(turn.response_ids)))
    return rows


def sft_loss(logprobs: torch.Tensor, mask: torch.Tensor, num_tokens: float | None = None) -> torch.Tensor:
    """Negative log-likelihood summed over masked (response) tokens / `num_tokens` (default: mask.sum())."""
    mask = mask.to(logprobs.dtype)
    denom = float(num_tokens) if num_tokens is not None else float(mask.sum().clamp(min=1.0))
    return -(logprobs * mask).sum() / denom
