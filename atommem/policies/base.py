"""What a policy is: something that plays one turn of a MemoryEnv episode and says what it sent and got."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from atommem.env.memory_env import MemoryEnv


@dataclass
class PolicyOutput:
    text: str  # the response, applied to the env as the action
    prompt_ids: list[int] | None = None  # what was sent to the engine (None for scripted policies w/o tokenizer)
    response_ids: list[int] | None = None  # sampled ids, EOS included when generated
    logprobs: list[float] | None = None  # behaviour logprob per response id
    weight_version: int = 0  # policy weights that produced the response
    complete: bool = True  # False: generation hit max_tokens without EOS


class Policy(Protocol):
    async def act(self, env: "MemoryEnv") -> PolicyOutput:
        """One turn for `env`'s current observation; a policy instance serves ONE episode."""
        ...
