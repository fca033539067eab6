"""`OraclePolicy`: a scripted teacher that plays synthetic episodes with the action language.

Reading: for every fact the questions need that appears whole in the current chunk and is not in
memory yet, it emits `<add_memory> entity attribute value </add_memory>` (with probability
`store_relevant_p`; unneeded facts with `store_distractor_p`; each fact is decided once per episode).
A turn with nothing to store is an empty response, which advances the chunk.
Answering: it walks the question's chain with `<update_query> entity attribute </update_query>`
(2-hop: the relation first, then the attribute of the friend found), reads the value from the
retrieval block shown in the prompt, and answers `<final_answer> \\boxed{ value } </final_answer>`
(`unknown` when memory does not have it; with `answer_top_hit`, the value of the top retrieved entry
instead, `unknown` only when nothing is retrieved). It never looks at gold answers, only at which facts matter.
A weak teacher (p < 1) is on purpose: its most likely decision is then wrong somewhere, which leaves
reinforcement learning something to improve (SPEC §5). `answer_top_hit` is for such a teacher: with
`unknown` for most questions an imitator learns to say `unknown` even when memory has the fact, while
"copy the top entry's value" is one skill a tiny model picks up fast and is right whenever the fact was stored.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from atommem.actions import Answer, Create, Read, render_action
from atommem.data.synthetic import UNKNOWN, fact_text
from atommem.errors import UserError
from atommem.policies.base import PolicyOutput

if TYPE_CHECKING:
    from atommem.env.memory_env import MemoryEnv


def _entry_words(retrieved_text: str) -> list[list[str]]:
    """Words of each entry's text in rendered `Memory {id}: {text}` lines, in rank order."""
    return [line.partition(": ")[2].split() for line in retrieved_text.splitlines()]


def _lookup(retrieved_text: str, entity: str, attribute: str) -> str | None:
    """Value of (entity, attribute) in the rendered retrieval block, or None."""
    for words in _entry_words(retrieved_text):
        if len(words) >= 3 and words[0] == entity and words[1] == attribute:
            return words[2]
    return None


class OraclePolicy:
    """Scripted teacher for synthetic samples; one instance plays ONE episode."""

    def __init__(
        self,
        tokenizer: Any = None,
        store_relevant_p: float = 1.0,
        store_distractor_p: float = 0.0,
        rng_seed: int | None = None,
        answer_top_hit: bool = False,
    ):
        for name, p in (("store_relevant_p", store_relevant_p), ("store_distractor_p", store_distractor_p)):
            if not 0.0 <= p <= 1.0:
                raise UserError(f"OraclePolicy {name} must be in [0, 1], got {p}")
        if tokenizer is not None and tokenizer.eos_token_id is None:
            raise UserError("OraclePolicy needs a tokenizer with an eos token to build response ids")
        self._tokenizer = tokenizer
        self._p_relevant = store_relevant_p
        self._p_distractor = store_distractor_p
        self._answer_top_hit = answer_top_hit
        self._rng = random.Random(rng_seed)
        self._decided: dict[tuple[str, str, str], bool] = {}
        self._question = -1
        self._hop = 0
        self._entity = ""

    async def act(self, env: "MemoryEnv") -> PolicyOutput:
        text = self.respond(env)
        if self._tokenizer is None:
            return PolicyOutput(text=text)
        tok = self._tokenizer
        response_ids = list(tok.encode(text, add_special_tokens=False)) + [tok.eos_token_id]
        return PolicyOutput(text=text, prompt_ids=env.prompt_ids(tok), response_ids=response_ids)

    def respond(self, env: "MemoryEnv") -> str:
        """The response text for `env`'s current turn."""
        meta = env.sample.metadata
        if "chains" not in meta or "facts" not in meta:
            raise UserError(
                f"OraclePolicy plays synthetic samples only: sample {env.sample.id!r} has no facts/chains metadata"
            )
        obs = env.observation
        if obs.phase == "read":
            return self._read_turn(env, meta)
        if obs.phase == "answer":
            return self._answer_turn(obs, meta["chains"][obs.question_index])
        raise RuntimeError("OraclePolicy.act called on a finished episode")

    def _read_turn(self, env: "MemoryEnv", meta: dict) -> str:
        needed = {tuple(f) for chain in meta["chains"] for f in chain["facts"]}
        known = {tuple(f) for f in meta["facts"]} | {tuple(f) for f in meta.get("filler_facts", [])}
        stored = {e.text for e in env.memory.entries()}
        words = env.observation.chunk_text.split()
        out: list[str] = []
        for i in range(len(words) - 3):
            fact = (words[i], words[i + 1], words[i + 2])
            if words[i + 3] != "." or fact not in known:
                continue
            text = fact_text(*fact)
            if text in stored:
                continue
            if fact not in self._decided:
                p = self._p_relevant if fact in needed else self._p_distractor
                self._decided[fact] = self._rng.random() < p
            if self._decided[fact]:
                out.append(render_action(Create(text)))
                stored.add(text)
        return " ".join(out)

    def _answer_turn(self, obs: Any, chain: dict) -> str:
        if obs.question_index != self._question:
            self._question, self._hop, self._entity = obs.question_index, 0, chain["entity"]
        path = chain["path"]
        target = f"{self._entity} {path[self._hop]}"
        if obs.query != target:
            return render_action(Read(target))
        value = _lookup(obs.retrieved_text, self._entity, path[self._hop])
        if value is None and self._answer_top_hit:
            value = _top_value(obs.retrieved_text)
        if value is None:
            return _answer(UNKNOWN)
        if self._hop + 1 < len(path):
            self._hop += 1
            self._entity = value
            return render_action(Read(f"{value} {path[self._hop]}"))
        return _answer(value)


def _top_value(retrieved_text: str) -> str | None:
    """Last word of the top non-empty retrieved entry (the value of an `e a v` entry), or None."""
    return next((words[-1] for words in _entry_words(retrieved_text) if words), None)


def _answer(value: str) -> str:
    # Spaces inside the braces (stripped on parsing) make the value tokenize as the same word it is in
    # memory (" pie"), so imitating the answer is a copy of one token, not a respelling ("{p" "ie}").
    return render_action(Answer(f"\\boxed{{ {value} }}", value))
