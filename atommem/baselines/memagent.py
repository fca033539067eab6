"""MemAgent-style overwrite memory: only the scratchpad, rewritten after every chunk, answers from it.

`MemAgentPolicy` prompts the model (baselines/prompts.py) for the new memory each chunk and for the
answer from the memory; the workflow wraps them in `<update_memory>` / `<final_answer>`.
`ScriptedMemAgentPolicy` needs no model (synthetic data): its memory holds at most `keep` fact lines
(by default the agent's own budget, `memory.max_entries`, when the env bounds memory; else 4), the facts
the questions need so far (a 2-hop question's second fact once its friend is known) first, then the most
recent others;
it answers by following the question's chain through that memory. No long-term store, no queries. Given a
tokenizer it records token ids, so it can be the SFT teacher of the overwrite action set
(`sft.teacher: memagent-scripted`, `env.action_set: overwrite`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from atommem.actions import Scratchpad, render_action
from atommem.baselines import prompts
from atommem.baselines.facts import Fact, facts_in, needed_pairs, resolve
from atommem.baselines.generate import answer_action, check_model_args, generate, generate_answer, strip_tags
from atommem.errors import UserError
from atommem.policies.base import PolicyOutput, check_teacher_tokenizer, scripted_output

if TYPE_CHECKING:
    from atommem.env.memory_env import MemoryEnv


class MemAgentPolicy:
    """Model-driven MemAgent workflow; one instance plays ONE episode."""

    def __init__(self, engine: Any = None, tokenizer: Any = None, sampling: Any = None):
        check_model_args("memagent", engine, tokenizer, sampling)
        self._engine, self._tokenizer, self._sampling = engine, tokenizer, sampling

    async def act(self, env: "MemoryEnv") -> PolicyOutput:
        obs = env.observation
        if obs.phase != "read":
            messages = prompts.memagent_answer(obs.questions[obs.question_index], obs.scratchpad)
            return await generate_answer(self._engine, self._tokenizer, self._sampling, messages)
        messages = prompts.memagent_read(obs.questions, obs.scratchpad, obs.chunk_text)
        out = await generate(self._engine, self._tokenizer, self._sampling, messages)
        memory = strip_tags(out.text)
        # an empty rewrite keeps the old memory: a turn with no action just advances the chunk
        out.text = render_action(Scratchpad(memory)) if memory else ""
        out.complete = True  # the workflow's action is well-formed whatever the model wrote
        return out


class ScriptedMemAgentPolicy:
    """Scripted overwrite memory of `keep` fact lines for synthetic samples; one instance per episode."""

    DEFAULT_KEEP = 4  # fact lines when the env's memory is unbounded

    def __init__(self, keep: int | None = None, tokenizer: Any = None, **_model_args: Any):
        """`keep` None: the env's `memory.max_entries` (the same budget as the agent's store), else DEFAULT_KEEP.
        `tokenizer`: record prompt and response ids (as a teacher). `_model_args` (engine, sampling) are
        accepted and unused, so the registry builds all alike."""
        if keep is not None and keep < 1:
            raise UserError(f"memagent-scripted keep must be >= 1, got {keep}")
        check_teacher_tokenizer("memagent-scripted", tokenizer)
        self.keep = keep
        self._tokenizer = tokenizer

    def _rewrite(self, questions: list[str], memory: list[Fact], chunk: str, keep: int) -> list[Fact]:
        facts = list(dict.fromkeys(memory + facts_in(chunk)))  # old then new, deduplicated, in order
        need = needed_pairs(questions, facts)
        relevant = [f for f in facts if (f[0], f[1]) in need][-keep:]
        room = keep - len(relevant)
        others = [f for f in facts if (f[0], f[1]) not in need][-room:] if room else []
        kept = set(relevant) | set(others)
        return [f for f in facts if f in kept]

    async def act(self, env: "MemoryEnv") -> PolicyOutput:
        obs = env.observation
        memory = facts_in(obs.scratchpad)
        if obs.phase == "read":
            keep = self.keep or env.memory.max_entries or self.DEFAULT_KEEP
            kept = self._rewrite(obs.questions, memory, obs.chunk_text, keep)
            text = " ; ".join(" ".join(f) for f in kept)
            return scripted_output(render_action(Scratchpad(text)) if text else "", env, self._tokenizer)
        return scripted_output(answer_action(resolve(obs.questions[obs.question_index], memory)), env, self._tokenizer)
