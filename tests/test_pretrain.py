"""The base stage's sequences: a training document, then restated (all of it, or some sentences shuffled)."""

from __future__ import annotations

import random

import pytest

from atommem.config import load_config
from atommem.data.schema import Document, Sample
from atommem.env.chunking import chunk_documents, render_document
from atommem.learner.pretrain import BASE_LABEL, REPEAT_LABEL, BaseCorpus, restated, sentences, step_rng
from atommem.trainer.pretrain import base_rows

DOC = Document("notes 57", " zorp city lima . user job monk . blix pet owl .")


def test_sentences_cut_after_each_period_and_join_back():
    assert sentences(DOC.text) == [" zorp city lima .", " user job monk .", " blix pet owl ."]
    assert "".join(sentences("A tale. Of two cities. And no end")) == "A tale. Of two cities. And no end"


def test_a_restatement_is_the_document_again_or_some_of_its_sentences_shuffled():
    head = render_document(3, DOC) + "\n\n"
    kinds = {"again": 0, "some": 0}
    for k in range(200):
        text = restated(3, DOC, random.Random(k))
        assert text.startswith(head)
        rest = text[len(head):]
        if rest == head:
            kinds["again"] += 1
            continue
        kinds["some"] += 1
        parts = sentences(rest)
        assert parts and len(set(parts)) == len(parts) and set(parts) <= set(sentences(DOC.text))
    assert min(kinds.values()) > 60  # about half each


class _WordTokenizer:
    """Whitespace-attached words as ids (a line break a word of its own): enough to check what a row holds."""

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def encode(self, text, add_special_tokens=False):
        import re

        return [self.vocab.setdefault(w, len(self.vocab)) for w in re.findall(r"\n|[ \t]*[^\s]+", text)]

    def decode(self, ids, skip_special_tokens=False):
        words = {i: w for w, i in self.vocab.items()}
        return "".join(words[i] for i in ids)


def test_rows_are_whole_sequences_and_the_same_draw_gives_the_same_rows():
    samples = [Sample(id=f"s{i}", source="synthetic", documents=[DOC, Document("notes 4", f" kiv food pie{i} .")],
                      questions=[]) for i in range(3)]
    tok = _WordTokenizer()
    corpus = BaseCorpus(samples, tok)
    assert len(corpus.documents) == 6
    rows = corpus.rows(16, step_rng(0, "base", 5))
    assert len(rows) == 16 and all(r.label == BASE_LABEL and len(r.prompt_ids) == 1 for r in rows)
    again = corpus.rows(16, step_rng(0, "base", 5))
    assert [r.prompt_ids + r.response_ids for r in rows] == [r.prompt_ids + r.response_ids for r in again]
    other = corpus.rows(16, step_rng(0, "sft", 5))
    assert [r.response_ids for r in other] != [r.response_ids for r in rows]


def test_by_documents_the_corpus_renders_documents_as_the_env_chunks_them():
    samples = [Sample(id="s", source="synthetic", documents=[Document("notes 4", " kiv food pie ."), DOC], questions=[])]
    corpus = BaseCorpus(samples, _WordTokenizer(), whole_share=1.0, chunk_by="documents")
    chunk = chunk_documents(samples[0].documents, 64, 0, 8, by="documents").chunks[1]
    assert corpus.documents[1] == (None, DOC) and restated(None, DOC, random.Random(0), 1.0) == f"{chunk}\n\n{chunk}\n\n"
    assert [i for i, _ in BaseCorpus(samples, _WordTokenizer()).documents] == [0, 1]


def test_the_demo_config_has_a_base_stage_that_mixes_into_sft():
    cfg = load_config("configs/tiny_cpu.yaml")
    assert cfg.pretrain.steps > 0 and cfg.pretrain.mix_rows > 0


def test_a_recall_row_asks_for_the_last_word_of_a_sentence_named_by_its_beginning():
    doc = Document("notes 57", " zorp city lima . user job monk . zorp city rome . blix pet owl .")
    samples = [Sample(id="s", source="synthetic", documents=[doc], questions=[])]
    tok = _WordTokenizer()
    head = tok.encode(render_document(0, doc) + "\n\n")
    asked = set()
    for row in BaseCorpus(samples, tok).recall_rows(40, random.Random(3)):
        words = {i: w for w, i in tok.vocab.items()}
        assert row.label == "base/recall" and row.prompt_ids[: len(head)] == head
        assert [words[i] for i in row.response_ids][1:] == [" ."]  # the last word, then the period
        asked.add("".join(words[i] for i in row.prompt_ids[len(head):] + row.response_ids).strip())
    # "zorp city" begins two sentences with different last words: no copy could tell which, so neither is asked
    assert asked == {"user job monk .", "blix pet owl ."}


def test_whole_share_sets_how_often_the_whole_document_comes_again():
    head = render_document(3, DOC) + "\n\n"
    assert all(restated(3, DOC, random.Random(k), whole_share=1.0) == head + head for k in range(20))
    assert not any(restated(3, DOC, random.Random(k), whole_share=0.0) == head + head for k in range(20))


def _corpus(n: int = 3) -> BaseCorpus:
    samples = [Sample(id=f"s{i}", source="synthetic", documents=[DOC, Document("notes 4", f" kiv food pie{i} .")],
                      questions=[]) for i in range(n)]
    return BaseCorpus(samples, _WordTokenizer())


def test_a_repeat_row_is_a_random_string_of_document_tokens_and_the_same_string_as_its_response():
    corpus = _corpus()
    rows = corpus.repeat_rows(50, random.Random(1))
    assert all(r.label == REPEAT_LABEL and r.prompt_ids == r.response_ids + corpus.blank for r in rows)
    assert all(8 <= len(r.response_ids) <= 40 and set(r.response_ids) <= set(corpus.vocab) for r in rows)
    assert len({tuple(r.response_ids) for r in rows}) == 50  # drawn, not one fixed string
    again = corpus.repeat_rows(50, random.Random(1))
    assert [r.response_ids for r in again] == [r.response_ids for r in rows]


