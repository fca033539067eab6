"""`atommem collect-sft | sft | train --config C [--set k=v ...]`: the training stages (`atommem/trainer/`)."""

from __future__ import annotations

import argparse

from atommem.commands.options import add_config_options, config_of
from atommem.config import Config


def _config(command: str, argv: list[str], resume: bool = False) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog=f"atommem {command}")
    add_config_options(parser, required=True)
    if resume:
        parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in trainer.run_dir")
    args = parser.parse_args(argv)
    return config_of(args), args


def collect_sft(argv: list[str]) -> int:
    from atommem.trainer.sft import collect_teacher

    collect_teacher(_config("collect-sft", argv)[0])
    return 0


def sft(argv: list[str]) -> int:
    from atommem.trainer.sft import train_sft

    train_sft(_config("sft", argv)[0])
    return 0


def train(argv: list[str]) -> int:
    from atommem.trainer.grpo import train_grpo

    cfg, args = _config("train", argv, resume=True)
    train_grpo(cfg, resume=args.resume)
    return 0
