import json
from pathlib import Path

import pytest

from atommem.data.builders import BuildParams, build_2wiki, build_hotpotqa, build_musique
from atommem.data.schema import read_samples, write_samples
from atommem.errors import DataError

FIX = Path(__file__).parent / "fixtures"
HOTPOT = FIX / "hotpot_dev_distractor_mini.json"
WIKI = FIX / "2wiki_dev_mini.json"
WIKI_ALIASES = FIX / "2wiki_id_aliases_mini.json"
MUSIQUE = FIX / "musique_dev_mini.jsonl"


def _raw_hotpot():
    return {r["_id"]: r for r in json.loads(HOTPOT.read_text())}


def _raw_musique():
    return {r["id"]: r for r in map(json.loads, MUSIQUE.read_text().splitlines())}


def _joined(sentences):
    return "".join(sentences).strip()


BUILDS = [
    pytest.param(build_hotpotqa, HOTPOT, "hotpotqa", 12, id="hotpotqa"),
    pytest.param(build_2wiki, WIKI, "2wiki", 10, id="2wiki"),
    pytest.param(build_musique, MUSIQUE, "musique", 10, id="musique"),  # 11 records, one unanswerable
]


@pytest.mark.parametrize("build, path, source, n_questions", BUILDS)
def test_grouping_covers_each_question_once(build, path, source, n_questions):
    samples = build(path, doc_num=25, seed=3)
    ids = [qid for s in samples for qid in s.metadata["question_ids"]]
    assert len(ids) == len(set(ids)) == n_questions
    assert all(s.source == source for s in samples)
    assert len({s.id for s in samples}) == len(samples)
    sizes = [len(s.questions) for s in samples]
    assert all(1 <= k <= 10 for k in sizes)


@pytest.mark.parametrize("build, path, source, n_questions", BUILDS)
def test_group_size_distribution_follows_single_question_p(build, path, source, n_questions):
    singles = build(path, doc_num=5, seed=0, single_question_p=1.0)
    assert [len(s.questions) for s in singles] == [1] * n_questions
    multi = build(path, doc_num=5, seed=0, single_question_p=0.0, max_questions=3)
    sizes = [len(s.questions) for s in multi]
    assert all(2 <= k <= 3 for k in sizes[:-1]) and 1 <= sizes[-1] <= 3  # only the last group may run short
    assert sum(sizes) == n_questions


@pytest.mark.parametrize("build, path, source, n_questions", BUILDS)
def test_deterministic_with_seed(build, path, source, n_questions):
    a = build(path, doc_num=25, seed=11)
    b = build(path, doc_num=25, seed=11)
    c = build(path, doc_num=25, seed=12)
    assert [s.to_row() for s in a] == [s.to_row() for s in b]
    assert [s.to_row() for s in a] != [s.to_row() for s in c]


def test_hotpot_gold_and_distractors_present_and_topped_up():
    raw = _raw_hotpot()
    samples = build_hotpotqa(HOTPOT, doc_num=30, seed=5)
    for s in samples:
        assert len(s.documents) == 30
        keys = {(d.title, d.text) for d in s.documents}
        assert len(keys) == 30  # deduplicated by title + text
        for qid in s.metadata["question_ids"]:
            native = {(t, _joined(sents)) for t, sents in raw[qid]["context"]}
            assert native <= keys  # gold + native distractors all present (4 per question, room for all)
    # the first sentence is joined to the leading-space second one with exactly one space
    band = next(d for s in samples for d in s.documents if d.title == "Glass Harbour")
    assert "formed in 1991. The band was founded by Tomas Ferrante." in band.text


def test_each_question_keeps_its_own_answers():
    raw = _raw_hotpot()
    for s in build_hotpotqa(HOTPOT, doc_num=10, seed=2):
        for q, qid in zip(s.questions, s.metadata["question_ids"]):
            assert q.question == raw[qid]["question"]
            assert q.answers == [raw[qid]["answer"]]
    raw_m = _raw_musique()
    for s in build_musique(MUSIQUE, doc_num=10, seed=2):
        for q, qid in zip(s.questions, s.metadata["question_ids"]):
            assert q.answers == [raw_m[qid]["answer"], *raw_m[qid]["answer_aliases"]]


def test_gold_kept_when_doc_num_is_smaller_than_gold():
    raw = _raw_hotpot()
    samples = build_hotpotqa(HOTPOT, doc_num=1, seed=0, single_question_p=0.0)
    for s in samples:
        titles = {d.title for d in s.documents}
        for qid, sup in zip(s.metadata["question_ids"], s.metadata["supporting_titles"]):
            assert set(sup) == {t for t, _ in raw[qid]["supporting_facts"]}
            assert set(sup) <= titles
        assert len(s.documents) == 2 * len(s.questions)  # gold only, no distractors beyond doc_num


def test_top_up_stops_at_corpus_size():
    raw = json.loads(HOTPOT.read_text())
    corpus = {(t, _joined(sents)) for r in raw for t, sents in r["context"]}
    samples = build_hotpotqa(HOTPOT, doc_num=10_000, seed=0)
    assert all({(d.title, d.text) for d in s.documents} == corpus for s in samples)


def test_musique_gold_is_supporting_and_unanswerable_skipped():
    raw = _raw_musique()
    samples = build_musique(MUSIQUE, doc_num=12, seed=4)
    ids = {qid for s in samples for qid in s.metadata["question_ids"]}
    unanswerable = {k for k, r in raw.items() if not r["answerable"]}
    assert unanswerable and not ids & unanswerable
    for s in samples:
        keys = {(d.title, d.text) for d in s.documents}
        for qid, sup in zip(s.metadata["question_ids"], s.metadata["supporting_titles"]):
            gold = {(p["title"], p["paragraph_text"]) for p in raw[qid]["paragraphs"] if p["is_supporting"]}
            assert gold <= keys
            assert sorted(t for t, _ in gold) == sup


