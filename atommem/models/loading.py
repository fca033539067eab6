"""Loading Hugging Face model directories (the tiny policy or any real one) with errors a user can act on."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from atommem.errors import UserError

_DTYPES = ("float32", "bfloat16", "float16")
# what AutoTokenizer resolves a saved `tokenizers`-backed tokenizer (ours, most real models') to
_PLAIN_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


def _looks_like_hub_name(name: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", name)) and not name.startswith((".", "/"))


def check_model_dir(path: str) -> None:
    """UserError unless `path` is a local HF model directory or (online) a hub name."""
    p = Path(path)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise UserError(f"model path {p} is a directory but not a Hugging Face model (no config.json)")
        return
    if p.exists():
        raise UserError(f"model path {p} is a file; it must be a Hugging Face model directory")
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
    if _looks_like_hub_name(path) and offline:
        raise UserError(
            f"model {path!r} is not a local directory and the hub is offline (HF_HUB_OFFLINE=1): "
            "pass a local model path or download it beforehand"
        )
    if not _looks_like_hub_name(path):
        raise UserError(f"model path {p} does not exist (build the tiny one with `atommem model tiny --out {p}`)")


def load_tokenizer(path: str | Path):
    """The tokenizer saved with a model directory (or a hub name reachable from here)."""
    check_model_dir(str(path))
    try:
        return _tokenizer_class(Path(path)).from_pretrained(str(path))
    except OSError as exc:
        raise UserError(f"cannot load a tokenizer from {path}: {exc}") from None


def _tokenizer_class(path: Path):
    """The class AutoTokenizer would load `path` with, imported without AutoTokenizer when that is the plain
    `tokenizers` backend: AutoTokenizer imports torch and transformers' model registry, 9 s of every rollout
    actor's start here (1-2 s without)."""
    try:
        name = json.loads((path / "tokenizer_config.json").read_text()).get("tokenizer_class")
    except (OSError, ValueError):
        name = None
    if name in _PLAIN_TOKENIZER_CLASSES:
        from transformers import TokenizersBackend

        return TokenizersBackend
    from transformers import AutoTokenizer

    return AutoTokenizer


def load_model(path: str | Path, dtype: str = "float32"):
    """The causal LM at `path` in `dtype`, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    if dtype not in _DTYPES:
        raise UserError(f"model dtype {dtype!r} is not one of {', '.join(_DTYPES)}")
    check_model_dir(str(path))
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype))
    except OSError as exc:
        raise UserError(f"cannot load a model from {path}: {exc}") from None
    return model.eval()
