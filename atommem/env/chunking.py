"""Context -> chunks: join the documents, tokenize, cut the middle when too long, slice with overlap.

Pure functions. With an HF tokenizer the token ids are the policy's own tokens and chunk texts are
decoded from id slices; without one a token is a word together with the whitespace before it, so
joining tokens reproduces the text exactly (newlines included).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from atommem.data.schema import Document

_WORD = re.compile(r"\s*\S+")


def render_document(i: int | None, document: Document) -> str:
    """`Document {i}:\\n{title}\\n{text}`; with `i` None (a chunk by documents) no header: a chunk then reads
    the same in a context of any length (a policy that saw "Document 7" at most broke on "Document 26")."""
    header = "" if i is None else f"Document {i}:\n"
    return f"{header}{document.title}\n{document.text}"


def render_context(documents: Sequence[Document]) -> str:
    """`Document {i}:\\n{title}\\n{text}` per document, joined with blank lines."""
    return "\n\n".join(render_document(i, d) for i, d in enumerate(documents))


def tokenize(text: str, tokenizer: Any = None) -> list:
    """Token ids of `text` (no special tokens), or whitespace-attached words when `tokenizer` is None."""
    if tokenizer is None:
        return _WORD.findall(text)
    return list(tokenizer.encode(text, add_special_tokens=False))


def detokenize(tokens: Sequence, tokenizer: Any = None) -> str:
    if tokenizer is None:
        return "".join(tokens).strip()
    return tokenizer.decode(list(tokens), skip_special_tokens=False).strip()


def middle_truncate(tokens: Sequence, limit: int) -> list:
    """Keep the first `limit // 2` and the last `limit - limit // 2` tokens when longer than `limit`."""
    if limit < 0:
        raise ValueError(f"middle_truncate: limit must be >= 0, got {limit}")
    if len(tokens) <= limit:
        return list(tokens)
    head = limit // 2
    tail = limit - head
    return list(tokens[:head]) + (list(tokens[len(tokens) - tail :]) if tail else [])


def chunk_spans(num_tokens: int, chunk_tokens: int, overlap: int) -> list[tuple[int, int]]:
    """Chunk t covers [t*C - overlap, (t+1)*C + overlap) clipped to [0, num_tokens)."""
    if chunk_tokens <= 0:
        raise ValueError(f"chunk_tokens must be positive, got {chunk_tokens}")
    if overlap < 0:
        raise ValueError(f"chunk_overlap must be >= 0, got {overlap}")
    count = -(-num_tokens // chunk_tokens)
    return [
        (max(0, t * chunk_tokens - overlap), min(num_tokens, (t + 1) * chunk_tokens + overlap)) for t in range(count)
    ]


@dataclass(frozen=True)
class Chunking:
    chunks: list[str]  # chunk texts in reading order
    context_tokens: int  # tokens of the full context before truncation
    kept_tokens: int  # tokens after middle truncation
    truncated: bool


def chunk_documents(
    documents: Sequence[Document],
    chunk_tokens: int,
    overlap: int,
    max_chunks: int,
    tokenizer: Any = None,
    by: str = "tokens",
) -> Chunking:
    """The rendered context of `documents`, middle-cut to `max_chunks * chunk_tokens` tokens, as chunk texts:
    chunk t covers tokens [t*C - overlap, (t+1)*C + overlap). `by="documents"`: chunk t is the t-th kept document
    (its title and text, no position header), middle-cut to C tokens, and the middle documents go when there are
    more than `max_chunks` (chunks never split a line, whatever a document's token count)."""
    if max_chunks <= 0:
        raise ValueError(f"max_chunks must be positive, got {max_chunks}")
    tokens = tokenize(render_context(documents), tokenizer)
    if by == "documents":
        if overlap:
            raise ValueError(f"chunk_overlap must be 0 when chunking by documents, got {overlap}")
        kept_docs = middle_truncate(list(enumerate(documents)), max_chunks)
        whole = [tokenize(render_document(None, d), tokenizer) for _, d in kept_docs]
        pieces = [middle_truncate(w, chunk_tokens) for w in whole]
        # the blank lines between documents are no chunk's: only a dropped document or a cut one is truncation
        truncated = len(kept_docs) < len(documents) or any(len(p) < len(w) for p, w in zip(pieces, whole))
        return Chunking([detokenize(p, tokenizer) for p in pieces], len(tokens), sum(len(p) for p in pieces), truncated)
    if by != "tokens":
        raise ValueError(f"chunk_by must be tokens or documents, got {by!r}")
    kept = middle_truncate(tokens, max_chunks * chunk_tokens)
    chunks = [detokenize(kept[a:b], tokenizer) for a, b in chunk_spans(len(kept), chunk_tokens, overlap)]
    return Chunking(chunks, len(tokens), len(kept), len(kept) < len(tokens))
