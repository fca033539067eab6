"""Tokenizer: exact round trip, single-token synthetic words, special action tags, chat template."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atommem.errors import UserError
from atommem.models.tokenizer import ACTION_TAGS, EOS_TOKEN, PAD_TOKEN, ROLE_TOKENS, train_tokenizer

CORPUS = [
    "zorp city lima . blix pet owl . the questions come first , then the chunk .",
    "<add_memory> zorp city lima </add_memory> <update_query> zorp city </update_query>",
    "Memory 3: blix pet owl\nMemory 4: zorp city lima",
] * 20
WORDS = ["zorp", "blix", "quanderflump", "lima", "owl", "?", ".", "kyiv", "notes", "friend"]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, vocab_size=400, extra_words=WORDS)


def roundtrip(tok, text: str) -> str:
    return tok.decode(tok.encode(text, add_special_tokens=False), skip_special_tokens=False)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_round_trip_is_exact_for_any_text(tok, text):
    assert roundtrip(tok, text) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "  leading and trailing spaces  ",
        "tabs\tand\nnewlines\r\n\n",
        "ünïcödé 🙂 中文 Ġ Ċ",
        "<add_memory> zorp city lima </add_memory><|eos|>",
        "<final_answer> \\boxed{lima} </final_answer>",
        "text<|pad|><|assistant|>more",
        "isn't   it  ' s",
    ],
)
def test_round_trip_edge_cases(tok, text):
    assert roundtrip(tok, text) == text


def test_extra_words_are_single_tokens_after_a_space(tok):
    for word in WORDS:
        ids = tok.encode(" " + word, add_special_tokens=False)
        assert len(ids) == 1, (word, tok.convert_ids_to_tokens(ids))
    # a word never seen in the corpus is still one token, inside a sentence as well
    ids = tok.encode("<add_memory> quanderflump pet owl </add_memory>", add_special_tokens=False)
    pieces = tok.convert_ids_to_tokens(ids)
    assert pieces[:4] == ["<add_memory>", "Ġquanderflump", "Ġpet", "Ġowl"]


def test_unseen_long_word_is_split_without_the_extra_merges():
    plain = train_tokenizer(CORPUS, vocab_size=400, extra_words=[])
    assert len(plain.encode(" quanderflump", add_special_tokens=False)) > 1


def test_special_tokens_are_single_ids_and_kept_by_decode(tok):
    for special in (*ACTION_TAGS, *ROLE_TOKENS, EOS_TOKEN, PAD_TOKEN):
        ids = tok.encode(special, add_special_tokens=False)
        assert len(ids) == 1, special
        assert tok.decode(ids, skip_special_tokens=False) == special
    assert len(ACTION_TAGS) == 12 and len(set(tok.convert_tokens_to_ids(list(ACTION_TAGS)))) == 12
    assert tok.eos_token == EOS_TOKEN and tok.pad_token == PAD_TOKEN
    assert tok.eos_token_id != tok.pad_token_id
    # no BOS/EOS added implicitly
    assert tok.encode("zorp", add_special_tokens=True) == tok.encode("zorp", add_special_tokens=False)


def test_chat_template(tok):
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U zorp"}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<|system|>S<|user|>U zorp<|assistant|>"
    assert tok.apply_chat_template(messages, add_generation_prompt=False, tokenize=False) == "<|system|>S<|user|>U zorp"
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert ids == tok.encode(text, add_special_tokens=False)
    with_answer = messages + [{"role": "assistant", "content": " <add_memory> zorp </add_memory>"}]
    assert tok.apply_chat_template(with_answer, tokenize=False).endswith("</add_memory><|eos|>")


def test_save_and_reload_keeps_everything(tok, tmp_path):
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = "<|user|> zorp pet owl ?  <final_answer> \\boxed{owl} </final_answer><|eos|>"
    assert again.encode(text, add_special_tokens=False) == tok.encode(text, add_special_tokens=False)
    assert again.decode(again.encode(text, add_special_tokens=False), skip_special_tokens=False) == text
    assert again.chat_template == tok.chat_template and again.eos_token_id == tok.eos_token_id


def test_training_is_deterministic_and_respects_vocab_size():
    a = train_tokenizer(CORPUS, vocab_size=330, extra_words=WORDS)
    b = train_tokenizer(CORPUS, vocab_size=330, extra_words=WORDS)
    assert a.get_vocab() == b.get_vocab()
    assert len(a) <= 330
    assert len(a.encode(" quanderflump", add_special_tokens=False)) == 1


def test_bad_words_and_tiny_budgets_are_user_errors():
    with pytest.raises(UserError, match="single token"):
        train_tokenizer(CORPUS, vocab_size=400, extra_words=["two words"])
    with pytest.raises(UserError, match="too small"):
        train_tokenizer(CORPUS, vocab_size=280, extra_words=WORDS)


def test_variants_give_a_word_a_token_per_next_word_and_keep_the_token_count(tmp_path):
    from transformers import AutoTokenizer

    tok = train_tokenizer(CORPUS, vocab_size=400, extra_words=WORDS, variants={"zorp": ["city", "pet"]})
    plain = train_tokenizer(CORPUS, vocab_size=398, extra_words=WORDS)
    assert len(tok) <= 400 and len(tok) == len(plain) + 2
    assert {k: v for k, v in tok.get_vocab().items() if k in plain.get_vocab()} == plain.get_vocab()  # BPE as without
    text = "<update_query> zorp city </update_query> Memory 1: zorp pet owl . blix city lima . zorp owl ."
    ids = plain.encode(text, add_special_tokens=False)
    tok.save_pretrained(tmp_path)
    for t in (tok, AutoTokenizer.from_pretrained(tmp_path)):
        got = t.encode(text, add_special_tokens=False)
        assert len(got) == len(ids)
        changed = [(a, b) for a, b in zip(ids, got) if a != b]
        zorp = plain.convert_tokens_to_ids("Ġzorp")
        assert [a for a, _ in changed] == [zorp, zorp]  # " zorp" before city and pet; not before owl
        assert changed[0][1] != changed[1][1] and {b for _, b in changed}.isdisjoint(plain.get_vocab().values())
        assert roundtrip(t, text) == text
        assert [t.decode([i]) for i in got[1:3]] == [" zorp", " city"]  # token by token too (streaming)


def test_bad_variants_are_user_errors():
    with pytest.raises(UserError, match="single words of letters"):
        train_tokenizer(CORPUS, vocab_size=400, extra_words=WORDS, variants={"zorp": ["city pet"]})


def test_split_digits_writes_every_digit_as_a_token_and_keeps_the_round_trip():
    corpus = ["Document 3:\nnotes 57\n zorp city lima .", "Memory 12: zorp city lima"] * 20
    split = train_tokenizer(corpus, vocab_size=400, extra_words=WORDS, split_digits=True)
    whole = train_tokenizer(corpus, vocab_size=400, extra_words=WORDS)
    for text in ["Document 25:\nnotes 7\n", "Memory 12: 3057", " 0 1 99"]:
        ids = split.encode(text, add_special_tokens=False)
        assert split.decode(ids, skip_special_tokens=False) == text
        digits = [t for t in split.convert_ids_to_tokens(ids) if any(c.isdigit() for c in t)]
        assert digits == [c for c in text if c.isdigit()]
    assert "Ġ57" in whole.convert_ids_to_tokens(whole.encode(" 57", add_special_tokens=False))  # merged without it
