"""`atommem demo [--run-dir DIR] [--config C] [--set k=v ...]`: the embedded default (`make demo`)."""

from __future__ import annotations

import argparse

from atommem.commands.options import add_config_options
from atommem.demo import DEFAULT_CONFIG, run_demo


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="atommem demo", description="the embedded default: tiny SFT -> GRPO -> eval on CPU")
    parser.add_argument("--run-dir", default="runs/demo")
    add_config_options(parser, default=str(DEFAULT_CONFIG))
    args = parser.parse_args(argv)
    run_demo(args.run_dir, args.config, tuple(args.overrides))
    return 0
