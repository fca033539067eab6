"""The one interface every inference backend implements (HF transformers, vLLM, an OpenAI-compatible server): what a
policy drives (`generate`) and what the engine fleet drives (`health`, weight sync from the learner group)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


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
    engine_id: str = ""  # start id of the engine process that produced it (an engine actor's incarnation)


@runtime_checkable
class Engine(Protocol):
    """An inference backend: `HFEngine` (transformers), `VLLMEngine` (vLLM's AsyncLLM) or `OpenAIEngine` (an
    OpenAI-compatible server); `engine.kind` picks one and engines/actor.py hosts it in a Ray actor."""

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        """Sample one response to `prompt_ids`: its token ids, their logprobs and the weight version."""

    async def health(self) -> dict:
        """Status: `kind`, `ready`, `weight_version` and backend statistics (queue depth, ...)."""

    async def init_weight_sync(self, master_addr: str, master_port: int, rank: int, world_size: int, backend: str) -> None:
        """Join the learner's weight-sync group (`weight_sync/`) as `rank` (with tensor parallelism, ranks
        rank..rank+tp-1); an engine whose weights live elsewhere (a remote server) raises EngineError."""

    async def receive_weights(self, version: int) -> dict:
        """Load one broadcast of the learner's weights; later generations are stamped with `version`."""
