"""The one interface every inference backend implements (HF on CPU, vLLM on GPU, OpenAI-compatible HTTP)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Protocol, runtime_checkable

import torch


@dataclass
class SamplingParams:
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    max_tokens: int = 256
    stop_token_ids: list[int] = field(default_factory=list)  # generation ends after emitting one of these (kept)
    seed: int | None = None


@dataclass
class Generation:
    token_ids: list[int]  # sampled ids, stop/EOS id included when emitted
    logprobs: list[float]  # logprob of each sampled id under the sampling distribution's model (before temperature)
    finish_reason: str  # "stop" | "length"
    weight_version: int  # version of the weights that produced it
    text: str | None = None  # decoded text when the backend has it


@runtime_checkable
class Engine(Protocol):
    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> Generation: ...

    async def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> None:
        """Load new weights (names/dtypes as the HF model) and stamp later generations with `version`."""

    async def health(self) -> dict: ...
