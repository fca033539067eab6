"""The base-model stage's sequences: next-token training of a tiny random policy on the task's own documents.

A pretrained LLM arrives at SFT able to copy from its context (its copying heads formed in pretraining, on text
that restates itself); a random tiny policy has to discover copying during SFT, where the only copying signal is
the value in an `<add_memory>`, a token or two in a hundred. Each sequence here is one training document,
rendered as the env renders it, then restated: either the whole document again, or some of its sentences again
in another order. What is restated is predictable only by copying, the second kind only by finding the sentence
a word belongs to, so the heads that copy form within a few hundred steps, before SFT (docs/experiments).

A copy formed on documents alone need not work where SFT needs it: inside a prompt, after the questions, the
query and the memory (which hold copies of the key that the chunk's value follows). With `prompt_share`, rows
are the teacher's read prompts instead, each followed by a blank line and its chunk's line restated; the loss
is on the restatement only, never on what the teacher did.

A sequence is an `SFTRow` whose prompt is its first token and whose response is the rest: the learner's SFT
step trains on it as on any row, with loss on every token it can predict.
"""

from __future__ import annotations

import random
import re
from functools import cached_property
from typing import Any, Collection, Iterable, Sequence

import numpy as np

from atommem.data.schema import Sample
from atommem.env.chunking import render_document, tokenize
from atommem.learner.sft import SFTRow

BASE_LABEL = "base/restate"  # the training rows' label
REPEAT_LABEL = "base/repeat"  # the first steps' rows (`pretrain.repeat_steps`)
RECALL_LABEL = "base/recall"  # the probe rows' label: validation reports val_full/base/recall
PROMPT_LABEL = "base/prompt"  # the rows restating a teacher prompt's chunk (`prompt_share`)
PROMPT_RECALL_LABEL = "base/prompt_recall"  # the probe of the copy inside the prompts: val_full/base/prompt_recall
_SENTENCE = re.compile(r"[^.]*\.|[^.]+$")  # up to and including each period (a synthetic fact line is " e a v .")


def sentences(text: str) -> list[str]:
    """`text` cut after each period; joined back they are `text`."""
    return [s for s in _SENTENCE.findall(text) if s]


def some_sentences(text: str, rng: random.Random) -> str:
    """A random non-empty subset of the sentences of `text`, in random order."""
    parts = sentences(text)
    return "".join(rng.sample(parts, rng.randint(1, len(parts))))


def restated(index: int | None, document: Any, rng: random.Random, whole_share: float = 0.5) -> str:
    """The document as the env renders it, a blank line, then the document again (with probability `whole_share`)
    or a random non-empty subset of its sentences in random order."""
    text = render_document(index, document) + "\n\n"
    if rng.random() < whole_share:
        return text + text
    return text + some_sentences(document.text, rng)


def read_prompts(trajectories: Iterable[Any], special_ids: Collection[int]) -> list[np.ndarray]:
    """The prompt of every read turn (its chunk shown last), without the generation marker's trailing special
    tokens, as int32 arrays (a demo's 3000 teacher episodes hold ~40,000)."""
    out = []
    for t in trajectories:
        for turn in t.turns:
            if turn.phase != "read":
                continue
            ids = list(turn.prompt_ids)
            while ids and ids[-1] in special_ids:
                ids.pop()
            if ids:
                out.append(np.asarray(ids, dtype=np.int32))
    return out


