"""Helpers for the env/oracle tests: a tiny byte-level BPE tokenizer with a chat template, built in-process."""

from __future__ import annotations

from functools import lru_cache

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
TAGS = [f"<{c}{t}>" for t in ("update_query", "add_memory", "modify_memory", "delete_memory", "update_memory", "final_answer") for c in ("", "/")]
SPECIALS = ["<|system|>", "<|user|>", "<|assistant|>", "<|eos|>", "<|pad|>"]


@lru_cache(maxsize=1)
def build_tokenizer(extra_text: tuple[str, ...] = ()):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=SPECIALS + TAGS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    corpus = ["Document 0:\nnotes 1\nzorp city lima . questions: memory: chunk: question:"] * 3 + list(extra_text)
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|eos|>", pad_token="<|pad|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast
