"""Synthetic task generator: seeded, shaped like the real samples, vocabulary complete, long-context padding."""

from __future__ import annotations

import dataclasses
import re

import pytest

from atommem.config import ConfigError, SynthConfig
from atommem.data.schema import Sample
from atommem.data.synthetic import ATTRIBUTES, RELATION, generate_synthetic, name_pool, synthetic_vocabulary

CFG = SynthConfig(num_entities=4, num_attributes=2, facts_per_chunk=4, min_questions=1, max_questions=3, two_hop_fraction=0.5)


def test_seeded_and_deterministic():
    a = generate_synthetic(CFG, 5, seed=3)
    assert [s.to_row() for s in a] == [s.to_row() for s in generate_synthetic(CFG, 5, seed=3)]
    assert [s.to_row() for s in a] != [s.to_row() for s in generate_synthetic(CFG, 5, seed=4)]
    assert generate_synthetic(CFG, 2, seed=3)[1].to_row() == a[1].to_row()  # sample i depends on (seed, i) only
    assert len({s.id for s in a}) == 5


def test_shape_facts_questions_and_answers():
    for s in generate_synthetic(CFG, 30, seed=0):
        meta = s.metadata
        value = {(e, a): v for e, a, v in meta["facts"]}
        assert len(meta["entities"]) == 4 and len(meta["attributes"]) == 2
        assert len(meta["facts"]) == 4 * 3  # 2 attributes + friend each
        assert CFG.min_questions <= len(s.questions) <= CFG.max_questions
        assert len({q.question for q in s.questions}) == len(s.questions)
        for d in s.documents:
            assert re.fullmatch(r"notes \d+", d.title)
            facts = [f.split() for f in d.text.split(" .") if f.strip()]
            assert 1 <= len(facts) <= CFG.facts_per_chunk and all(len(f) == 3 for f in facts)
        text = " ".join(d.text for d in s.documents)
        for q, chain in zip(s.questions, meta["chains"]):
            assert len(q.answers) == 1
            e, path = chain["entity"], chain["path"]
            if len(path) == 1:
                assert q.question == f"{path[0]} of {e} ?" and q.answers == [value[(e, path[0])]]
            else:
                friend = value[(e, RELATION)]
                assert path[0] == RELATION and friend != e
                assert q.question == f"{path[1]} of {RELATION} of {e} ?" and q.answers == [value[(friend, path[1])]]
            for f in chain["facts"]:
                assert f"{' '.join(f)} ." in text  # every needed fact is written somewhere


def test_two_hop_fraction_extremes():
    one = generate_synthetic(SynthConfig(two_hop_fraction=0.0, max_questions=3), 20)
    assert all(len(c["path"]) == 1 for s in one for c in s.metadata["chains"])
    assert not any(RELATION in d.text for s in one for d in s.documents)
    two = generate_synthetic(SynthConfig(two_hop_fraction=1.0, max_questions=3), 20)
    assert all(len(c["path"]) == 2 for s in two for c in s.metadata["chains"])


def test_distractors_present():
    for s in generate_synthetic(SynthConfig(num_entities=4, num_attributes=2, max_questions=1), 10):
        needed = {tuple(f) for c in s.metadata["chains"] for f in c["facts"]}
        assert len(needed) < len(s.metadata["facts"])


def test_vocabulary_covers_every_generated_word():
    cfg = SynthConfig(two_hop_fraction=0.5, doc_num=12, name_vocab=50)
    vocab = set(synthetic_vocabulary(cfg))
    for s in generate_synthetic(cfg, 20):
        words = {w for d in s.documents for w in (d.title + " " + d.text).split() if not w.isdigit()}
        words |= {w for q in s.questions for w in q.question.split()} | {a for q in s.questions for a in q.answers}
        assert words <= vocab, words - vocab
    names = name_pool(50)
    assert len(set(names)) == 50 and not set(names) & set(ATTRIBUTES) and name_pool(50) == names
    assert all(n.isalpha() and n.islower() for n in names)


def test_long_context_padding_with_outside_people():
    cfg = SynthConfig(doc_num=40, name_vocab=300)
    s = generate_synthetic(cfg, 1)[0]
    assert len(s.documents) == 40 and all(len(d.text.split(" .")) - 1 == 4 for d in s.documents)
    filler_people = {f[0] for f in s.metadata["filler_facts"]}
    assert filler_people and not filler_people & set(s.metadata["entities"])
    assert Sample.from_row(s.to_row()).metadata == s.metadata  # metadata survives the Parquet row


def test_bad_configs_name_the_key():
    with pytest.raises(ConfigError, match="doc_num"):
        generate_synthetic(SynthConfig(doc_num=1), 1)
    with pytest.raises(ConfigError, match="num_attributes"):
        generate_synthetic(SynthConfig(num_attributes=99), 1)
    with pytest.raises(ConfigError, match="num_entities"):
        generate_synthetic(SynthConfig(num_entities=1, two_hop_fraction=0.5), 1)
    with pytest.raises(ConfigError, match="name_vocab"):
        generate_synthetic(SynthConfig(doc_num=500, name_vocab=20), 1)


def test_every_word_is_space_preceded():
    from atommem.env.chunking import render_context

    for s in generate_synthetic(CFG, 5):
        context = render_context(s.documents)
        for word in synthetic_vocabulary(CFG):
            if word not in ("notes",):
                assert f"\n{word} " not in context and f"\n{word}\n" not in context
        assert all(d.text.startswith(" ") for d in s.documents)


REV = SynthConfig(
    task="revisions", num_entities=3, num_attributes=3, facts_per_chunk=2, min_questions=1, max_questions=2,
    revised_fraction=0.5, max_revisions=2, doc_num=7,
)


def _lines(doc) -> list[tuple[str, str, str]]:
    return [tuple(f.split()) for f in doc.text.split(" .") if f.strip()]


def test_revisions_latest_statement_is_gold_and_states_mark_each_statement():
    revised = 0
    for s in generate_synthetic(REV, 60, seed=5):
        meta = s.metadata
        assert len(s.documents) == REV.doc_num and all(len(_lines(d)) == REV.facts_per_chunk for d in s.documents)
        asked = {(c["entity"], c["path"][0]) for c in meta["chains"]}
        stream = [f for d in s.documents for f in _lines(d)]
        markers = dict(meta["turn_states"]["markers"])
        for q, c in zip(s.questions, meta["chains"]):
            key = (c["entity"], c["path"][0])
            said = [v for e, a, v in stream if (e, a) == key]
            assert said == meta["revisions"][" ".join(key)] and len(set(said)) == len(said)  # always a new value
            assert q.answers == [said[-1]] and 1 <= len(said) <= 1 + REV.max_revisions
            assert [markers[f"{' '.join(key)} {v} ."] for v in said] == ["relevant"] + ["revision"] * (len(said) - 1)
            revised += len(said) > 1
        for d in s.documents:  # at most one statement of an asked key per document
            assert sum((e, a) in asked for e, a, _ in _lines(d)) <= 1
        near = [(e, a) for e, a, _ in stream if e in meta["entities"] and (e, a) not in asked]
        assert near and len(set(near)) == len(near)  # near misses: the sample's other facts, each once
    assert 0.3 < revised / sum(len(s.questions) for s in generate_synthetic(REV, 60, seed=5)) < 0.7


def test_revisions_settings_and_default_task_unchanged():
    none = generate_synthetic(dataclasses.replace(REV, revised_fraction=0.0), 20)
    assert all(len(v) == 1 for s in none for v in s.metadata["revisions"].values())
    always = generate_synthetic(dataclasses.replace(REV, revised_fraction=1.0, max_revisions=1), 20)
    assert all(len(v) == 2 for s in always for v in s.metadata["revisions"].values())
    # the default task ignores the revision settings: same samples whatever they are
    base = SynthConfig()
    assert [s.to_row() for s in generate_synthetic(base, 3)] == [
        s.to_row() for s in generate_synthetic(dataclasses.replace(base, revised_fraction=0.9, max_revisions=3), 3)
    ]
    with pytest.raises(ConfigError, match="doc_num"):
        generate_synthetic(dataclasses.replace(REV, doc_num=5), 1)
    with pytest.raises(ConfigError, match="two_hop_fraction"):
        generate_synthetic(dataclasses.replace(REV, two_hop_fraction=0.5), 1)
    with pytest.raises(ConfigError, match="max_revisions"):
        generate_synthetic(dataclasses.replace(REV, max_revisions=0), 1)


def test_one_entity_questions_ask_about_one_person_amid_near_misses():
    cfg = dataclasses.replace(REV, num_attributes=4, facts_per_chunk=5, doc_num=8, one_entity_questions=True)
    for s in generate_synthetic(cfg, 30, seed=2):
        people = {c["entity"] for c in s.metadata["chains"]}
        assert len(people) == 1 and len({c["path"][0] for c in s.metadata["chains"]}) == len(s.questions)
        (person,) = people
        asked = {c["path"][0] for c in s.metadata["chains"]}
        lines = [f for d in s.documents for f in _lines(d)]
        assert any(e == person and a not in asked for e, a, _ in lines)  # same person, another attribute
        assert any(e != person and a in asked for e, a, _ in lines)  # same attribute, another person


def test_without_entity_near_misses_the_asked_person_appears_only_in_asked_facts():
    cfg = dataclasses.replace(REV, num_attributes=4, facts_per_chunk=5, doc_num=8, one_entity_questions=True,
                              entity_near_misses=False)
    for s in generate_synthetic(cfg, 30, seed=2):
        (person,) = {c["entity"] for c in s.metadata["chains"]}
        asked = {c["path"][0] for c in s.metadata["chains"]}
        lines = [f for d in s.documents for f in _lines(d)]
        assert {a for e, a, _ in lines if e == person} == asked
        assert any(e != person and a in asked for e, a, _ in lines)  # near misses share the attribute


