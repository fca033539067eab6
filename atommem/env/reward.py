"""Episode reward: SQuAD-normalised exact match / token F1 of each answer against its OWN question's golds.

Each prediction is scored only against the gold aliases of the question it answers (the reference
credited any gold answer of the sample to any question, which a policy can exploit by answering every
question with the same entity). Episode reward = mean EM over the questions minus
`format_penalty * num_format_errors`, floored at `REWARD_FLOOR` so a runaway error count cannot swamp the
group statistics of GRPO while failed episodes with fewer format errors still rank above those with more.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass

REWARD_FLOOR = -1.0  # lowest episode reward; mean EM lies in [0, 1]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lowercase, strip ASCII punctuation, drop articles a/an/the, collapse whitespace."""
    s = s.lower().translate(_PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(pred: str | None, golds: list[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold alias; None or empty scores 0."""
    p = normalize_answer(pred) if pred is not None else ""
    if not p:
        return 0.0
    return float(any(p == normalize_answer(g) for g in golds))


def _token_f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(pred: str | None, golds: list[str]) -> float:
    """Max over gold aliases of the SQuAD token F1; None or empty scores 0."""
    p = normalize_answer(pred).split() if pred is not None else []
    if not p:
        return 0.0
    return max((_token_f1(p, normalize_answer(g).split()) for g in golds), default=0.0)


@dataclass
class QuestionScore:
    em: float
    f1: float


def episode_reward(
    preds: list[str | None],
    golds: list[list[str]],
    num_format_errors: int = 0,
    format_penalty: float = 0.0,
) -> tuple[float, list[QuestionScore]]:
    """Score `preds[i]` against `golds[i]` only; reward = mean EM - penalty * errors, floored at REWARD_FLOOR."""
    if len(preds) != len(golds):
        raise ValueError(f"episode_reward: {len(preds)} predictions for {len(golds)} questions")
    if not golds:
        raise ValueError("episode_reward: an episode needs at least one question")
    if num_format_errors < 0 or format_penalty < 0:
        raise ValueError("episode_reward: num_format_errors and format_penalty must be >= 0")
    scores = [QuestionScore(exact_match(p, g), f1_score(p, g)) for p, g in zip(preds, golds)]
    mean_em = sum(s.em for s in scores) / len(scores)
    return max(REWARD_FLOOR, mean_em - format_penalty * num_format_errors), scores
