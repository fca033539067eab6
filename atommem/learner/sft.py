"""Supervised rows from teacher trajectories: every turn of a good-enough episode is a (prompt, response) row.

The loss covers response tokens only; the prompt (instructions, memory, chunk) is context. Validation scores
held-out teacher rows teacher-forced, grouped by turn state and the teacher's action: a mean loss hides which
decision a small policy has not learned yet (on the revisions task: copying the value of an add past
near misses, or reading the key before writing a revision).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from atommem.actions import action_kind, parse_actions
from atommem.trajectory import Trajectory, Turn


@dataclass
class SFTRow:
    prompt_ids: list[int]
    response_ids: list[int]
    label: str = ""  # "<turn state>/<teacher's first action kind>", what validation groups by
    first_token_weight: float = 1.0  # loss weight of the first response token (a teacher turn's operation)

    def loss_mask(self) -> list[int]:
        """1 on response tokens, 0 on prompt tokens (aligned with prompt_ids + response_ids)."""
        return [0] * len(self.prompt_ids) + [1] * len(self.response_ids)


def sft_rows(trajectories: Sequence[Trajectory], min_reward: float = 0.5, first_token_weight: float = 1.0) -> list[SFTRow]:
    """One row per non-empty turn of every trajectory whose reward is at least `min_reward`, its first response
    token (the operation) weighted `first_token_weight` in the loss."""
    rows = []
    for traj in trajectories:
        if traj.reward < min_reward:
            continue
        for turn in traj.turns:
            if not turn.prompt_ids or not turn.response_ids:
                continue
            rows.append(SFTRow(list(turn.prompt_ids), list(turn.response_ids), row_label(turn), first_token_weight))
    return rows


def row_label(turn: Turn) -> str:
    """The turn's state and the kind of its first action ("none" for a response without one), e.g. "revision/update"."""
    actions = parse_actions(turn.response_text).actions
    return f"{turn.state or 'turn'}/{action_kind(actions[0]) if actions else 'none'}"


@dataclass
class RowScore:
    """One validation row, teacher-forced: is the model's argmax the teacher's token?"""

    label: str
    first_right: bool  # at the first response token (which operation)
    all_right: bool  # at every response token (the whole response, arguments included)
    nll: float  # summed over the response tokens
    tokens: int


def validation_metrics(scores: Sequence[RowScore]) -> dict[str, float]:
    """`val_nll` per response token and `val_full` (share of rows right at every token) over all rows, and
    per label `val_first/<label>`, `val_full/<label>` and `val_rows/<label>`."""
    if not scores:
        return {}
    tokens = sum(s.tokens for s in scores)
    out = {"val_nll": sum(s.nll for s in scores) / max(tokens, 1), "val_full": sum(s.all_right for s in scores) / len(scores)}
    for label in sorted({s.label for s in scores}):
        group = [s for s in scores if s.label == label]
        out[f"val_first/{label}"] = sum(s.first_right for s in group) / len(group)
        out[f"val_full/{label}"] = sum(s.all_right for s in group) / len(group)
        out[f"val_rows/{label}"] = float(len(group))
    return out


def sft_loss(logprobs: torch.Tensor, mask: torch.Tensor, num_tokens: float | None = None) -> torch.Tensor:
    """Negative log-likelihood summed over masked (response) tokens / `num_tokens` (default: mask.sum()); a
    float mask weighs each token (`MicroBatch.token_weights`), and `num_tokens` is then the weights' sum."""
    mask = mask.to(logprobs.dtype)
    denom = float(num_tokens) if num_tokens is not None else float(mask.sum().clamp(min=1.0))
    return -(logprobs * mask).sum() / denom
