"""`MemoryEnv`: one AtomMem episode as a gymnasium environment with text observations.

Reading phase: one turn per chunk-step. The chunk advances after a turn that writes (create, update,
delete, scratchpad) or has no valid action; a read-only turn (only update_query) keeps the chunk, at
most `max_read_only_turns` in a row (one more read-only turn advances anyway). Answer phase: the
questions are posed one at a time in order; the agent may query (at most `max_read_only_turns` in a
row) and must give final_answer within `max_answer_steps` turns, else the question stays unanswered.
The persistent query is cleared when the answer phase starts and whenever a new question is posed, so
each question starts from an empty retrieval. Malformed or impossible actions are no-ops, reported in
the next prompt and counted as "error", as is a tag outside `env.action_set` (overwrite: MemAgent's, only
`update_memory` and `final_answer`). With `strict_format` a response with any format error (text
outside tags, a broken tag, a cut-off generation) has no effect at all. With `memory.max_entries`, an add
into a full store is such a no-op too ("memory is full"), so the agent must modify or delete to make room. The reward (mean exact match minus the format penalty per turn
with an error) arrives on the terminating step only.

Every turn has a state label for per-state metrics (`turn_state`): "answer" in the answer phase; while
reading, the state the sample's `metadata["turn_states"]` gives the current chunk (the first of its
`markers`, [text, state] pairs, whose text is in the chunk, else its `default`), or "read" for samples
without labels. The episode result counts turns and actions per state.

The step logic is written once as a generator that yields its embedding requests: `step` serves them
with `embedder.embed`, `astep` with `BatchingEmbedder.aembed` so that concurrent envs share one batch.
The rollout system drives the env token-in/token-out through `prompt_ids`; the gymnasium observation is
a plain-text view of the same messages.
"""

from __future__ import annotations

import asyncio
import string
from dataclasses import asdict, dataclass
from typing import Any, Generator

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from atommem.actions import ACTION_KINDS, ACTION_SETS, Answer, Create, Delete, Read, Scratchpad, Update, action_kind, parse_actions, tag_of
from atommem.config import EmbedderConfig, EnvConfig, MemoryConfig, from_dict
from atommem.data.schema import Sample
from atommem.errors import DataError
from atommem.env.chunking import chunk_documents
from atommem.env.observation import Observation
from atommem.env.prompts import render_messages, render_text
from atommem.env.reward import episode_reward
from atommem.memory.store import MemoryEntry, MemoryStore

_WRITES = (Create, Update, Delete, Scratchpad)
# gymnasium Text spaces need bounds (sample() draws lengths up to them): far above a prompt, and
# above a 4096-token response; nothing enforces them.
_MAX_OBS_CHARS = 1 << 22
_MAX_ACTION_CHARS = 1 << 16
_CHARSET = frozenset(string.printable)  # `contains` holds for ASCII text; documents may hold more


@dataclass
class StepInfo:
    action_counts: dict[str, int]  # per kind this turn + "error"
    errors: list[str]
    phase: str  # phase after the step
    advanced: bool  # the chunk or the posed question changed
    state: str  # the turn's state label (see `MemoryEnv.turn_state`), taken before the step


@dataclass
class EpisodeResult:
    reward: float
    correct: list[bool]
    f1: list[float]
    answers: list[str]  # "" when unanswered
    action_counts: dict[str, int]  # totals over the episode, all ACTION_KINDS + "error"
    num_turns: int
    num_errors: int
    context_tokens: int
    memory: list[MemoryEntry]
    scratchpad: str
    errors_per_turn: list[list[str]]
    state_counts: dict[str, dict[str, int]]  # state label -> {"turns": n, each action kind and "error": count}


@dataclass
class EmbedRequest:
    texts: list[str]
    query: bool  # retrieval query (some embedders prefix an instruction) or memory text


@dataclass
class _TurnOutcome:
    reward: float
    terminated: bool
    info: StepInfo


def _zero_counts() -> dict[str, int]:
    return {k: 0 for k in (*ACTION_KINDS, "error")}


