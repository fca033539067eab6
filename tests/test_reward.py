import pytest

from atommem.env.reward import REWARD_FLOOR, QuestionScore, episode_reward, exact_match, f1_score, normalize_answer


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("  an   apple, a pear  ", "apple pear"),
        ("Theatre", "theatre"),  # articles only as whole words
        ("U.S.A.", "usa"),
        ("Ann-Marie's", "annmaries"),
        ("", ""),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_exact_match_any_alias_of_own_question():
    assert exact_match("the United States", ["USA", "United States"]) == 1.0
    assert exact_match("United States of America", ["USA", "United States"]) == 0.0
    assert exact_match(None, ["x"]) == 0.0
    assert exact_match("", ["x"]) == 0.0
    # an answer that normalises to nothing is no answer, even against a gold that also does
    assert exact_match("the", ["a"]) == 0.0


def test_f1_hand_computed():
    # pred tokens [barack, obama, jr], gold [barack, obama]: p=2/3, r=1, f1=0.8
    assert f1_score("Barack Obama Jr.", ["Barack Obama"]) == pytest.approx(0.8)
    # max over aliases: second alias matches exactly
    assert f1_score("Obama", ["Barack Obama", "Obama"]) == pytest.approx(1.0)
    # repeated tokens are counted with multiplicity: pred [a1, a1], gold [a1]: p=1/2, r=1 -> 2/3
    assert f1_score("paris paris", ["Paris"]) == pytest.approx(2 / 3)
    assert f1_score("london", ["Paris"]) == 0.0
    assert f1_score(None, ["Paris"]) == 0.0


def test_episode_reward_mean_em_and_scores():
    reward, scores = episode_reward(["Paris", "the Nile", None], [["paris"], ["Nile River", "Nile"], ["42"]])
    assert reward == pytest.approx(2 / 3)
    assert scores == [QuestionScore(1.0, 1.0), QuestionScore(1.0, 1.0), QuestionScore(0.0, 0.0)]


def test_reference_exploit_gold_of_another_question_scores_zero():
    # answering each question with the other question's gold earns nothing
    golds = [["Paris"], ["Berlin"]]
    reward, scores = episode_reward(["Berlin", "Paris"], golds)
    assert reward == 0.0
    assert [s.em for s in scores] == [0.0, 0.0]
    reward, _ = episode_reward(["Paris", "Berlin"], golds)
    assert reward == 1.0


def test_format_penalty_and_floor():
    reward, _ = episode_reward(["a1", "b2"], [["a1"], ["zz"]], num_format_errors=3, format_penalty=0.1)
    assert reward == pytest.approx(0.5 - 0.3)
    reward, _ = episode_reward(["x"], [["y"]], num_format_errors=50, format_penalty=0.1)
    assert reward == REWARD_FLOOR == -1.0
    # no penalty configured: errors cost nothing
    reward, _ = episode_reward(["y"], [["y"]], num_format_errors=5)
    assert reward == 1.0


def test_episode_reward_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="2 predictions for 1 questions"):
        episode_reward(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="at least one question"):
        episode_reward([], [])
