"""The Ray job entry points (`jobs/*.py`): shared arguments, joining the cluster, calling the library.

Every job takes `--config configs/X.yaml` plus repeatable dotted `--set key=value` overrides, joins the
Ray cluster it runs in (`ray job submit` sets RAY_ADDRESS; run directly it starts a local Ray) and calls
one library function. The same command works on a laptop and on a cluster:

    python jobs/train_grpo.py --config configs/tiny_cpu.yaml --set trainer.steps=2
    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/train_grpo.py --config configs/qwen3_8b_grpo.yaml --resume

`evaluate`, `rollout` and `serve` hand their arguments to the CLI of the module that owns them
(`atommem eval`, `atommem rollout`, `atommem serve`), which reads the same --config/--set plus its own
options (--checkpoint, --data, --policies, --out for evaluate) and joins Ray itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Callable

from atommem.config import Config, load_config


@dataclass(frozen=True)
class Job:
    help: str
    run: Callable[[argparse.Namespace, Config], object]  # (args, config) -> result printed by the job
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    needs_ray: bool = True


@dataclass(frozen=True)
class CliJob:
    """A job whose options belong to a module CLI (`main(argv) -> int`, same --config/--set); it joins Ray itself."""

    help: str
    main: Callable[[list[str]], object]


def _print_result(result: object) -> None:
    if isinstance(result, dict):
        print(json.dumps(result, indent=2, default=str))
    elif result is not None:
        print(result)


def _prepare_data(args: argparse.Namespace, cfg: Config) -> dict:
    from atommem.data.prepare import prepare

    return {split: str(path) for split, path in prepare(cfg).items()}


def _collect_sft(args: argparse.Namespace, cfg: Config) -> object:
    from atommem import train

    return train.collect_sft(cfg)


def _train_sft(args: argparse.Namespace, cfg: Config) -> object:
    from atommem import train

    return train.train_sft(cfg)


def _train_grpo(args: argparse.Namespace, cfg: Config) -> object:
    from atommem import train

    return train.train_grpo(cfg, resume=args.resume)


def _resume_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in trainer.run_dir")


def _evaluate(argv: list[str]) -> object:
    from atommem.eval import cli

    return cli.main(argv)


def _rollout(argv: list[str]) -> object:
    from atommem.rollout import cli

    return cli.main(argv)


def _serve(argv: list[str]) -> object:
    from atommem.serve import cli

    return cli.main(argv)


JOBS: dict[str, Job] = {
    "prepare_data": Job("synthesise the missing train/dev(/test) splits a config names; real sets are kept",
                        _prepare_data, needs_ray=False),
    "collect_sft": Job("play teacher episodes and keep those with reward >= sft.min_reward", _collect_sft),
    "train_sft": Job("supervised fine-tuning on the collected teacher trajectories", _train_sft),
    "train_grpo": Job("GRPO: rollouts on Ray, DeepSpeed learner group, weight sync to the engines",
                      _train_grpo, _resume_argument),
}
CLI_JOBS: dict[str, CliJob] = {
    "evaluate": CliJob("evaluate a checkpoint and baselines on a dataset (options of `atommem eval`)", _evaluate),
    "rollout": CliJob("play episodes on Ray and write trajectories (options of `atommem rollout`)", _rollout),
    "serve": CliJob("serve a trained agent over HTTP with Ray Serve (options of `atommem serve`)", _serve),
}


def job_parser(name: str) -> argparse.ArgumentParser:
    job = JOBS[name]
    parser = argparse.ArgumentParser(prog=f"jobs/{name}.py", description=job.help)
    parser.add_argument("--config", required=True, help="YAML config (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="dotted config override, repeatable, e.g. --set grpo.lr=1e-6")
    job.add_arguments(parser)
    return parser


def run(name: str, argv: list[str]) -> object:
    """Parse `argv` for job `name`, load the config, join/start Ray when the job needs it, run the job."""
    if name in CLI_JOBS:
        return CLI_JOBS[name].main(argv)
    job = JOBS[name]
    args = job_parser(name).parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if job.needs_ray:
        from atommem import runtime

        runtime.init_ray(cfg.cluster)
    _print_result(job.run(args, cfg))
    return 0


def main(name: str, argv: list[str] | None = None) -> int:
    """Entry point of `jobs/<name>.py`: user errors print one line and exit 2 (no traceback)."""
    from atommem.errors import run_user_facing

    argv = sys.argv[1:] if argv is None else argv
    return run_user_facing(lambda: run(name, argv))
