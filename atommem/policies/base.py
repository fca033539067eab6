"""What a policy is: something that plays one turn of a MemoryEnv episode and says what it sent and got."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from atommem.errors import UserError

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
    engine_id: str = ""  # the engine process that generated it ("" for scripted policies)


class Policy(Protocol):
    async def act(self, env: "MemoryEnv") -> PolicyOutput:
        """One turn for `env`'s current observation; a policy instance serves ONE episode."""
        ...


def check_teacher_tokenizer(name: str, tokenizer: Any) -> None:
    """A scripted teacher records token ids only with a tokenizer that has an eos token to end them."""
    if tokenizer is not None and tokenizer.eos_token_id is None:
        raise UserError(f"{name} needs a tokenizer with an eos token to build response ids")


def scripted_output(text: str, env: "MemoryEnv", tokenizer: Any) -> PolicyOutput:
    """A scripted policy's turn; with a tokenizer also the ids a model would have been sent and have answered
    (the prompt, the response then eos), so the turn is an SFT row."""
    if tokenizer is None:
        return PolicyOutput(text=text)
    response_ids = list(tokenizer.encode(text, add_special_tokens=False)) + [tokenizer.eos_token_id]
    return PolicyOutput(text=text, prompt_ids=env.prompt_ids(tokenizer), response_ids=response_ids)
