"""Evaluation metrics over played episodes: EM/F1 by dataset and context length, action rates, paired bootstrap.

Pure Python (numpy for the bootstrap). Every played episode is scored (the reference scored one sample
per batch). An `EpisodeScore` is one episode's per-question results; `summarize` aggregates them.
EM and F1 are question-weighted means (an episode with 5 questions counts 5 times). Action rates are
operations per turn: total count of a kind over all episodes divided by the total number of turns;
per turn state too (`state_action_rates`: the env's turn labels, e.g. revision / relevant / distractor /
answer on the revisions task, or just the phase), so a change of behaviour shows where it happened.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from atommem.actions import ACTION_KINDS

RATE_KINDS = (*ACTION_KINDS, "error")  # "error": malformed/impossible actions, parse errors included


@dataclass
class EpisodeScore:
    sample_id: str
    source: str
    context_tokens: int
    correct: list[bool]  # per question, exact match
    f1: list[float]  # per question
    num_turns: int
    action_counts: dict[str, int]  # totals of the episode: ACTION_KINDS + "error"
    answers: list[str] = field(default_factory=list)  # per question ("" = unanswered)
    judged: list[bool | None] = field(default_factory=list)  # LLM judge verdict per question (None = judge failed)
    state_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # per turn state: {"turns": n, kind: count}

    @classmethod
    def of(cls, played: Any, sample_id: str | None = None) -> "EpisodeScore":
        """From anything with the episode fields: a `Trajectory`, a `TrajectorySummary` or an `EpisodeResult`
        (the latter needs `sample_id` and has no source; pass them via a Trajectory when you can)."""
        sid = sample_id if sample_id is not None else getattr(played, "sample_id", None) or getattr(played, "uid")
        return cls(
            sample_id=str(sid),
            source=getattr(played, "source", "") or "unknown",
            context_tokens=int(played.context_tokens),
            correct=[bool(c) for c in played.correct],
            f1=[float(x) for x in played.f1],
            num_turns=int(played.num_turns),
            action_counts={k: int(played.action_counts.get(k, 0)) for k in RATE_KINDS},
            answers=list(getattr(played, "answers", []) or []),
            state_counts={k: dict(v) for k, v in (getattr(played, "state_counts", None) or {}).items()},
        )

    def to_dict(self) -> dict:
        return {
            "sample_id": self.sample_id,
            "source": self.source,
            "context_tokens": self.context_tokens,
            "correct": list(self.correct),
            "f1": list(self.f1),
            "num_turns": self.num_turns,
            "action_counts": dict(self.action_counts),
            "answers": list(self.answers),
            "judged": list(self.judged),
            "state_counts": {k: dict(v) for k, v in self.state_counts.items()},
        }


def bucket_labels(edges: Sequence[int]) -> list[str]:
    """Labels of the buckets cut by ascending `edges`: "<e0", "e0-e1", ..., ">=eN"."""
    edges = list(edges)
    if any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"eval.length_buckets must be strictly ascending, got {edges}")
    if not edges:
        return ["all"]
    return [f"<{edges[0]}"] + [f"{a}-{b}" for a, b in zip(edges, edges[1:])] + [f">={edges[-1]}"]


def length_bucket(tokens: int, edges: Sequence[int]) -> str:
    """The bucket label of a context of `tokens` tokens (edge values belong to the upper bucket)."""
    labels = bucket_labels(edges)
    for i, edge in enumerate(edges):
        if tokens < edge:
            return labels[i]
    return labels[-1]


def _qa(episodes: Sequence[EpisodeScore]) -> dict:
    correct = [c for e in episodes for c in e.correct]
    f1 = [x for e in episodes for x in e.f1]
    n = len(correct)
    out = {
        "episodes": len(episodes),
        "questions": n,
        "em": sum(correct) / n if n else math.nan,
        "f1": sum(f1) / n if n else math.nan,
    }
    judged = [j for e in episodes for j in e.judged]
    if judged:
        ok = [j for j in judged if j is not None]
        out["judge_acc"] = sum(ok) / len(ok) if ok else math.nan
        out["judge_failures"] = len(judged) - len(ok)
    return out


def action_rates(episodes: Sequence[EpisodeScore]) -> dict[str, float]:
    """Operations per turn by kind (and "error"), over all turns of all episodes."""
    turns = sum(e.num_turns for e in episodes)
    return {k: (sum(e.action_counts.get(k, 0) for e in episodes) / turns if turns else math.nan) for k in RATE_KINDS}


def state_action_rates(episodes: Sequence[EpisodeScore]) -> dict[str, dict[str, float]]:
    """Per turn state: its turns ("turns") and operations per turn of that state by kind (and "error")."""
    totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for e in episodes:
        for state, counts in e.state_counts.items():
            for k, v in counts.items():
                totals[state][k] += v
    return {
        state: {"turns": c["turns"], **{k: c[k] / c["turns"] if c["turns"] else math.nan for k in RATE_KINDS}}
        for state, c in sorted(totals.items())
    }


def summarize(episodes: Sequence[EpisodeScore], length_buckets: Sequence[int]) -> dict:
    """Overall EM/F1, per source dataset, per context-length bucket, mean turns and action rates."""
    by_source: dict[str, list[EpisodeScore]] = defaultdict(list)
    by_length: dict[str, list[EpisodeScore]] = defaultdict(list)
    for e in episodes:
        by_source[e.source].append(e)
        by_length[length_bucket(e.context_tokens, length_buckets)].append(e)
    turns = [e.num_turns for e in episodes]
    return {
        **_qa(episodes),
        "mean_turns": sum(turns) / len(turns) if turns else math.nan,
        "mean_context_tokens": sum(e.context_tokens for e in episodes) / len(episodes) if episodes else math.nan,
        "action_rates": action_rates(episodes),
        "state_action_rates": state_action_rates(episodes),
        "by_source": {s: _qa(by_source[s]) for s in sorted(by_source)},
        # every bucket in order, empty ones included, so tables and plots line up across policies
        "by_length": {b: _qa(by_length.get(b, [])) for b in bucket_labels(length_buckets)},
    }


def correct_by_episode(episodes: Iterable[EpisodeScore]) -> dict[str, list[bool]]:
    """Per sample id, its questions' correctness (k samples of one sample are concatenated in play order)."""
    out: dict[str, list[bool]] = {}
    for e in episodes:
        out.setdefault(e.sample_id, []).extend(e.correct)
    return out


