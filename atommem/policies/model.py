"""`ModelPolicy`: a language model playing the env through any `Engine`, token in / token out.

The prompt is the env's chat-templated ids (templated once per turn by the env); the response ids and
their logprobs come straight from the engine and are never re-tokenized. The text handed to the env is
decoded keeping the action tags (special tokens of the tiny tokenizer) and dropping EOS/pad.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from atommem.policies.base import PolicyOutput

if TYPE_CHECKING:  # engines implement the interface a policy drives; policies never import them
    from atommem.engines.base import Engine, SamplingParams
    from atommem.env.memory_env import MemoryEnv


class ModelPolicy:
    """One episode's policy: `await act(env)` generates one turn with `engine`. With `seed` (the episode's),
    turn t samples with seed `seed * 2**16 + t`, so a seeded episode replays the same tokens from the same weights
    whatever else the engine batches with it; without one the engine's own generator samples."""

    def __init__(self, engine: "Engine", tokenizer: Any, sampling: "SamplingParams", seed: int | None = None):
        self.engine = engine
        self.tokenizer = tokenizer
        self.sampling = sampling
        self.seed = seed
        self._turn = 0
        self._drop = {t for t in (tokenizer.eos_token_id, tokenizer.pad_token_id) if t is not None}

    async def act(self, env: "MemoryEnv") -> PolicyOutput:
        prompt_ids = env.prompt_ids(self.tokenizer)
        params = replace(self.sampling)
        if self.seed is not None:
            params.seed = (self.seed << 16) + self._turn
        self._turn += 1
        gen = await self.engine.generate(prompt_ids, params)
        return PolicyOutput(
            text=self.decode(gen.token_ids),
            prompt_ids=prompt_ids,
            response_ids=list(gen.token_ids),
            logprobs=list(gen.logprobs),
            weight_version=gen.weight_version,
            complete=gen.finish_reason == "stop",
            engine_id=gen.engine_id,
        )

    def decode(self, token_ids: list[int]) -> str:
        """Response text with action tags kept and EOS/pad removed."""
        kept = [t for t in token_ids if t not in self._drop]
        return self.tokenizer.decode(kept, skip_special_tokens=False, clean_up_tokenization_spaces=False)
