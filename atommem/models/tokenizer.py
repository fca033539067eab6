"""Byte-level BPE tokenizer for the tiny policy, trained locally with `tokenizers`.

Guarantees (tested):
- exact round trip: `decode(encode(x), skip_special_tokens=False) == x` for any text (byte-level
  alphabet, no prefix space, no clean-up of spaces; with `variants`, for any text without the private-use
  characters U+E000.. that mark them);
- every word of `extra_words` is ONE token when preceded by a space (" zorp"; the canonical action
  form puts a space after each tag, and facts are space-separated words): after training, BPE
  merges that join the word's trained pieces are appended at the lowest priority, so the trained
  merges are untouched and the word always ends as one token;
- `split_digits`: every digit is a token of its own (" 25" -> [" ", "2", "5"]), as in Qwen's tokenizers;
- `variants` {"user": ["city", ...]}: " user" right before " city" is a token of its own, one per following
  word, and " city" stays the usual token (" user city" -> [user@city, " city"]): the token count is as without
  them, and the first token already says which attribute a `user` line is about. A normaliser rewrites
  " user city" to a private-use mark plus " city", the mark is an added token, and the decoder turns it back
  into " user";
- the action tags and the chat role markers are special tokens (one id each); the policy decodes
  with `skip_special_tokens=False` because the tags are its action language.
"""

from __future__ import annotations

import json
from typing import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from atommem.errors import UserError

ACTION_TAGS: tuple[str, ...] = tuple(
    tag
    for name in ("update_query", "add_memory", "modify_memory", "delete_memory", "update_memory", "final_answer")
    for tag in (f"<{name}>", f"</{name}>")
)
PAD_TOKEN = "<|pad|>"
EOS_TOKEN = "<|eos|>"
ROLE_TOKENS: tuple[str, ...] = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, EOS_TOKEN, *ROLE_TOKENS, *ACTION_TAGS)

# <|role|>content ... then <|assistant|> for the generation prompt; assistant turns end with <|eos|>.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown chat role: ' + message['role']) }}"
    "{% endif %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}<|eos|>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

_MIN_TRAINED_VOCAB = 256 + len(SPECIAL_TOKENS)


def _train_bpe(texts: list[str], vocab_size: int, split_digits: bool = False) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    # Qwen's tokenizers write each digit as a token: a number of more digits than training saw is still known tokens
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level]) if split_digits else byte_level
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """BPE on one pre-token: repeatedly apply the lowest-ranked merge (leftmost on ties), as `tokenizers` does."""
    while len(symbols) > 1:
        best = min(range(len(symbols) - 1), key=lambda i: (ranks.get((symbols[i], symbols[i + 1]), 1 << 62), i))
        if (symbols[best], symbols[best + 1]) not in ranks:
            break
        symbols[best : best + 2] = [symbols[best] + symbols[best + 1]]
    return symbols


def _with_single_token_words(tok: Tokenizer, words: list[str]) -> Tokenizer:
    """Append BPE merges so that " word" becomes one token, keeping every trained merge's priority.

    BPE applies the lowest-ranked applicable merge first; the merges appended for a word rank below
    all earlier ones, so a word processed earlier is never disturbed by a later word's merges.
    """
    model = json.loads(tok.to_str())
    vocab: dict[str, int] = model["model"]["vocab"]
    merges: list = model["model"]["merges"]
    ranks = {tuple(m): r for r, m in enumerate(merges)}
    next_id = 1 + max([*vocab.values(), *(t["id"] for t in model["added_tokens"])])
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    for word in words:
        ((pretoken, _),) = byte_level.pre_tokenize_str(" " + word)
        pieces = _bpe(list(pretoken), ranks)
        joined = pieces[0]
        for piece in pieces[1:]:
            ranks[(joined, piece)] = len(merges)
            merges.append([joined, piece])
            joined += piece
            if joined not in vocab:
                vocab[joined] = next_id
                next_id += 1
    return Tokenizer.from_str(json.dumps(model))


