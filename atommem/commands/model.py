"""`atommem model tiny --out DIR [--config C] [--set k=v ...]`: build the tiny CPU policy and its tokenizer."""

from __future__ import annotations

import argparse
import json

from atommem.config import TinyModelConfig, load_config


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="atommem model", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    tiny = sub.add_parser("tiny", help="build the tiny Llama/Qwen2 + tokenizer from synthetic episodes")
    tiny.add_argument("--out", required=True, help="directory to write the HF model to")
    tiny.add_argument("--config", help="YAML config; uses model.tiny and data.synth (defaults when absent)")
    tiny.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    args = parser.parse_args(argv)

    from atommem.models.loading import load_model, load_tokenizer
    from atommem.models.tiny import build_tiny_model, count_parameters, synthetic_corpus
    from atommem.data.synthetic import synthetic_vocabulary

    cfg = load_config(args.config, args.set)
    tiny_cfg = cfg.model.tiny or TinyModelConfig()
    out = build_tiny_model(tiny_cfg, args.out, synthetic_corpus(cfg.data.synth), synthetic_vocabulary(cfg.data.synth))
    model = load_model(out)
    print(
        json.dumps(
            {"path": str(out), "arch": tiny_cfg.arch, "parameters": count_parameters(model), "vocab_size": len(load_tokenizer(out))}
        )
    )
    return 0
