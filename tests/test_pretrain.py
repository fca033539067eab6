"""The base stage's sequences: a training document, then restated (all of it, or some sentences shuffled)."""

from __future__ import annotations

import random

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
    """Whitespace-attached words as ids: enough to check what a row holds."""

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def encode(self, text, add_special_tokens=False):
        import re

        return [self.vocab.setdefault(w, len(self.vocab)) for w in re.findall(r"\s*\S+", text)]


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