class BaseCorpus:
    """The documents of `samples`, rendered as the env's chunks show them (`chunk_by`: "tokens" with their
    position header, "documents" without); `rows(k, rng)` draws k restated ones, each one with probability
    `prompt_share` a teacher read prompt of `prompts` (token ids, `read_prompts`) with its chunk's line restated
    instead."""

    def __init__(self, samples: Sequence[Sample], tokenizer: Any, whole_share: float = 0.5, chunk_by: str = "tokens",
                 prompts: Sequence[np.ndarray] = (), prompt_share: float = 0.0):
        self.documents = [(None if chunk_by == "documents" else i, d)
                          for s in samples for i, d in enumerate(s.documents) if d.text.strip()]
        if not self.documents:
            raise ValueError("the base stage needs training documents, got none")
        if prompt_share > 0 and not prompts:
            raise ValueError("prompt_share > 0 needs the teacher's read prompts, got none")
        self.tokenizer, self.whole_share = tokenizer, whole_share
        self.prompts, self.prompt_share = list(prompts), prompt_share
        self.blank = tokenize("\n\n", tokenizer)

    @cached_property
    def vocab(self) -> list:
        """The documents' distinct tokens, which repeat rows draw from: tokenized on first use (~1 s for the demo's
        32,000 documents), as a corpus that only restates or mixes into SFT never needs them."""
        return sorted({t for _, d in self.documents for t in tokenize(d.text, self.tokenizer)})

    def rows(self, count: int, rng: random.Random, prompt_share: float | None = None) -> list[SFTRow]:
        """`count` restated sequences, each a prompt's with probability `prompt_share` (None: the corpus's)."""
        share = self.prompt_share if prompt_share is None else prompt_share
        out = []
        for _ in range(count):
            if share > 0 and rng.random() < share:  # none drawn at 0: the documents' draws as ever
                prompt, line = self._prompt(rng)
                again = line if rng.random() < self.whole_share else some_sentences(line, rng)
                out.append(SFTRow(prompt + self.blank, tokenize(again, self.tokenizer), PROMPT_LABEL))
                continue
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
            split = self._last_word(text, *rng.choice(_probe_sentences(document.text, document.title)))
            if split is None:
                raise ValueError(f"document {document.title!r} does not tokenize apart from a sentence after it")
            out.append(SFTRow(*split, RECALL_LABEL))
        return out

    def _last_word(self, context: str, sentence: str, cut: int) -> tuple[list[int], list[int]] | None:
        """`context` and `sentence` up to its last word (which starts at `cut`), and the rest, in tokens; None when
        the two do not tokenize apart."""
        head = tokenize(context + sentence[:cut], self.tokenizer)
        line = tokenize(context + sentence, self.tokenizer)
        if line[: len(head)] != head or len(line) == len(head):
            return None
        return head, line[len(head) :]

    def _prompt(self, rng: random.Random) -> tuple[list[int], str]:
        """A prompt drawn from `prompts` and its last line: a read turn's prompt ends with its chunk."""
        prompt = self.prompts[rng.randrange(len(self.prompts))].tolist()
        return prompt, self.tokenizer.decode(prompt, skip_special_tokens=False).rsplit("\n", 1)[-1]

    def prompt_recall_rows(self, count: int, rng: random.Random) -> list[SFTRow]:
        """Probe rows of the copy inside the prompts: a prompt, a blank line and one sentence of its chunk's line up
        to its last word, then that word and the period; as `recall_rows`, but past the prompt's other lines (its
        query, its memory: on a revision, the key with the stale value), as an `<add_memory>` copies past them."""
        out = []
        for _ in range(20 * count):
            if len(out) == count:
                return out
            prompt, line = self._prompt(rng)
            choices = _probe_sentences(line, "", strict=False)
            if not choices:
                continue
            split = self._last_word("", *rng.choice(choices))
            if split is not None:
                out.append(SFTRow(prompt + self.blank + split[0], split[1], PROMPT_RECALL_LABEL))
        if len(out) < count:
            raise ValueError("the teacher's read prompts end in too few chunk lines with a sentence to probe")
        return out


def _probe_sentences(text: str, title: str, strict: bool = True) -> list[tuple[str, int]]:
    """(sentence, where its last word starts) for each sentence of `text` with a beginning of its own; none is an
    error when `strict`."""
    cuts = []
    for sentence in sentences(text):
        cut = sentence.rstrip(" .").rfind(" ")
        if sentence[:cut].strip():
            cuts.append((sentence, cut))
    beginnings = [s[:c].strip() for s, c in cuts]
    unique = [(s, c) for s, c in cuts if beginnings.count(s[:c].strip()) == 1]
    if not unique and strict:
        raise ValueError(f"document {title!r} has no sentence of two or more words with a beginning of its own")
    return unique


def step_rng(seed: int, stage: str, step: int) -> random.Random:
    """The draw of one step of `stage` ("base", or "sft" for the rows mixed into SFT): the same (seed, stage, step)
    gives the same sequences, so a resumed SFT draws what it would have drawn."""
    return random.Random(f"atommem-base:{seed}:{stage}:{step}")
