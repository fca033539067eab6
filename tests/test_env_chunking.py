"""Chunking: rendering of the context, middle truncation, chunk spans with overlap."""

from __future__ import annotations

import pytest

from atommem.data.schema import Document
from atommem.env.chunking import chunk_documents, chunk_spans, middle_truncate, render_context, tokenize
from env_support import build_tokenizer


def test_render_context_format():
    docs = [Document("t0", "a b"), Document("t1", "c")]
    assert render_context(docs) == "Document 0:\nt0\na b\n\nDocument 1:\nt1\nc"


def test_whitespace_tokens_round_trip_exactly():
    text = "Document 0:\nt0\n  a b\n\nDocument 1:\nc"
    assert "".join(tokenize(text)) == text


def test_chunk_spans_boundaries_and_overlap():
    assert chunk_spans(10, 4, 0) == [(0, 4), (4, 8), (8, 10)]
    assert chunk_spans(10, 4, 1) == [(0, 5), (3, 9), (7, 10)]
    assert chunk_spans(8, 4, 1) == [(0, 5), (3, 8)]  # exact multiple: no empty tail chunk
    assert chunk_spans(0, 4, 1) == []
    assert chunk_spans(3, 4, 10) == [(0, 3)]
    with pytest.raises(ValueError):
        chunk_spans(5, 0, 0)


def test_middle_truncate_keeps_head_and_tail():
    toks = list(range(10))
    assert middle_truncate(toks, 10) == toks
    assert middle_truncate(toks, 4) == [0, 1, 8, 9]
    assert middle_truncate(toks, 5) == [0, 1, 7, 8, 9]
    assert middle_truncate(toks, 1) == [9]
    assert middle_truncate(toks, 0) == []


def test_chunk_documents_whitespace_overlap():
    docs = [Document("t", " ".join(f"w{i}" for i in range(20)))]
    # tokens: Document 0: t w0 .. w19  -> 23 tokens
    ch = chunk_documents(docs, chunk_tokens=10, overlap=2, max_chunks=5)
    assert ch.context_tokens == 23 and not ch.truncated
    assert len(ch.chunks) == 3
    assert ch.chunks[0] == "Document 0:\nt\nw0 w1 w2 w3 w4 w5 w6 w7 w8"
    assert ch.chunks[1].split() == [f"w{i}" for i in range(5, 19)]  # tokens [8, 22)
    assert ch.chunks[2].split() == [f"w{i}" for i in range(15, 20)]


def test_chunk_documents_middle_truncation():
    docs = [Document("t", " ".join(f"w{i}" for i in range(100)))]
    ch = chunk_documents(docs, chunk_tokens=5, overlap=0, max_chunks=2)
    assert ch.truncated and ch.context_tokens == 103 and ch.kept_tokens == 10
    assert ch.chunks[0].split() == ["Document", "0:", "t", "w0", "w1"]
    assert ch.chunks[1].split() == [f"w{i}" for i in range(95, 100)]


def test_chunk_documents_with_hf_tokenizer():
    tiny_tokenizer = build_tokenizer()
    docs = [Document("t", "aa bb cc dd ee ff")]
    ch = chunk_documents(docs, chunk_tokens=4, overlap=1, max_chunks=10, tokenizer=tiny_tokenizer)
    ids = tiny_tokenizer.encode(render_context(docs), add_special_tokens=False)
    assert ch.context_tokens == len(ids)
    assert [c for c in ch.chunks] == [
        tiny_tokenizer.decode(ids[a:b]).strip() for a, b in chunk_spans(len(ids), 4, 1)
    ]


def test_chunk_by_documents_gives_each_document_whole_whatever_its_length_and_position():
    docs = [Document("t0", "a b"), Document("t1", "c d e f g"), Document("t2", "h")]
    ch = chunk_documents(docs, chunk_tokens=8, overlap=0, max_chunks=5, by="documents")
    # no "Document i:" header: a chunk reads the same wherever its document stands in a context of any length
    assert ch.chunks == ["t0\na b", "t1\nc d e f g", "t2\nh"]
    assert ch.context_tokens == 3 * 3 + 8 and ch.kept_tokens == 11 and not ch.truncated
    later = chunk_documents([Document(f"x{i}", "y") for i in range(30)] + docs, 8, 0, 40, by="documents")
    assert later.chunks[30:] == ch.chunks
    # the same documents cut by tokens straddle a document boundary
    assert chunk_documents(docs, chunk_tokens=8, overlap=0, max_chunks=5).chunks[1].startswith("c")


def test_chunk_by_documents_cuts_long_documents_and_drops_middle_ones():
    docs = [Document(f"t{i}", " ".join(f"w{j}" for j in range(i + 1))) for i in range(5)]
    ch = chunk_documents(docs, chunk_tokens=4, overlap=0, max_chunks=3, by="documents")
    assert ch.truncated
    # documents 0 and 3, 4 are kept (middle cut over documents); each is cut to its first and last 2 tokens
    assert [c.split() for c in ch.chunks] == [["t0", "w0"], ["t3", "w0", "w2", "w3"], ["t4", "w0", "w3", "w4"]]
    with pytest.raises(ValueError, match="chunk_overlap must be 0"):
        chunk_documents(docs, chunk_tokens=4, overlap=1, max_chunks=3, by="documents")


def test_chunk_by_documents_is_the_token_chunk_without_its_header_when_documents_fill_a_chunk_exactly():
    docs = [Document(f"notes{i}", "zorp city lima .") for i in range(4)]  # 7 whitespace tokens each
    by_tokens = chunk_documents(docs, chunk_tokens=7, overlap=0, max_chunks=10)
    by_docs = chunk_documents(docs, chunk_tokens=7, overlap=0, max_chunks=10, by="documents")
    assert [f"Document {i}:\n{c}" for i, c in enumerate(by_docs.chunks)] == by_tokens.chunks and len(by_docs.chunks) == 4
    assert (by_docs.kept_tokens, by_tokens.kept_tokens) == (20, 28)


def test_chunk_by_documents_counts_only_a_dropped_or_cut_document_as_truncated():
    """With a real tokenizer the blank lines between documents are tokens no chunk holds: whole documents are no cut."""
    tiny_tokenizer = build_tokenizer()
    docs = [Document(f"notes {i}", " zorp city lima . blix pet owl .") for i in range(3)]
    whole = chunk_documents(docs, chunk_tokens=64, overlap=0, max_chunks=3, tokenizer=tiny_tokenizer, by="documents")
    assert not whole.truncated and whole.kept_tokens < whole.context_tokens
    assert whole.chunks == [f"notes {i}\n zorp city lima . blix pet owl ." for i in range(3)]
    assert chunk_documents(docs, chunk_tokens=64, overlap=0, max_chunks=2, tokenizer=tiny_tokenizer, by="documents").truncated
    assert chunk_documents(docs, chunk_tokens=6, overlap=0, max_chunks=3, tokenizer=tiny_tokenizer, by="documents").truncated
