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
Revision samples (`data.synth.task: revisions`, whose metadata lists `revisions`) need an update instead
of a second copy, and the agent can only address an entry it sees. So before writing a needed fact the
oracle points the query at its key (`<update_query> entity attribute </update_query>`, a read-only turn
that keeps the chunk) unless it is already there; the retrieval block then shows that key's entries
first, with their ids, so the entry to update is the first one shown. If that entry holds the key it
modifies it (`<modify_memory> Memory 3: entity attribute value </modify_memory>`) and deletes any other
copies (stale duplicates a weaker teacher left); otherwise it adds, first deleting a shown entry that no
question needs when memory is full.
`weak_attributes` / `weak_update_p` make the teacher's mistakes belong to recognisable states: on a
revision of one of those attributes it modifies only with probability `weak_update_p` and otherwise adds
a stale duplicate, which the retrieval ties rank above the new value.
A weak teacher (p < 1) is on purpose: its most likely decision is then wrong somewhere, which leaves
reinforcement learning something to improve. `answer_top_hit` is for such a teacher: with
`unknown` for most questions an imitator learns to say `unknown` even when memory has the fact, while
"copy the top entry's value" is one skill a tiny model picks up fast and is right whenever the fact was stored.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from atommem.actions import Create, Delete, Read, Update, final_answer, render_action
from atommem.data.synthetic import UNKNOWN, fact_text
from atommem.errors import UserError
from atommem.policies.base import PolicyOutput, check_teacher_tokenizer, scripted_output

if TYPE_CHECKING:
    from atommem.env.memory_env import MemoryEnv


def _entry_words(retrieved_text: str) -> list[list[str]]:
    """Words of each entry's text in rendered `Memory {id}: {text}` lines, in rank order."""
    return [line.partition(": ")[2].split() for line in retrieved_text.splitlines()]


def _shown_entries(retrieved_text: str) -> list[tuple[int, list[str]]]:
    """(id, words of the text) of each rendered `Memory {id}: {text}` line, in rank order."""
    out = []
    for line in retrieved_text.splitlines():
        head, _, text = line.partition(": ")
        out.append((int(head.split()[-1]), text.split()))
    return out


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
        weak_attributes: tuple[str, ...] | list[str] = (),
        weak_update_p: float = 1.0,
    ):
        for name, p in (
            ("store_relevant_p", store_relevant_p),
            ("store_distractor_p", store_distractor_p),
            ("weak_update_p", weak_update_p),
        ):
            if not 0.0 <= p <= 1.0:
                raise UserError(f"OraclePolicy {name} must be in [0, 1], got {p}")
        check_teacher_tokenizer("OraclePolicy", tokenizer)
        self._tokenizer = tokenizer
        self._p_relevant = store_relevant_p
        self._p_distractor = store_distractor_p
        self._answer_top_hit = answer_top_hit
        self._weak_attributes = frozenset(weak_attributes)
        self._weak_update_p = weak_update_p
        self._rng = random.Random(rng_seed)
        self._decided: dict[tuple[str, str, str], bool] = {}
        self._question = -1
        self._hop = 0
        self._entity = ""

    async def act(self, env: "MemoryEnv") -> PolicyOutput:
        return scripted_output(self.respond(env), env, self._tokenizer)

    def respond(self, env: "MemoryEnv") -> str:
        """The response text for `env`'s current turn."""
        meta = env.sample.metadata
        if "chains" not in meta or "facts" not in meta:
            raise UserError(
                f"OraclePolicy plays synthetic samples only: sample {env.sample.id!r} has no facts/chains metadata"
            )
        obs = env.observation
        if obs.phase == "read" and "revisions" in meta:
            return self._revision_read_turn(env, meta)
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

    def _revision_read_turn(self, env: "MemoryEnv", meta: dict) -> str:
        obs = env.observation
        needed = {(c["entity"], c["path"][0]) for c in meta["chains"]}
        known = {tuple(f) for f in meta["facts"]} | {tuple(f) for f in meta.get("filler_facts", [])}
        words = obs.chunk_text.split()
        facts = [tuple(words[i : i + 3]) for i in range(len(words) - 3) if words[i + 3] == "."]
        facts = [f for f in facts if f in known]
        relevant = [f for f in facts if (f[0], f[1]) in needed]
        if relevant and obs.query != f"{relevant[0][0]} {relevant[0][1]}":
            return render_action(Read(f"{relevant[0][0]} {relevant[0][1]}"))
        actions = self._revision_write(relevant[0], env, needed) if relevant else []
        stored = {e.text for e in env.memory.entries()}
        room = (env.memory.max_entries or 1 << 30) - len(env.memory)
        room -= sum(isinstance(x, Create) for x in actions) - sum(isinstance(x, Delete) for x in actions)
        for fact in facts:
            if (fact[0], fact[1]) not in needed and room > 0 and fact_text(*fact) not in stored:
                if self._decide(fact, self._p_distractor):
                    actions.append(Create(fact_text(*fact)))
                    room -= 1
        return " ".join(render_action(x) for x in actions)

    def _revision_write(self, fact: tuple[str, str, str], env: "MemoryEnv", needed: set) -> list:
        """Actions for a needed fact, the query already on its key: update a shown copy, else add."""
        e, a, v = fact
        text = fact_text(e, a, v)
        shown = _shown_entries(env.observation.retrieved_text)
        copies = [(i, w) for i, w in shown if w[:2] == [e, a]]
        if copies:
            if copies[0][1] == [e, a, v]:
                return []
            if self._decide(fact, self._weak_update_p if a in self._weak_attributes else 1.0):
                return [Update(copies[0][0], text)] + [Delete(i) for i, _ in copies[1:]]
            return [] if env.memory.full else [Create(text)]  # the stale-duplicate mistake
        if not self._decide(fact, self._p_relevant):
            return []
        if env.memory.full:
            spare = [i for i, w in shown if tuple(w[:2]) not in needed]
            return [Delete(spare[-1]), Create(text)] if spare else []
        return [Create(text)]

    def _decide(self, fact: tuple[str, str, str], p: float) -> bool:
        """One seeded coin per fact and episode, so a chunk shown again gets the same decision."""
        if fact not in self._decided:
            self._decided[fact] = self._rng.random() < p
        return self._decided[fact]

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
            return final_answer(UNKNOWN)
        if self._hop + 1 < len(path):
            self._hop += 1
            self._entity = value
            return render_action(Read(f"{value} {path[self._hop]}"))
        return final_answer(value)


def _top_value(retrieved_text: str) -> str | None:
    """Last word of the top non-empty retrieved entry (the value of an `e a v` entry), or None."""
    return next((words[-1] for words in _entry_words(retrieved_text) if words), None)


