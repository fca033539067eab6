"""Store everything: every fact line becomes a long-term entry, then the agent's own reader answers.

The naive use of a CRUD memory, the reference point for the revisions task (`data.synth.task:
revisions`): reading adds one `<add_memory>` per fact line of the chunk, never modifying or deleting, so a
bounded memory (`memory.max_entries`) fills with whatever came first and a revised fact stays as a stale
duplicate that the retrieval ties rank first. Answering reads like the oracle teacher: `<update_query>`
with the question's entity and attribute, then the value of the top retrieved entry. Scripted, synthetic
data only; it sees what a model would (chunk, questions, retrieval block).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from atommem.actions import Create, Read, render_action
from atommem.baselines.facts import UNKNOWN, facts_in, question_path
from atommem.baselines.generate import answer_action
from atommem.policies.base import PolicyOutput

if TYPE_CHECKING:
    from atommem.env.memory_env import MemoryEnv


class ScriptedStoreEverythingPolicy:
    """Adds every fact line it reads, answers from the top retrieved entry; one instance per episode."""

    def __init__(self, **_model_args: Any):
        """`_model_args` (engine, tokenizer, sampling) are accepted and unused, so the registry builds all alike."""

    async def act(self, env: "MemoryEnv") -> PolicyOutput:
        obs = env.observation
        if obs.phase == "read":
            return PolicyOutput(text=" ".join(render_action(Create(" ".join(f))) for f in facts_in(obs.chunk_text)))
        parsed = question_path(obs.questions[obs.question_index])
        if parsed is None:
            return PolicyOutput(text=answer_action(UNKNOWN))
        entity, path = parsed
        key = f"{entity} {path[-1]}"
        if obs.query != key:
            return PolicyOutput(text=render_action(Read(key)))
        top = next((line.partition(": ")[2].split() for line in obs.retrieved_text.splitlines()), [])
        return PolicyOutput(text=answer_action(top[-1] if top else UNKNOWN))
