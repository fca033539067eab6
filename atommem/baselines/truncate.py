"""Full context truncated to the model window: no memory at all, answer from the head and tail of the context.

Reading turns are empty (the chunk advances without a write). At the first answer turn the policy renders
the sample's whole context (`Document {i}:` ...), keeps its first and last tokens within `window_tokens`
(the middle is cut, like the env's own truncation) and answers each question from that text.
`TruncatePolicy` asks the model; `ScriptedTruncatePolicy` (synthetic data, no model) follows the
question's chain through the fact lines that survive the cut, counting whitespace words as tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from atommem.baselines import prompts
from atommem.baselines.facts import facts_in, resolve
from atommem.baselines.generate import answer_action, check_model_args, generate_answer
from atommem.env.chunking import detokenize, middle_truncate, render_context, tokenize
from atommem.errors import UserError
from atommem.policies.base import PolicyOutput

if TYPE_CHECKING:
    from atommem.env.memory_env import MemoryEnv


def truncated_context(env: "MemoryEnv", window_tokens: int, tokenizer: Any = None) -> str:
    """The episode's rendered context cut in the middle to `window_tokens` tokens (words without a tokenizer)."""
    tokens = tokenize(render_context(env.sample.documents), tokenizer)
    return detokenize(middle_truncate(tokens, window_tokens), tokenizer)


class _TruncateWorkflow:
    def __init__(self, window_tokens: int):
        if window_tokens < 1:
            raise UserError(f"truncate window_tokens must be >= 1, got {window_tokens}")
        self.window_tokens = window_tokens
        self._context: str | None = None

    def context(self, env: "MemoryEnv", tokenizer: Any) -> str:
        if self._context is None:
            self._context = truncated_context(env, self.window_tokens, tokenizer)
        return self._context


class TruncatePolicy(_TruncateWorkflow):
    """Model-driven truncated-context baseline; one instance plays ONE episode."""

    def __init__(self, engine: Any = None, tokenizer: Any = None, sampling: Any = None, window_tokens: int = 1024):
        super().__init__(window_tokens)
        check_model_args("truncate", engine, tokenizer, sampling)
        self._engine, self._tokenizer, self._sampling = engine, tokenizer, sampling

    async def act(self, env: "MemoryEnv") -> PolicyOutput:
        obs = env.observation
        if obs.phase == "read":
            return PolicyOutput(text="")
        messages = prompts.truncate_answer(obs.questions[obs.question_index], self.context(env, self._tokenizer))
        return await generate_answer(self._engine, self._tokenizer, self._sampling, messages)


class ScriptedTruncatePolicy(_TruncateWorkflow):
    """Scripted truncated-context baseline for synthetic samples; one instance plays ONE episode."""

    def __init__(self, window_tokens: int = 128, **_model_args: Any):
        """`_model_args` (engine, tokenizer, sampling) are accepted and unused, so the registry builds all alike."""
        super().__init__(window_tokens)

    async def act(self, env: "MemoryEnv") -> PolicyOutput:
        obs = env.observation
        if obs.phase == "read":
            return PolicyOutput(text="")
        facts = facts_in(self.context(env, None))
        return PolicyOutput(text=answer_action(resolve(obs.questions[obs.question_index], facts)))