def test_the_base_stage_repeats_random_strings_for_its_first_steps_then_restates_documents():
    cfg = load_config("configs/tiny_cpu.yaml", ["pretrain.repeat_steps=2", "pretrain.batch_size=4"])
    corpus = _corpus()
    labels = [{r.label for r in base_rows(cfg, corpus, step)} for step in range(4)]
    assert labels == [{REPEAT_LABEL}, {REPEAT_LABEL}, {BASE_LABEL}, {BASE_LABEL}]
    assert [r.response_ids for r in base_rows(cfg, corpus, 1)] == [r.response_ids for r in base_rows(cfg, corpus, 1)]
    off = load_config("configs/tiny_cpu.yaml", ["pretrain.repeat_steps=0", "pretrain.batch_size=4"])
    assert {r.label for r in base_rows(off, corpus, 0)} == {BASE_LABEL}


def _read_turn(tok, chunk: str, memory: str = "") -> list[int]:
    """A compact read prompt's ids, the generation marker (id 999) last."""
    return tok.encode(f"<|user|> query: user city\nmemory:{memory}\nchunk: notes 5\n{chunk}") + [999]


def _prompt_corpus(share: float):
    from atommem.learner.pretrain import read_prompts
    from atommem.trajectory import Trajectory, Turn

    tok = _WordTokenizer()
    chunks = [" zorp city lima . user job monk .", " user city rome . blix pet owl ."]
    turns = [Turn(_read_turn(tok, c, " user city oslo"), [1], [0.0], 0, "read") for c in chunks]
    turns.append(Turn(tok.encode("<|user|> question: city of user ?") + [999], [1], [0.0], 0, "answer"))
    episode = Trajectory("u", 0, "s", "synthetic", turns, reward=1.0, correct=[True], f1=[1.0], answers=["rome"])
    samples = [Sample(id="s", source="synthetic", documents=[DOC], questions=[])]
    return tok, chunks, BaseCorpus(samples, tok, prompts=read_prompts([episode], {999}), prompt_share=share)


def test_prompt_rows_restate_the_chunk_line_of_a_read_prompt_after_it():
    from atommem.learner.pretrain import PROMPT_LABEL

    tok, chunks, corpus = _prompt_corpus(1.0)
    # the read turns only, without the generation marker
    assert [p.tolist() for p in corpus.prompts] == [_read_turn(tok, c, " user city oslo")[:-1] for c in chunks]
    kinds = {"again": 0, "some": 0}
    for row in corpus.rows(100, random.Random(2)):
        assert row.label == PROMPT_LABEL
        prompt, blank = row.prompt_ids[: -len(corpus.blank)], row.prompt_ids[-len(corpus.blank):]
        assert blank == corpus.blank and prompt in [p.tolist() for p in corpus.prompts]
        chunk = tok.decode(prompt).rsplit("\n", 1)[-1]
        said = tok.decode(row.response_ids)
        if said == chunk:
            kinds["again"] += 1
        else:
            kinds["some"] += 1
            assert set(sentences(said)) <= set(sentences(chunk)) and len(set(sentences(said))) == len(sentences(said))
    assert min(kinds.values()) > 25  # whole_share 0.5


def test_prompt_share_zero_draws_the_same_document_rows_as_a_corpus_without_prompts():
    _, _, with_prompts = _prompt_corpus(0.0)
    plain = BaseCorpus([Sample(id="s", source="synthetic", documents=[DOC], questions=[])], with_prompts.tokenizer)
    rows = with_prompts.rows(20, step_rng(0, "base", 3))
    assert {r.label for r in rows} == {BASE_LABEL}
    assert [r.response_ids for r in rows] == [r.response_ids for r in plain.rows(20, step_rng(0, "base", 3))]
    _, _, half = _prompt_corpus(0.5)
    labels = [r.label for r in half.rows(200, random.Random(0))]
    assert 60 < labels.count(BASE_LABEL) < 140


def test_a_prompt_recall_row_asks_for_a_chunk_value_past_the_memory_copy_of_its_key():
    from atommem.learner.pretrain import PROMPT_RECALL_LABEL

    tok, _, corpus = _prompt_corpus(1.0)
    asked = set()
    for row in corpus.prompt_recall_rows(40, random.Random(5)):
        text = tok.decode(row.prompt_ids)
        prompt, head = text.rsplit("\n\n", 1) if "\n\n" in text else (None, None)
        words = tok.decode(row.response_ids)
        assert row.label == PROMPT_RECALL_LABEL and words.endswith(" .") and len(row.response_ids) == 2
        asked.add(head + words)
    # the stale " user city oslo" in memory names the key too: only the chunk's " user city rome ." is right
    assert " user city rome ." in asked and " zorp city lima ." in asked and not any("oslo" in a for a in asked)


def test_prompt_share_needs_the_teachers_prompts():
    samples = [Sample(id="s", source="synthetic", documents=[DOC], questions=[])]
    with pytest.raises(ValueError, match="read prompts"):
        BaseCorpus(samples, _WordTokenizer(), prompt_share=0.5)


def test_the_base_corpus_names_the_missing_teacher_data(tmp_path):
    from atommem.errors import UserError
    from atommem.trainer.pretrain import base_corpus

    cfg = load_config("configs/tiny_cpu.yaml", [f"sft.data={tmp_path / 'none'}", "pretrain.prompt_share=1.0"])
    with pytest.raises(UserError, match="atommem collect-sft"):
        base_corpus(cfg, "unused-model-path", tmp_path)
