"""Turning variable-length (prompt, response) rows into padded micro-batches and per-token logprobs.

Rows are sorted by length and packed greedily so that a micro-batch's padded size (rows x longest
row) stays within `micro_batch_tokens`; a row longer than the budget goes alone. Tensors are laid out
over the shifted targets: position t holds the logprob of input token t+1, and `response_mask` is 1
exactly where that target is a response token (the prompt never carries loss).
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
    input_ids: torch.Tensor  # (B, L) right-padded
    attention_mask: torch.Tensor  # (B, L)
    response_mask: torch.Tensor  # (B, L-1) float, 1 on response targets
    behaviour_logprobs: torch.Tensor  # (B, L-1) engine logprobs on response targets, 0 elsewhere
    advantages: torch.Tensor  # (B,)

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
    """Right-pad rows into one MicroBatch (behaviour logprobs from `row.old_logprobs` when present)."""
    length = max(row_length(r) for r in rows)
    b = len(rows)
    input_ids = torch.full((b, length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((b, length), dtype=torch.long)
    response_mask = torch.zeros((b, length - 1), dtype=torch.float32)
    behaviour = torch.zeros((b, length - 1), dtype=torch.float32)
    advantages = torch.zeros(b, dtype=torch.float32)
    for i, r in enumerate(rows):
        p, n = len(r.prompt_ids), row_length(r)
        if p == 0:
            raise ValueError("a row needs at least one prompt token to predict its first response token")
        input_ids[i, :n] = torch.tensor(list(r.prompt_ids) + list(r.response_ids), dtype=torch.long)
        attention_mask[i, :n] = 1
        response_mask[i, p - 1 : n - 1] = 1.0
        old = getattr(r, "old_logprobs", None)
        if old is not None:
            behaviour[i, p - 1 : n - 1] = torch.tensor(old, dtype=torch.float32)
        advantages[i] = float(getattr(r, "advantage", 0.0))
    return MicroBatch(input_ids, attention_mask, response_mask, behaviour, advantages)


def token_logprobs(
    model, mb: MicroBatch, with_entropy: bool = False, entropy_grad: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logprob of every next token under `model` (float32, (B, L-1)), and its entropy when asked
    (differentiable only with `entropy_grad`, i.e. when an entropy bonus enters the loss)."""
    logits = model(input_ids=mb.input_ids, attention_mask=mb.attention_mask, use_cache=False).logits[:, :-1].float()
    targets = mb.input_ids[:, 1:]
    log_norm = torch.logsumexp(logits, dim=-1)
    logprobs = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - log_norm
    entropy = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            probs = torch.softmax(logits, dim=-1)
            entropy = log_norm - (probs * logits).sum(-1)
    return logprobs, entropy
