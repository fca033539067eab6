"""Turning variable-length (prompt, response) rows into padded micro-batches and per-token logprobs.

Rows are sorted by length and packed greedily so that a micro-batch's padded size (rows x longest
row) stays within `micro_batch_tokens`; a row longer than the budget goes alone. Rows are left-padded,
so every response ends at the last position and only the last W+1 positions (W = the longest response)
go through the output head: for a small model the head and its softmax over every prompt position cost
more than the model body (2x the learner step here), and prompts never carry loss. Per-token tensors are
(B, W) over the last W targets, and `response_mask` is 1 exactly where that target is a response token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch


class Row(Protocol):
    prompt_ids: list[int]
    response_ids: list[int]


@dataclass
class MicroBatch:
    input_ids: torch.Tensor  # (B, L) left-padded
    attention_mask: torch.Tensor  # (B, L)
    position_ids: torch.Tensor  # (B, L) 0 at each row's first real token, as when it was generated
    response_mask: torch.Tensor  # (B, W) float, 1 on response targets among the last W
    behaviour_logprobs: torch.Tensor  # (B, W) engine logprobs on response targets, 0 elsewhere
    advantages: torch.Tensor  # (B,)
    token_weights: torch.Tensor | None = None  # (B, W) SFT loss weight per response target; None: response_mask

    @property
    def loss_weights(self) -> torch.Tensor:
        return self.response_mask if self.token_weights is None else self.token_weights

    @property
    def num_rows(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def response_tokens(self) -> int:
        return int(self.response_mask.sum())


def row_length(row: Row) -> int:
    return len(row.prompt_ids) + len(row.response_ids)


def pack_micro_batches(rows: Sequence[Row], micro_batch_tokens: int) -> list[list[Row]]:
    """Sort rows longest first and pack them so rows x max_len <= micro_batch_tokens per micro-batch."""
    if micro_batch_tokens <= 0:
        raise ValueError(f"micro_batch_tokens must be positive, got {micro_batch_tokens}")
    batches: list[list[Row]] = []
    current: list[Row] = []
    longest = 0
    for row in sorted(rows, key=row_length, reverse=True):
        n = row_length(row)
        if current and max(longest, n) * (len(current) + 1) > micro_batch_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(row)
        longest = max(longest, n)
    if current:
        batches.append(current)
    return batches


def collate(rows: Sequence[Row], pad_id: int = 0) -> MicroBatch:
    """Left-pad rows into one MicroBatch (behaviour logprobs from `row.old_logprobs` when present, the first
    response token's loss weight from `row.first_token_weight`)."""
    length = max(row_length(r) for r in rows)
    width = max(1, max(len(r.response_ids) for r in rows))  # >= 1: the model reads 0 logits to keep as "all"
    b = len(rows)
    input_ids = torch.full((b, length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((b, length), dtype=torch.long)
    position_ids = torch.zeros((b, length), dtype=torch.long)
    response_mask = torch.zeros((b, width), dtype=torch.float32)
    behaviour = torch.zeros((b, width), dtype=torch.float32)
    advantages = torch.zeros(b, dtype=torch.float32)
    first_weights = [float(getattr(r, "first_token_weight", 1.0)) for r in rows]
    token_weights = torch.zeros((b, width), dtype=torch.float32) if any(w != 1.0 for w in first_weights) else None
    for i, r in enumerate(rows):
        n, k = row_length(r), len(r.response_ids)
        if not r.prompt_ids:
            raise ValueError("a row needs at least one prompt token to predict its first response token")
        input_ids[i, length - n :] = torch.tensor(list(r.prompt_ids) + list(r.response_ids), dtype=torch.long)
        attention_mask[i, length - n :] = 1
        position_ids[i, length - n :] = torch.arange(n)
        response_mask[i, width - k :] = 1.0
        if token_weights is not None:
            token_weights[i, width - k :] = 1.0
            token_weights[i, width - k] = first_weights[i]
        old = getattr(r, "old_logprobs", None)
        if old is not None:
            behaviour[i, width - k :] = torch.tensor(old, dtype=torch.float32)
        advantages[i] = float(getattr(r, "advantage", 0.0))
    return MicroBatch(input_ids, attention_mask, position_ids, response_mask, behaviour, advantages, token_weights)


def _tail_logits(model, mb: MicroBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 logits predicting each of the last W tokens (B, W, V) and those tokens (B, W)."""
    width = mb.response_mask.shape[1]
    out = model(
        input_ids=mb.input_ids, attention_mask=mb.attention_mask, position_ids=mb.position_ids,
        use_cache=False, logits_to_keep=width + 1,
    )
    return out.logits[:, :-1].float(), mb.input_ids[:, -width:]


def _target_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-softmax at the targets without the full (B, W, V) log-softmax, and the log normaliser."""
    log_norm = torch.logsumexp(logits, dim=-1)
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - log_norm, log_norm


def token_logprobs(
    model, mb: MicroBatch, with_entropy: bool = False, entropy_grad: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logprob of each of the last W tokens under `model` (float32, (B, W)), and its entropy when asked
    (differentiable only with `entropy_grad`, i.e. when an entropy bonus enters the loss)."""
    logits, targets = _tail_logits(model, mb)
    logprobs, log_norm = _target_logprobs(logits, targets)
    entropy = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            probs = torch.softmax(logits, dim=-1)
            entropy = log_norm - (probs * logits).sum(-1)
    return logprobs, entropy


def teacher_forced(model, mb: MicroBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Logprob of each of the last W tokens (B, W) and whether it is the model's argmax there (B, W bool)."""
    logits, targets = _tail_logits(model, mb)
    return _target_logprobs(logits, targets)[0], logits.argmax(-1) == targets