def _check_words(words: list[str]) -> list[str]:
    """One pre-token each: letters only, digits only, or punctuation only (the GPT-2 split rules)."""
    seen: dict[str, None] = {}
    for word in words:
        probe = pre_tokenizers.ByteLevel(add_prefix_space=False).pre_tokenize_str(" " + word)
        if not word or word != word.strip() or len(probe) != 1:
            raise UserError(
                f"extra word {word!r} cannot be a single token: it must be one run of letters, digits or punctuation without spaces"
            )
        seen.setdefault(word, None)
    return list(seen)


def _variant_marks(variants: dict[str, list[str]]) -> dict[tuple[str, str], str]:
    """(word, next word) -> the private-use character that marks that variant of word."""
    pairs = [(w, n) for w, nexts in variants.items() for n in nexts]
    for w, n in pairs:
        if not (w.isalpha() and n.isalpha()):
            raise UserError(f"token variant {w!r} before {n!r}: both must be single words of letters")
    return {pair: chr(0xE000 + k) for k, pair in enumerate(dict.fromkeys(pairs))}


def _with_variants(tok: Tokenizer, marks: dict[tuple[str, str], str]) -> None:
    tok.normalizer = normalizers.Sequence([normalizers.Replace(f" {w} {n}", f"{m} {n}") for (w, n), m in marks.items()])
    tok.add_tokens([AddedToken(m, normalized=True, special=False) for m in marks.values()])
    # "Ġ" is the byte-level alphabet's space: the ByteLevel decoder after the replacement turns it into " ".
    tok.decoder = decoders.Sequence([*(decoders.Replace(m, "Ġ" + w) for (w, _), m in marks.items()), decoders.ByteLevel()])


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, extra_words: list[str] = (), variants: dict[str, list[str]] | None = None,
    split_digits: bool = False,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts`; `len(tokenizer) <= vocab_size`, each " word" of `extra_words` one token,
    a token of its own for each variant of `variants`, and with `split_digits` every digit a token (module docstring)."""
    corpus = list(texts)
    words = _check_words(list(extra_words))
    marks = _variant_marks(variants or {})
    budget = vocab_size - len(marks)  # variant tokens are added outside BPE: they take their room off the top

    def build(target: int) -> Tokenizer | None:
        tok = _with_single_token_words(_train_bpe(corpus, target, split_digits), words)
        return tok if tok.get_vocab_size(with_added_tokens=True) <= budget else None

    best = build(budget) if budget >= _MIN_TRAINED_VOCAB else None
    if best is None:  # the words' merges eat into the budget: largest trained size that still fits
        lo, hi = _MIN_TRAINED_VOCAB, budget - 1
        while lo <= hi:
            mid = (lo + hi) // 2
            tok = build(mid)
            if tok is None:
                hi = mid - 1
            else:
                best, lo = tok, mid + 1
    if best is None:
        raise UserError(
            f"vocab_size {vocab_size} is too small for the byte alphabet, {len(SPECIAL_TOKENS)} special tokens, "
            f"{len(words)} single-token words and {len(marks)} word variants; raise model.tiny.vocab_size"
        )
    if marks:
        _with_variants(best, marks)
    fast = _wrap(best, words)
    for w, n in marks:  # the variant's guarantee, checked once like the words'
        text = f" {w} {n}"
        ids = fast.encode(text, add_special_tokens=False)
        if len(ids) != 2 or ids[1:] != fast.encode(" " + n, add_special_tokens=False) or fast.decode(ids) != text:
            raise AssertionError(f"variant of {w!r} before {n!r} encodes to {fast.convert_ids_to_tokens(ids)}")
    return fast


def _wrap(tok: Tokenizer, words: list[str]) -> PreTrainedTokenizerFast:
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=list(ROLE_TOKENS + ACTION_TAGS),
        clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE,
        model_max_length=1 << 30,
    )
    for word in words:  # the guarantee this module exists for; cheap to verify once
        ids = fast.encode(" " + word, add_special_tokens=False)
        if len(ids) != 1:
            raise AssertionError(f"extra word {word!r} encodes to {len(ids)} tokens")
    return fast
