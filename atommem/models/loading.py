"""Loading Hugging Face model directories (the tiny policy or any real one) with errors a user can act on."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from atommem.errors import UserError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
    from transformers import AutoTokenizer

    check_model_dir(str(path))
    try:
        return AutoTokenizer.from_pretrained(str(path))
    except OSError as exc:
        raise UserError(f"cannot load a tokenizer from {path}: {exc}") from None


def load_model(path: str | Path, dtype: str = "float32"):
    """The causal LM at `path` in `dtype`, in eval mode."""
    from transformers import AutoModelForCausalLM

    if dtype not in _DTYPES:
        raise UserError(f"model dtype {dtype!r} is not one of {', '.join(_DTYPES)}")
    check_model_dir(str(path))
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=_DTYPES[dtype])
    except OSError as exc:
        raise UserError(f"cannot load a model from {path}: {exc}") from None
    return model.eval()