class MemoryEnv(gym.Env):
    """One AtomMem episode as a gymnasium environment: text observations, a model response as the action.

    The module docstring (atommem/env/memory_env.py) gives the phases, turn caps and error rules. The rollout
    system drives it token-in/token-out through `prompt_ids`.

    Args:
        env_cfg: the `env` config section (chunking, caps, prompt style, action set).
        memory_cfg: the `memory` config section of each episode's `MemoryStore`.
        embedder: embeds entries and queries (`embedder.embed(texts, query=...)`, `.dim`).
        tokenizer: the policy's tokenizer, for chunking and token budgets (whitespace tokens when None).
        sample: the sample `reset` plays when given none.
        samples: a pool `reset` draws from (with its seeded RNG) when given no sample.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        env_cfg: EnvConfig,
        memory_cfg: MemoryConfig,
        embedder: Any,
        tokenizer: Any = None,
        sample: Sample | None = None,
        samples: list[Sample] | None = None,  # pool that reset() draws from when given no sample
    ):
        self._cfg = env_cfg
        self._mem_cfg = memory_cfg
        self._embedder = embedder
        self._batching: Any = None
        self._tokenizer = tokenizer
        self._default_sample = sample
        self._pool = list(samples) if samples else []
        self.observation_space = spaces.Text(max_length=_MAX_OBS_CHARS, min_length=0, charset=_CHARSET)
        self.action_space = spaces.Text(max_length=_MAX_ACTION_CHARS, min_length=0, charset=_CHARSET)
        self._sample: Sample | None = None
        self._phase = "done"

    # ----------------------------------------------------------------- episode setup
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        """Start an episode on `options["sample"]` (or the constructor's sample, or one drawn from the pool):
        a fresh memory store, the context chunked. Returns the first observation and `{phase, num_chunks}`."""
        super().reset(seed=seed)
        sample = (options or {}).get("sample")
        if sample is None and self._pool:
            sample = self._pool[int(self.np_random.integers(len(self._pool)))]
        if sample is None:
            sample = self._default_sample
        if sample is None:
            raise ValueError("MemoryEnv.reset needs a sample: pass options={'sample': ...} or construct with one")
        if not sample.questions:
            raise DataError(f"sample {sample.id!r} has no questions; an episode needs at least one")
        cfg = self._cfg
        self._sample = sample
        chunking = chunk_documents(
            sample.documents, cfg.chunk_tokens, cfg.chunk_overlap, cfg.max_chunks, tokenizer=self._tokenizer, by=cfg.chunk_by
        )
        self._chunks = chunking.chunks
        self._context_tokens = chunking.context_tokens
        tok = self._tokenizer
        count_tokens = (lambda s: len(tok.encode(s, add_special_tokens=False))) if tok is not None else None
        self._store = MemoryStore(
            dim=self._embedder.dim,
            top_k=self._mem_cfg.top_k,
            render_budget_tokens=self._mem_cfg.render_budget_tokens,
            count_tokens=count_tokens,
            max_entries=self._mem_cfg.max_entries,
            tie_margin=self._mem_cfg.tie_margin,
            min_score=self._mem_cfg.min_score,
        )
        self._max_read_steps = (
            cfg.max_read_steps if cfg.max_read_steps is not None else len(self._chunks) * (cfg.max_read_only_turns + 1)
        )
        self._chunk_index = 0
        self._question_index = -1
        self._read_steps = 0
        self._answer_steps = 0
        self._streak = 0
        self._query = ""
        self._query_emb: np.ndarray | None = None
        self._retrieved: list[MemoryEntry] = []
        self._retrieved_text = ""
        self._last_errors: list[str] = []
        self._answers: list[str | None] = [None] * len(sample.questions)
        self._totals = _zero_counts()
        self._errors_per_turn: list[list[str]] = []
        self._state_counts: dict[str, dict[str, int]] = {}
        self._error_turns = 0
        self._phase = "read"
        if not self._chunks or self._max_read_steps <= 0:
            self._start_answer_phase()
        self._invalidate()
        return self._obs_text(), {"phase": self._phase, "num_chunks": len(self._chunks)}

    # ----------------------------------------------------------------- stepping
    def step(self, action: str, *, complete: bool = True) -> tuple[str, float, bool, bool, dict]:
        """Apply one model response (`complete=False`: it was cut off at max_tokens). Returns gymnasium's
        (observation, reward, terminated, truncated, info); the reward arrives on the terminating step."""
        gen = self._turn(action, complete)
        try:
            requests = next(gen)
            while True:
                requests = gen.send([self._embedder.embed(r.texts, query=r.query) for r in requests])
        except StopIteration as stop:
            return self._finish(stop.value)

    async def astep(
        self, action: str, *, complete: bool = True, embedder: Any = None
    ) -> tuple[str, float, bool, bool, dict]:
        """Like `step`; embeddings go through `embedder.aembed` (a BatchingEmbedder shared by many envs)."""
        if embedder is None:
            embedder = self._own_batching_embedder()
        gen = self._turn(action, complete)
        try:
            requests = next(gen)
            while True:
                rows = await asyncio.gather(*(embedder.aembed(r.texts, query=r.query) for r in requests))
                requests = gen.send(list(rows))
        except StopIteration as stop:
            return self._finish(stop.value)

    def _own_batching_embedder(self) -> Any:
        if hasattr(self._embedder, "aembed"):
            return self._embedder
        if self._batching is None:
            from atommem.memory.embedders import BatchingEmbedder

            self._batching = BatchingEmbedder(self._embedder)
        return self._batching

    def _finish(self, outcome: _TurnOutcome) -> tuple[str, float, bool, bool, dict]:
        self._invalidate()
        return self._obs_text(), outcome.reward, outcome.terminated, False, asdict(outcome.info)

    def _turn(self, text: str, complete: bool) -> Generator[list[EmbedRequest], list[np.ndarray], _TurnOutcome]:
        if self._phase == "done":
            raise RuntimeError("MemoryEnv.step called after the episode ended; call reset() first")
        cfg = self._cfg
        state = self.turn_state
        parsed = parse_actions(text, strict=cfg.strict_format)
        errors = [f"{e.kind}: {e.message}" for e in parsed.errors]
        if cfg.strict_format and not complete and not any(e.kind == "truncated" for e in parsed.errors):
            errors.append("truncated: the response hit the token limit before ending")
        actions = [] if cfg.strict_format and errors else list(parsed.actions)

        answering = self._phase == "answer"
        allowed = ACTION_SETS[cfg.action_set]
        valid = []
        for a in actions:
            if action_kind(a) not in allowed:
                errors.append(f"{tag_of(a)}: not in this action set (env.action_set: {cfg.action_set}; ignored)")
            elif isinstance(a, Answer) and not answering:
                errors.append("final_answer: no question is posed while reading (ignored)")
            elif isinstance(a, Answer) and a.answer is None:
                continue  # the parser already reported no_boxed
            else:
                valid.append(a)
        if answering and valid and all(isinstance(a, Read) for a in valid) and self._streak >= cfg.max_read_only_turns:
            errors.append(f"update_query: at most {cfg.max_read_only_turns} queries in a row; give final_answer")
            valid = []

        write_texts = [a.text for a in valid if isinstance(a, (Create, Update))]
        reads = [a for a in valid if isinstance(a, Read)]
        new_query = reads[-1].query if reads else None
        requests = []
        if write_texts:
            requests.append(EmbedRequest(write_texts, query=False))
        if new_query is not None and new_query != self._query:
            requests.append(EmbedRequest([new_query], query=True))
        rows = (yield requests) if requests else []
        write_rows = iter(rows[0]) if write_texts else iter(())
        if new_query is not None and new_query != self._query:
            self._query, self._query_emb = new_query, np.asarray(rows[-1][0])

        counts = _zero_counts()
        wrote = False
        answer: str | None = None
        store = self._store
        for a in valid:
            if isinstance(a, Create):
                embedding = next(write_rows)
                if store.full:
                    errors.append(f"add_memory: memory is full ({store.max_entries} entries); modify or delete one first (ignored)")
                    continue
                store.add(a.text, embedding)
                counts["create"] += 1
                wrote = True
            elif isinstance(a, Update):
                if store.modify(a.id, a.text, next(write_rows)):
                    counts["update"] += 1
                    wrote = True
                else:
                    errors.append(f"modify_memory: there is no Memory {a.id} (ignored)")
            elif isinstance(a, Delete):
                if store.delete(a.id):
                    counts["delete"] += 1
                    wrote = True
                else:
                    errors.append(f"delete_memory: there is no Memory {a.id} (ignored)")
            elif isinstance(a, Scratchpad):
                store.scratchpad = a.text
                counts["scratchpad"] += 1
                wrote = True
            elif isinstance(a, Read):
                counts["read"] += 1
            elif isinstance(a, Answer):
                if answer is None:
                    answer = a.answer
                    counts["answer"] += 1
                else:
                    errors.append("final_answer: only the first answer of a turn counts (extra ignored)")
        queried = bool(reads)
        counts["error"] = len(errors)

        advanced = self._advance_reading(wrote, queried) if not answering else self._advance_answering(answer, wrote, queried)
        self._refresh_retrieval()

        self._last_errors = errors
        self._errors_per_turn.append(errors)
        self._error_turns += bool(errors)
        for k, v in counts.items():
            self._totals[k] += v
        per_state = self._state_counts.setdefault(state, {"turns": 0, **_zero_counts()})
        per_state["turns"] += 1
        for k, v in counts.items():
            per_state[k] += v
        reward = 0.0
        terminated = self._phase == "done"
        if terminated:
            reward = self.result().reward
        return _TurnOutcome(reward, terminated, StepInfo(counts, errors, self._phase, advanced, state))

    def _advance_reading(self, wrote: bool, queried: bool) -> bool:
        self._read_steps += 1
        advance = True
        if queried and not wrote:
            self._streak += 1
            advance = self._streak > self._cfg.max_read_only_turns
        if advance:
            self._streak = 0
            self._chunk_index += 1
        if self._chunk_index >= len(self._chunks) or self._read_steps >= self._max_read_steps:
            self._start_answer_phase()
            return True
        return advance

    def _advance_answering(self, answer: str | None, wrote: bool, queried: bool) -> bool:
        self._answer_steps += 1
        self._streak = self._streak + 1 if queried and not wrote and answer is None else 0
        if answer is None and self._answer_steps < self._cfg.max_answer_steps:
            return False
        self._answers[self._question_index] = answer
        self._pose_question(self._question_index + 1)
        return True

    def _start_answer_phase(self) -> None:
        self._phase = "answer"
        self._chunk_index = len(self._chunks)
        self._pose_question(0)

    def _pose_question(self, index: int) -> None:
        self._streak = 0
        self._answer_steps = 0
        self._query, self._query_emb = "", None
        if index >= len(self._sample.questions):
            self._phase = "done"
            self._question_index = len(self._sample.questions) - 1
        else:
            self._question_index = index

    def _refresh_retrieval(self) -> None:
        if self._query_emb is None or len(self._store) == 0:
            self._retrieved, self._retrieved_text = [], ""
            return
        self._retrieved = [entry for entry, _ in self._store.search(self._query_emb, self._mem_cfg.top_k)]
        self._retrieved_text = self._store.render(self._retrieved)

    # ----------------------------------------------------------------- views
    def _invalidate(self) -> None:
        self._obs_cache: Observation | None = None
        self._messages_cache: list[dict] | None = None
        self._ids_cache: tuple[int, list[int]] | None = None

    @property
    def observation(self) -> Observation:
        if self._obs_cache is None:
            reading = self._phase == "read"
            self._obs_cache = Observation(
                phase=self._phase,
                questions=[q.question for q in self._sample.questions],
                question_index=-1 if reading else self._question_index,
                chunk_index=self._chunk_index,
                num_chunks=len(self._chunks),
                chunk_text=self._chunks[self._chunk_index] if reading else "",
                scratchpad=self._store.scratchpad,
                query=self._query,
                retrieved=list(self._retrieved),
                retrieved_text=self._retrieved_text,
                errors=list(self._last_errors),
                read_only_streak=self._streak,
            )
        return self._obs_cache

    def prompt_messages(self) -> list[dict]:
        if self._messages_cache is None:
            self._messages_cache = render_messages(
                self.observation,
                self._cfg.prompt_style,
                max_read_only_turns=self._cfg.max_read_only_turns,
                show_questions=self._cfg.show_questions_while_reading,
                strict=self._cfg.strict_format,
                action_set=self._cfg.action_set,
            )
        return [dict(m) for m in self._messages_cache]

    def prompt_ids(self, tokenizer: Any) -> list[int]:
        """Chat-templated prompt ids of this turn, templated once per turn (cached)."""
        if self._ids_cache is None or self._ids_cache[0] != id(tokenizer):
            ids = tokenizer.apply_chat_template(
                self.prompt_messages(), add_generation_prompt=True, tokenize=True, return_dict=False
            )
            self._ids_cache = (id(tokenizer), list(ids))
        return list(self._ids_cache[1])

    def _obs_text(self) -> str:
        return render_text(self.prompt_messages())

    @property
    def turn_state(self) -> str:
        """State label of the current turn: "answer", "done", or while reading the chunk's labelled state
        (`metadata["turn_states"]`) or "read"."""
        if self._phase != "read":
            return self._phase
        labels = self.sample.metadata.get("turn_states")
        if not labels:
            return "read"
        chunk = f" {' '.join(self._chunks[self._chunk_index].split())} "  # whole words, any whitespace
        return next((state for text, state in labels["markers"] if f" {' '.join(text.split())} " in chunk), labels["default"])

    @property
    def memory(self) -> MemoryStore:
        return self._store

    @property
    def sample(self) -> Sample:
        if self._sample is None:
            raise RuntimeError("MemoryEnv has no episode yet; call reset() first")
        return self._sample

    @property
    def done(self) -> bool:
        return self._phase == "done"

    @property
    def phase(self) -> str:
        return self._phase

    @property
    def context_tokens(self) -> int:
        return self._context_tokens

    def result(self) -> EpisodeResult:
        """Scores of the episode so far (unanswered questions score 0)."""
        golds = [q.answers for q in self.sample.questions]
        reward, scores = episode_reward(
            self._answers, golds, num_format_errors=self._error_turns, format_penalty=self._cfg.format_penalty
        )
        return EpisodeResult(
            reward=reward,
            correct=[s.em == 1.0 for s in scores],
            f1=[s.f1 for s in scores],
            answers=[a if a is not None else "" for a in self._answers],
            action_counts=dict(self._totals),
            num_turns=len(self._errors_per_turn),
            num_errors=self._totals["error"],
            context_tokens=self._context_tokens,
            memory=self._store.entries(),
            scratchpad=self._store.scratchpad,
            errors_per_turn=[list(e) for e in self._errors_per_turn],
            state_counts={k: dict(v) for k, v in self._state_counts.items()},
        )


# --------------------------------------------------------------------- RLlib registration
def make_env(env_config: dict) -> MemoryEnv:
    """Build a MemoryEnv from a plain dict (RLlib's env_config).

    Keys: "env", "memory", "embedder": dicts for EnvConfig / MemoryConfig / EmbedderConfig (defaults when
    absent); "samples": a list of Sample rows (dicts) or a data path readable by `read_samples`;
    "tokenizer": optional HF tokenizer directory.
    """
    from atommem.data.schema import read_samples
    from atommem.memory.embedders import make_embedder

    known = {"env", "memory", "embedder", "samples", "tokenizer"}
    unknown = sorted(set(env_config) - known)
    if unknown:
        raise ValueError(f"unknown MemoryEnv env_config key {unknown[0]!r} (valid: {', '.join(sorted(known))})")
    env_cfg = from_dict(EnvConfig, dict(env_config.get("env") or {}), prefix="env")
    mem_cfg = from_dict(MemoryConfig, dict(env_config.get("memory") or {}), prefix="memory")
    emb_cfg = from_dict(EmbedderConfig, dict(env_config.get("embedder") or {}), prefix="embedder")
    raw = env_config.get("samples")
    if isinstance(raw, (list, tuple)):
        samples = [s if isinstance(s, Sample) else Sample.from_row(s, where=f"env_config samples[{i}]") for i, s in enumerate(raw)]
    elif raw is not None:
        samples = read_samples(raw)
    else:
        samples = []
    tokenizer = None
    if env_config.get("tokenizer"):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(env_config["tokenizer"])
    return MemoryEnv(env_cfg, mem_cfg, make_embedder(emb_cfg), tokenizer=tokenizer, samples=samples)


def register_rllib_env(name: str = "atommem/MemoryEnv") -> str:
    """Register `make_env` under `name` with Ray Tune's env registry (used by RLlib); returns the name."""
    from ray.tune.registry import register_env

    register_env(name, make_env)
    return name
