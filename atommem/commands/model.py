"""`atommem model tiny --out DIR [--config C] [--set k=v ...]`: build the tiny CPU policy and its tokenizer."""

from __future__ import annotations

import argparse
import json

from atommem.commands.options import add_config_options, config_of
from atommem.config import TinyModelConfig


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="atommem model", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    tiny = sub.add_parser("tiny", help="build the tiny Llama/Qwen2 + tokenizer from synthetic episodes")
    tiny.add_argument("--out", required=True, help="directory to write the HF model to")
    add_config_options(tiny, uses="model.tiny and data.synth")
    args = parser.parse_args(argv)

    from atommem.models.loading import load_model, load_tokenizer
    from atommem.models.tiny import build_for_synthetic, count_parameters

    cfg = config_of(args)
    tiny_cfg = cfg.model.tiny or TinyModelConfig()
    out = build_for_synthetic(tiny_cfg, args.out, cfg.data.synth)
    model = load_model(out)
    print(
        json.dumps(
            {"path": str(out), "arch": tiny_cfg.arch, "parameters": count_parameters(model), "vocab_size": len(load_tokenizer(out))}
        )
    )
    return 0
