"""`atommem demo [--run-dir DIR] [--config C] [--set k=v ...]`: the embedded default (`make demo`);
`atommem demo --seeds 0,1,2,3,4 [--run-dir DIR] ...`: the demo once per seed into DIR/seed-S, then one table
(DIR/sweep.md, sweep.json); `atommem demo --table-only [--run-dir DIR]`: that table from the seed dirs there;
`atommem compare-demos RUN_A RUN_B [--model grpo]`: one model of two demo runs on the same dev episodes."""

from __future__ import annotations

import argparse

from atommem.commands.options import add_config_options
from atommem.demo import DEFAULT_CONFIG, MODELS, compare_demos, run_demo
from atommem.sweep import run_sweep, sweep_table


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="atommem demo", description="the embedded default: tiny SFT -> GRPO -> eval on CPU")
    parser.add_argument("--run-dir", default="runs/demo")
    add_config_options(parser, default=str(DEFAULT_CONFIG))
    parser.add_argument("--seeds", type=_seeds, metavar="S,S,...",
                        help="a seed sweep: the demo once per seed (0,1,2 or 0-4) into RUN_DIR/seed-S, then one table")
    parser.add_argument("--table-only", action="store_true",
                        help="no run: the sweep table of the seed-S dirs already in RUN_DIR (an interrupted or piecewise sweep)")
    args = parser.parse_args(argv)
    if args.table_only:
        if args.seeds or args.overrides:
            parser.error("--table-only reads the runs in --run-dir: it takes no --seeds or --set")
        sweep_table(args.run_dir)
    elif args.seeds:
        run_sweep(args.run_dir, args.seeds, args.config, tuple(args.overrides))
    else:
        run_demo(args.run_dir, args.config, tuple(args.overrides))
    return 0


def _seeds(text: str) -> list[int]:
    """`0,1,2` or `0-4` (or a mix: `0-2,7`)."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            seeds += range(int(lo), int(hi) + 1) if hi else [int(lo)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds look like 0,1,2 or 0-4, got {text!r}") from None
    return seeds


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
