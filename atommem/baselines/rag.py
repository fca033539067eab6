"""Plain RAG over the same env: every chunk goes into long-term memory as passages, one query per question.

Reading: the chunk is split into passages of at most `passage_words` words (line boundaries kept when
they fit) and each becomes a memory entry with `<add_memory>` (no model call: indexing is the workflow).
Answering: `<update_query>` with the question text, then an answer from the top-k passages shown in the
next prompt. `RAGPolicy` asks the model for that answer; `ScriptedRAGPolicy` (synthetic data, no model)
follows the question's chain through the fact lines of the retrieved passages.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from atommem.actions import Create, Read, render_action
from atommem.baselines import prompts
from atommem.baselines.facts import facts_in, resolve
from atommem.baselines.generate import answer_action, check_model_args, generate_answer, strip_tags
from atommem.errors import UserError
from atommem.policies.base import PolicyOutput

if TYPE_CHECKING:
    from atommem.env.memory_env import MemoryEnv

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def passages(text: str, passage_words: int) -> list[str]:
    """`text` packed into passages of at most `passage_words` words, cutting between sentences where it can
    (a sentence longer than a passage is cut by words)."""
    out: list[str] = []
    current: list[str] = []
    for sentence in _SENTENCE_END.split(strip_tags(text)):
        words = sentence.split()
        while words:
            if current and len(current) + len(words) > passage_words:
                out.append(" ".join(current))
                current = []
            take = words[: passage_words - len(current)]
            current.extend(take)
            words = words[len(take) :]
    if current:
        out.append(" ".join(current))
    return out


class _RAGWorkflow:
    def __init__(self, passage_words: int):
        if passage_words < 1:
            raise UserError(f"rag passage_words must be >= 1, got {passage_words}")
        self.passage_words = passage_words

    def _read(self, env: "MemoryEnv") -> PolicyOutput:
        return PolicyOutput(text=" ".join(render_action(Create(p)) for p in passages(env.observation.chunk_text, self.passage_words)))

    @staticmethod
    def _query(env: "MemoryEnv") -> PolicyOutput | None:
        """The retrieval turn of a question, or None once its results are shown."""
        obs = env.observation
        question = " ".join(obs.questions[obs.question_index].split())
        return None if obs.query == question else PolicyOutput(text=render_action(Read(question)))

    async def act(self, env: "MemoryEnv") -> PolicyOutput:
        """Store every chunk as passages, query with the question, then answer from what is retrieved."""
        if env.observation.phase == "read":
            return self._read(env)
        query = self._query(env)
        if query is not None:
            return query
        return await self._answer(env)

    async def _answer(self, env: "MemoryEnv") -> PolicyOutput:
        raise NotImplementedError


class RAGPolicy(_RAGWorkflow):
    """Model-driven RAG; one instance plays ONE episode."""

    def __init__(self, engine: Any = None, tokenizer: Any = None, sampling: Any = None, passage_words: int = 64):
        super().__init__(passage_words)
        check_model_args("rag", engine, tokenizer, sampling)
        self._engine, self._tokenizer, self._sampling = engine, tokenizer, sampling

    async def _answer(self, env: "MemoryEnv") -> PolicyOutput:
        obs = env.observation
        messages = prompts.rag_answer(obs.questions[obs.question_index], obs.retrieved_text)
        return await generate_answer(self._engine, self._tokenizer, self._sampling, messages)


class ScriptedRAGPolicy(_RAGWorkflow):
    """Scripted RAG for synthetic samples; one instance plays ONE episode."""

    def __init__(self, passage_words: int = 64, **_model_args: Any):
        """`_model_args` (engine, tokenizer, sampling) are accepted and unused, so the registry builds all alike."""
        super().__init__(passage_words)

    async def _answer(self, env: "MemoryEnv") -> PolicyOutput:
        obs = env.observation
        return PolicyOutput(text=answer_action(resolve(obs.questions[obs.question_index], facts_in(obs.retrieved_text))))