def test_a_fixed_subject_is_the_person_every_question_asks_about():
    cfg = dataclasses.replace(REV, num_attributes=4, facts_per_chunk=5, doc_num=8, one_entity_questions=True,
                              entity_near_misses=False, subject="user")
    samples = generate_synthetic(cfg, 30, seed=2)
    for s in samples:
        assert {c["entity"] for c in s.metadata["chains"]} == {"user"}
        assert all(q.question.endswith(" of user ?") for q in s.questions)
        assert s.metadata["entities"][0] == "user" and "user" not in s.metadata["entities"][1:]
        lines = [f for d in s.documents for f in _lines(d)]
        assert any(e != "user" and a in {c["path"][0] for c in s.metadata["chains"]} for e, a, _ in lines)
    assert len({tuple(s.metadata["entities"][1:]) for s in samples}) > 1  # the other people still vary
    assert "user" in synthetic_vocabulary(cfg)
    with pytest.raises(ConfigError, match="one_entity_questions"):
        generate_synthetic(dataclasses.replace(cfg, one_entity_questions=False), 1)
    with pytest.raises(ConfigError, match="task: revisions"):
        generate_synthetic(dataclasses.replace(cfg, task="facts"), 1)  # not silently ignored
    with pytest.raises(ConfigError, match="subject 'city'"):
        generate_synthetic(dataclasses.replace(cfg, subject="city"), 1)
    with pytest.raises(ConfigError, match="subject 'User'"):
        generate_synthetic(dataclasses.replace(cfg, subject="User"), 1)


def test_near_misses_apart_keep_every_line_but_never_beside_a_statement_of_their_attribute():
    cfg = dataclasses.replace(REV, num_attributes=4, facts_per_chunk=5, doc_num=8, one_entity_questions=True,
                              entity_near_misses=False, subject="user", max_questions=2, min_questions=2,
                              revised_fraction=0.75, max_revisions=3)
    apart = dataclasses.replace(cfg, near_misses_apart=True)
    beside = 0
    for mixed, s in zip(generate_synthetic(cfg, 60, seed=2), generate_synthetic(apart, 60, seed=2)):
        assert s.questions == mixed.questions and s.metadata["revisions"] == mixed.metadata["revisions"]
        # the same lines, dealt differently: every document still holds facts_per_chunk of them
        lines = [f for d in s.documents for f in _lines(d)]
        assert sorted(lines) == sorted(f for d in mixed.documents for f in _lines(d))
        assert all(len(_lines(d)) == 5 for d in s.documents)
        asked = {c["path"][0] for c in s.metadata["chains"]}
        assert any(e != "user" and a in asked for e, a, _ in lines)  # near misses still share the attribute
        for d in s.documents:
            stated = {a for e, a, _ in _lines(d) if e == "user"}
            assert not any(e != "user" and a in stated for e, a, _ in _lines(d))
        for d in mixed.documents:
            stated = {a for e, a, _ in _lines(d) if e == "user"}
            beside += any(e != "user" and a in stated for e, a, _ in _lines(d))
    assert beside > 20  # dealt at random, a statement often has a near miss of its attribute beside it
    with pytest.raises(ConfigError, match="near_misses_apart"):
        # two documents, both stating the one asked key: its near misses fit nowhere
        generate_synthetic(dataclasses.replace(apart, doc_num=2, num_entities=3, max_questions=1, min_questions=1,
                                               revised_fraction=1.0, max_revisions=1), 1)


@pytest.mark.parametrize("task", ["facts", "revisions"])
def test_random_titles_number_documents_distinctly_and_change_nothing_else(task):
    base = REV if task == "revisions" else CFG
    cfg = dataclasses.replace(base, doc_num=12, num_entities=4, num_attributes=2, facts_per_chunk=4, max_questions=2)
    numbered = dataclasses.replace(cfg, numbered_titles="random")
    two_digits = 0
    for plain, s in zip(generate_synthetic(cfg, 20, seed=5), generate_synthetic(numbered, 20, seed=5)):
        assert [d.text for d in s.documents] == [d.text for d in plain.documents]
        assert s.questions == plain.questions and s.metadata == plain.metadata
        assert [d.title for d in plain.documents] == [f"notes {k}" for k in range(12)]
        numbers = [int(d.title.removeprefix("notes ")) for d in s.documents]
        assert len(set(numbers)) == 12 and all(0 <= n < 100 for n in numbers)
        two_digits += sum(n >= 10 for n in numbers)
    assert two_digits > 150  # most numbers past what twelve documents number themselves with