def test_2wiki_aliases_from_file_and_record():
    samples = build_2wiki(WIKI, aliases_path=WIKI_ALIASES, doc_num=5, seed=0, single_question_p=1.0)
    by_q = {s.questions[0].question: s.questions[0].answers for s in samples}
    crimson = by_q["What is the nationality of the director of film The Crimson Garden?"]
    assert crimson == ["United Kingdom", "UK", "Britain", "British"]
    winter = next(a for q, a in by_q.items() if a[0] == "Germany" and "Deutschland" in a)
    assert winter == ["Germany", "Deutschland", "Federal Republic of Germany", "German"]
    without = build_2wiki(WIKI, doc_num=5, seed=0, single_question_p=1.0)
    assert {tuple(s.questions[0].answers) for s in without} >= {("United Kingdom",), ("Germany", "Deutschland")}


def test_limit_takes_a_seeded_subset():
    samples = build_hotpotqa(HOTPOT, doc_num=5, seed=1, limit=5)
    assert sum(len(s.questions) for s in samples) == 5
    again = build_hotpotqa(HOTPOT, doc_num=5, seed=1, limit=5)
    assert [s.metadata["question_ids"] for s in samples] == [s.metadata["question_ids"] for s in again]


def test_parquet_round_trip(tmp_path):
    samples = build_musique(MUSIQUE, doc_num=15, seed=0)
    write_samples(samples, tmp_path / "out")
    back = read_samples(tmp_path / "out")
    assert [s.to_row() for s in back] == [s.to_row() for s in samples]


# ---------------------------------------------------------------- malformed input


def _write_json(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(json.dumps(obj))
    return p


def test_missing_field_names_file_record_and_field(tmp_path):
    raw = json.loads(HOTPOT.read_text())
    del raw[7]["answer"]
    p = _write_json(tmp_path, "hotpot_dev.json", raw)
    with pytest.raises(DataError) as e:
        build_hotpotqa(p)
    msg = str(e.value)
    assert "hotpot_dev.json record 7" in msg and f"_id={raw[7]['_id']}" in msg and "field 'answer' is missing" in msg


def test_wrong_context_type(tmp_path):
    raw = json.loads(HOTPOT.read_text())
    raw[3]["context"][1] = {"title": "x", "sentences": ["y"]}
    p = _write_json(tmp_path, "hotpot_dev.json", raw)
    with pytest.raises(DataError, match=r"record 3 \(_id=.*\): field 'context' must be a list of \[title, sentences\]"):
        build_hotpotqa(p)


def test_musique_bad_paragraph_and_line_numbers(tmp_path):
    lines = MUSIQUE.read_text().splitlines()
    rec = json.loads(lines[2])
    rec["paragraphs"][0]["paragraph_text"] = None
    lines[2] = json.dumps(rec)
    p = tmp_path / "musique_dev.jsonl"
    p.write_text("\n".join(lines))
    with pytest.raises(DataError, match=rf"record 2 \(id={rec['id']}\): field 'paragraphs'"):
        build_musique(p)
    lines[2] = "{not json"
    p.write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"musique_dev.jsonl line 3 \(record 2\): invalid JSON"):
        build_musique(p)


def test_not_json_and_unknown_formats(tmp_path):
    bad = tmp_path / "hotpot.json"
    bad.write_text("this is not json")
    with pytest.raises(DataError, match="hotpot.json: not a JSON file"):
        build_hotpotqa(bad)
    with pytest.raises(DataError, match="looks like JSONL"):
        build_hotpotqa(MUSIQUE)
    with pytest.raises(DataError, match="is a JSON array, but a MuSiQue file .* is JSONL"):
        build_musique(HOTPOT)
    with pytest.raises(DataError, match="look like 2wiki, not hotpotqa"):
        build_hotpotqa(WIKI)
    obj = _write_json(tmp_path, "obj.json", {"data": []})
    with pytest.raises(DataError, match="must be a JSON array of records, got a JSON dict"):
        build_hotpotqa(obj)
    with pytest.raises(DataError, match="record 0: a record must be a JSON object"):
        build_hotpotqa(_write_json(tmp_path, "nums.json", [1, 2]))
    with pytest.raises(DataError, match="does not exist"):
        build_2wiki(tmp_path / "missing.json")
    with pytest.raises(DataError, match="no usable hotpotqa records"):
        build_hotpotqa(_write_json(tmp_path, "empty.json", []))


def test_bad_params():
    with pytest.raises(DataError, match="doc_num must be >= 1"):
        build_hotpotqa(HOTPOT, BuildParams(doc_num=0))
    with pytest.raises(DataError, match="single_question_p"):
        build_hotpotqa(HOTPOT, single_question_p=1.5)


def test_gzip_input_reads_like_plain(tmp_path):
    import gzip

    gz = tmp_path / "musique_dev_mini.jsonl.gz"
    gz.write_bytes(gzip.compress(MUSIQUE.read_bytes()))
    assert [s.to_row() for s in build_musique(gz, doc_num=9)] == [s.to_row() for s in build_musique(MUSIQUE, doc_num=9)]


def test_bad_2wiki_aliases_file(tmp_path):
    bad = tmp_path / "id_aliases.json"
    bad.write_text('{"Q_id": "Q30", "aliases": "USA", "demonyms": []}\n')
    with pytest.raises(DataError, match=r"id_aliases.json record 0 \(Q_id=Q30\): field 'aliases' must be a list of strings"):
        build_2wiki(WIKI, aliases_path=bad)
