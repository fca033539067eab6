"""Tiny model directories for tests: `make_tiny_model_dir(tmp_path)` gives a fresh HF dir in seconds.

The first call per (hidden, layers) builds the tokenizer + model from a small synthetic corpus;
later calls copy that directory, so tests may modify their copy freely.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from atommem.config import SynthConfig, TinyModelConfig
from atommem.data.synthetic import synthetic_vocabulary
from atommem.models.tiny import build_tiny_model, synthetic_corpus

_BUILT: dict[tuple[int, int], Path] = {}
TEST_SYNTH = SynthConfig(name_vocab=60)
# The learner a GPU config runs: ZeRO-3 with a KL reference model. Tests of GRPO runs built on configs/tiny_cpu.yaml
# set it, as that demo trains its one CPU rank with neither.
ZERO3_WITH_REFERENCE = ["learner.zero_stage=3", "grpo.kl_coef=0.02"]


def tiny_test_config(hidden: int = 32, layers: int = 2) -> TinyModelConfig:
    return TinyModelConfig(
        hidden_size=hidden, num_layers=layers, num_heads=4, intermediate_size=2 * hidden, vocab_size=1000, seed=0
    )


def make_tiny_model_dir(tmp_path: Path, hidden: int = 32, layers: int = 2) -> Path:
    """A tiny Llama + tokenizer (synthetic words, action tags, chat template) at `tmp_path / "tiny-model"`."""
    key = (hidden, layers)
    if key not in _BUILT or not (_BUILT[key] / "config.json").is_file():
        src = Path(tempfile.mkdtemp(prefix=f"atommem-tiny-{hidden}x{layers}-"))
        build_tiny_model(
            tiny_test_config(hidden, layers), src, synthetic_corpus(TEST_SYNTH, episodes=16), synthetic_vocabulary(TEST_SYNTH)
        )
        _BUILT[key] = src
    out = Path(tmp_path) / "tiny-model"
    shutil.copytree(_BUILT[key], out)
    return out