def paired_bootstrap_diff(
    a_correct_by_episode: Sequence[Sequence[bool]] | dict[str, Sequence[bool]],
    b_correct_by_episode: Sequence[Sequence[bool]] | dict[str, Sequence[bool]],
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """EM(a) - EM(b) over the same episodes and its percentile bootstrap interval, resampling EPISODES.

    An episode's questions share one memory, so they are not independent: resampling by episode keeps
    them together. Inputs are aligned lists (or dicts keyed by sample id) of per-episode question
    correctness; each resample takes the question-weighted mean of the drawn episodes.
    """
    if isinstance(a_correct_by_episode, dict) or isinstance(b_correct_by_episode, dict):
        if not (isinstance(a_correct_by_episode, dict) and isinstance(b_correct_by_episode, dict)):
            raise ValueError("paired_bootstrap_diff: pass two dicts keyed by episode, or two aligned lists")
        if set(a_correct_by_episode) != set(b_correct_by_episode):
            missing = sorted(set(a_correct_by_episode) ^ set(b_correct_by_episode))[:3]
            raise ValueError(f"paired_bootstrap_diff: the two runs played different episodes (e.g. {missing})")
        keys = sorted(a_correct_by_episode)
        a_eps = [a_correct_by_episode[k] for k in keys]
        b_eps = [b_correct_by_episode[k] for k in keys]
    else:
        a_eps, b_eps = list(a_correct_by_episode), list(b_correct_by_episode)
    if len(a_eps) != len(b_eps):
        raise ValueError(f"paired_bootstrap_diff: {len(a_eps)} episodes against {len(b_eps)}; pair the same episodes")
    if not a_eps:
        raise ValueError("paired_bootstrap_diff: no episodes")
    for i, (a, b) in enumerate(zip(a_eps, b_eps)):
        if len(a) != len(b):
            raise ValueError(f"paired_bootstrap_diff: episode {i} has {len(a)} questions in a and {len(b)} in b")
    n_questions = np.array([len(a) for a in a_eps], dtype=np.float64)
    if n_questions.sum() == 0:
        raise ValueError("paired_bootstrap_diff: the episodes hold no questions")
    # per episode: sum over its questions of (a correct - b correct)
    delta = np.array([sum(map(bool, a)) - sum(map(bool, b)) for a, b in zip(a_eps, b_eps)], dtype=np.float64)
    diff = float(delta.sum() / n_questions.sum())
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(a_eps), size=(n_boot, len(a_eps)))
    qs = n_questions[draws].sum(axis=1)
    boot = delta[draws].sum(axis=1) / np.where(qs > 0, qs, 1.0)
    alpha = (1.0 - confidence) / 2
    lo, hi = np.quantile(boot, [alpha, 1.0 - alpha])
    return diff, float(lo), float(hi)
