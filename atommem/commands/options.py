"""The options every command shares: `--config FILE` and repeatable dotted `--set section.key=value`."""

from __future__ import annotations

import argparse

from atommem.config import Config, load_config


def add_config_options(parser: argparse.ArgumentParser, *, required: bool = False, default: str | None = None,
                       uses: str = "") -> None:
    """`--config` (YAML, see configs/; `uses` says which sections matter) and `--set` overrides."""
    note = f"; uses {uses}" if uses else ""
    parser.add_argument("--config", required=required, default=default,
                        help=f"YAML config (see configs/){'' if required or default else '; defaults when omitted'}{note}")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="dotted config override, repeatable, e.g. --set grpo.lr=1e-6")


def config_of(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)
