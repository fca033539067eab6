"""`atommem demo [--run-dir DIR] [--config C] [--set k=v ...]`: the embedded default (`make demo`);
`atommem compare-demos RUN_A RUN_B [--model grpo]`: one model of two demo runs on the same dev episodes."""

from __future__ import annotations

import argparse

from atommem.commands.options import add_config_options
from atommem.demo import DEFAULT_CONFIG, MODELS, compare_demos, run_demo


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="atommem demo", description="the embedded default: tiny SFT -> GRPO -> eval on CPU")
    parser.add_argument("--run-dir", default="runs/demo")
    add_config_options(parser, default=str(DEFAULT_CONFIG))
    args = parser.parse_args(argv)
    run_demo(args.run_dir, args.config, tuple(args.overrides))
    return 0


def compare_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="atommem compare-demos",
        description="one model of two demo runs on the same dev episodes: EM of each, B - A with a paired bootstrap CI",
    )
    parser.add_argument("run_a")
    parser.add_argument("run_b")
    parser.add_argument("--model", default="grpo", choices=MODELS)
    args = parser.parse_args(argv)
    compare_demos(args.run_a, args.run_b, args.model)
    return 0
