import math

import numpy as np
import pytest

from atommem.eval.scores import (
    EpisodeScore,
    action_rates,
    bucket_labels,
    correct_by_episode,
    length_bucket,
    paired_bootstrap_diff,
    summarize,
)


def ep(sid, source, tokens, correct, f1=None, turns=4, counts=None):
    return EpisodeScore(
        sample_id=sid,
        source=source,
        context_tokens=tokens,
        correct=list(correct),
        f1=list(f1 if f1 is not None else [float(c) for c in correct]),
        num_turns=turns,
        action_counts=counts or {},
    )


def test_bucket_labels_and_edges():
    assert bucket_labels([1000, 4000]) == ["<1000", "1000-4000", ">=4000"]
    assert length_bucket(999, [1000, 4000]) == "<1000"
    assert length_bucket(1000, [1000, 4000]) == "1000-4000"
    assert length_bucket(4000, [1000, 4000]) == ">=4000"
    with pytest.raises(ValueError, match="ascending"):
        bucket_labels([4000, 1000])


def test_summarize_em_f1_by_source_and_length_question_weighted():
    eps = [
        ep("a", "hotpotqa", 500, [True, False, True], f1=[1.0, 0.5, 1.0]),
        ep("b", "hotpotqa", 2000, [False]),
        ep("c", "musique", 5000, [True, True]),
    ]
    s = summarize(eps, [1000, 4000])
    assert s["questions"] == 6 and s["episodes"] == 3
    assert s["em"] == pytest.approx(4 / 6)
    assert s["f1"] == pytest.approx((2.5 + 0 + 2) / 6)
    assert s["by_source"]["hotpotqa"]["em"] == pytest.approx(2 / 4)
    assert s["by_source"]["musique"]["em"] == 1.0
    assert list(s["by_length"]) == ["<1000", "1000-4000", ">=4000"]
    assert s["by_length"]["<1000"]["em"] == pytest.approx(2 / 3)
    assert s["by_length"]["1000-4000"]["em"] == 0.0
    assert s["by_length"][">=4000"]["questions"] == 2


def test_empty_bucket_is_present_and_nan():
    s = summarize([ep("a", "synthetic", 10, [True])], [1000, 4000])
    assert s["by_length"]["1000-4000"]["questions"] == 0
    assert math.isnan(s["by_length"]["1000-4000"]["em"])


def test_action_rates_are_ops_per_turn_over_all_turns():
    eps = [
        ep("a", "s", 1, [True], turns=4, counts={"create": 6, "read": 2, "answer": 1, "error": 1}),
        ep("b", "s", 1, [True], turns=6, counts={"create": 4, "update": 1, "answer": 1}),
    ]
    rates = action_rates(eps)
    assert rates["create"] == pytest.approx(1.0)
    assert rates["read"] == pytest.approx(0.2)
    assert rates["update"] == pytest.approx(0.1)
    assert rates["answer"] == pytest.approx(0.2)
    assert rates["error"] == pytest.approx(0.1)
    assert rates["delete"] == 0.0 and rates["scratchpad"] == 0.0
    assert summarize(eps, [10])["mean_turns"] == 5.0


def test_episode_score_of_trajectory_like():
    from atommem.trajectory import Trajectory

    t = Trajectory(
        uid="u", group_index=0, sample_id="s1", source="2wiki", turns=[], reward=0.5,
        correct=[True, False], f1=[1.0, 0.2], answers=["x", ""], action_counts={"create": 3}, context_tokens=77,
    )
    e = EpisodeScore.of(t)
    assert (e.sample_id, e.source, e.context_tokens, e.correct, e.answers) == ("s1", "2wiki", 77, [True, False], ["x", ""])
    assert e.action_counts["create"] == 3 and e.action_counts["error"] == 0


def test_correct_by_episode_groups_k_samples():
    eps = [ep("a", "s", 1, [True]), ep("b", "s", 1, [False, True]), ep("a", "s", 1, [False])]
    assert correct_by_episode(eps) == {"a": [True, False], "b": [False, True]}


def test_bootstrap_diff_value_and_interval():
    rng = np.random.default_rng(1)
    a = [[bool(x) for x in rng.random(3) < 0.7] for _ in range(200)]
    b = [[bool(x) for x in rng.random(3) < 0.4] for _ in range(200)]
    diff, lo, hi = paired_bootstrap_diff(a, b, n_boot=1000, seed=0)
    exact = (sum(map(sum, a)) - sum(map(sum, b))) / 600
    assert diff == pytest.approx(exact)
    assert lo < diff < hi
    assert lo > 0.15 and hi < 0.45  # 0.3 true difference, ~600 questions
    # deterministic for a seed
    assert paired_bootstrap_diff(a, b, n_boot=1000, seed=0) == (diff, lo, hi)


def test_bootstrap_resamples_by_episode_not_question():
    # a wins whole episodes: 10 episodes of 10 perfectly correlated questions. Resampling by episode
    # sees 10 units, so the interval is much wider than a question-level bootstrap of 100 units would be.
    a = [[i % 2 == 0] * 10 for i in range(10)]
    b = [[False] * 10 for _ in range(10)]
    diff, lo, hi = paired_bootstrap_diff(a, b, n_boot=2000, seed=0)
    assert diff == pytest.approx(0.5)
    assert hi - lo > 0.45  # question-level resampling would give ~0.2


def test_bootstrap_identical_runs_zero_width():
    a = [[True, False], [True]]
    assert paired_bootstrap_diff(a, a) == (0.0, 0.0, 0.0)


def test_bootstrap_dicts_and_mismatches():
    d, lo, hi = paired_bootstrap_diff({"x": [True], "y": [False]}, {"y": [False], "x": [False]}, n_boot=200)
    assert d == 0.5 and lo <= d <= hi
    with pytest.raises(ValueError, match="different episodes"):
        paired_bootstrap_diff({"x": [True]}, {"z": [True]})
    with pytest.raises(ValueError, match="questions"):
        paired_bootstrap_diff([[True, True]], [[True]])
    with pytest.raises(ValueError, match="episodes"):
        paired_bootstrap_diff([[True]], [[True], [False]])


def test_state_action_rates_are_ops_per_turn_of_each_state():
    a = ep("a", "s", 1, [True])
    a.state_counts = {"revision": {"turns": 2, "update": 1, "create": 1}, "answer": {"turns": 2, "read": 1, "answer": 1}}
    b = ep("b", "s", 1, [False])
    b.state_counts = {"revision": {"turns": 2, "create": 2}, "distractor": {"turns": 4, "create": 1, "error": 1}}
    rates = summarize([a, b, ep("c", "s", 1, [True])], [10])["state_action_rates"]
    assert list(rates) == ["answer", "distractor", "revision"]  # an episode without labels adds nothing
    assert rates["revision"]["turns"] == 4
    assert rates["revision"]["update"] == pytest.approx(0.25) and rates["revision"]["create"] == pytest.approx(0.75)
    assert rates["distractor"]["create"] == pytest.approx(0.25) and rates["distractor"]["error"] == pytest.approx(0.25)
    assert rates["answer"]["delete"] == 0.0
