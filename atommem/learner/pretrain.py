"""The base-model stage's sequences: next-token training of a tiny random policy on the task's own documents.

A pretrained LLM arrives at SFT able to copy from its context (its copying heads formed in pretraining, on text
that restates itself); a random tiny policy has to discover copying during SFT, where the only copying signal is
the value in an `<add_memory>`, a token or two in a hundred. Each sequence here is one training document,
rendered as the env renders it, then restated: either the whole document again, or some of its sentences again
in another order. What is restated is predictable only by copying, the second kind only by finding the sentence
a word belongs to, so the heads that copy form within a few hundred steps, before SFT (docs/experiments).

A sequence is an `SFTRow` whose prompt is its first token and whose response is the rest: the learner's SFT
step trains on it as on any row, with loss on every token it can predict.
"""

from __future__ import annotations

import random
import re
from functools import cached_property
from typing import Any, Sequence

from atommem.data.schema import Sample
from atommem.env.chunking import render_document, tokenize
from atommem.learner.sft import SFTRow

BASE_LABEL = "base/restate"  # the training rows' label
REPEAT_LABEL = "base/repeat"  # the first steps' rows (`pretrain.repeat_steps`)
RECALL_LABEL = "base/recall"  # the probe rows' label: validation reports val_full/base/recall
_SENTENCE = re.compile(r"[^.]*\.|[^.]+$")  # up to and including each period (a synthetic fact line is " e a v .")


def sentences(text: str) -> list[str]:
    """`text` cut after each period; joined back they are `text`."""
    return [s for s in _SENTENCE.findall(text) if s]


def restated(index: int | None, document: Any, rng: random.Random, whole_share: float = 0.5) -> str:
    """The document as the env renders it, a blank line, then the document again (with probability `whole_share`)
    or a random non-empty subset of its sentences in random order."""
    text = render_document(index, document) + "\n\n"
    if rng.random() < whole_share:
        return text + text
    parts = sentences(document.text)
    return text + "".join(rng.sample(parts, rng.randint(1, len(parts))))


class BaseCorpus:
    """The documents of `samples`, rendered as the env's chunks show them (`chunk_by`: "tokens" with their
    position header, "documents" without); `rows(k, rng)` draws k restated ones."""

    def __init__(self, samples: Sequence[Sample], tokenizer: Any, whole_share: float = 0.5, chunk_by: str = "tokens"):
        self.documents = [(None if chunk_by == "documents" else i, d)
                          for s in samples for i, d in enumerate(s.documents) if d.text.strip()]
        if not self.documents:
            raise ValueError("the base stage needs training documents, got none")
        self.tokenizer, self.whole_share = tokenizer, whole_share
        self.blank = tokenize("\n\n", tokenizer)

    @cached_property
    def vocab(self) -> list:
        """The documents' distinct tokens, which repeat rows draw from: tokenized on first use (~1 s for the demo's
        32,000 documents), as a corpus that only restates or mixes into SFT never needs them."""
        return sorted({t for _, d in self.documents for t in tokenize(d.text, self.tokenizer)})

    def rows(self, count: int, rng: random.Random) -> list[SFTRow]:
        out = []
        for _ in range(count):
            index, document = self.documents[rng.randrange(len(self.documents))]
            ids = tokenize(restated(index, document, rng, self.whole_share), self.tokenizer)
            out.append(SFTRow(ids[:1], ids[1:], BASE_LABEL))
        return out

    def repeat_rows(self, count: int, rng: random.Random, length: tuple[int, int] = (8, 40)) -> list[SFTRow]:
        """Strings of the documents' tokens drawn at random, a blank line, then the same string again (the
        response: the loss is on the repeat only). Nothing but copying predicts it, and no statistic of the task
        competes for the loss: the base stage starts on these so that the task's text then forms its copying
        heads at every seed (bench/copy_probe.py; docs/experiments)."""
        out = []
        for _ in range(count):
            ids = [rng.choice(self.vocab) for _ in range(rng.randint(*length))]
            out.append(SFTRow(ids + self.blank, ids, REPEAT_LABEL))
        return out

    def recall_rows(self, count: int, rng: random.Random) -> list[SFTRow]:
        """Probe rows of the skill SFT needs: the document, a blank line and one of its sentences up to its last word
        as the prompt, that word and the period as the response. The prompt names the sentence (a sentence whose
        beginning another one shares is never drawn), so only a copy gets the word right, as an `<add_memory>`
        copies the value of a fact line."""
        out = []
        for _ in range(count):
            index, document = self.documents[rng.randrange(len(self.documents))]
            text = render_document(index, document) + "\n\n"
            sentence, cut = rng.choice(_probe_sentences(document.text, document.title))
            head = tokenize(text + sentence[:cut], self.tokenizer)
            line = tokenize(text + sentence, self.tokenizer)
            if line[: len(head)] != head or len(line) == len(head):
                raise ValueError(f"document {document.title!r} does not tokenize apart from a sentence after it")
            out.append(SFTRow(head, line[len(head) :], RECALL_LABEL))
        return out


def _probe_sentences(text: str, title: str) -> list[tuple[str, int]]:
    """(sentence, where its last word starts) for each sentence of `text` with a beginning of its own."""
    cuts = []
    for sentence in sentences(text):
        cut = sentence.rstrip(" .").rfind(" ")
        if sentence[:cut].strip():
            cuts.append((sentence, cut))
    beginnings = [s[:c].strip() for s, c in cuts]
    unique = [(s, c) for s, c in cuts if beginnings.count(s[:c].strip()) == 1]
    if not unique:
        raise ValueError(f"document {title!r} has no sentence of two or more words with a beginning of its own")
    return unique


def step_rng(seed: int, stage: str, step: int) -> random.Random:
    """The draw of one step of `stage` ("base", or "sft" for the rows mixed into SFT): the same (seed, stage, step)
    gives the same sequences, so a resumed SFT draws what it would have drawn."""
    return random.Random(f"atommem-base:{seed}:{stage}:{step}")
