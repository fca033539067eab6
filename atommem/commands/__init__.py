"""The one command registry: every `atommem <command>` and every `jobs/<job>.py` resolves here.

A command is a `main(argv) -> int` in a module of this package; it parses its own options (every one takes
`--config` plus repeatable `--set key=value`), joins the Ray cluster it runs in when it needs Ray
(`ray job submit` sets RAY_ADDRESS; run directly it starts a local Ray) and calls the library. A job is a
command run as a `ray job submit` entry point, with the same options, so the same command line works on a
laptop and on a cluster:

    atommem train --config configs/tiny_cpu.yaml --set trainer.steps=2
    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/train_grpo.py --config configs/qwen3_8b_grpo.yaml --resume
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    target: str  # "module:function" of its main(argv) -> int
    help: str
    job: str | None = None  # the jobs/<job>.py entry point that runs it on a cluster
    job_args: tuple[str, ...] = ()  # arguments the job puts before the user's
    drains: bool = False  # on SIGTERM/SIGINT it finishes the work in flight and exits 0 (see stopping.py)


COMMANDS: dict[str, Command] = {
    "data": Command("atommem.commands.data:main", "synthesise, build, prepare and inspect datasets (synth | build | prepare | show)",
                    job="prepare_data", job_args=("prepare",)),
    "env": Command("atommem.commands.env:main", "play scripted responses through a MemoryEnv (replay)"),
    "model": Command("atommem.commands.model:main", "build the tiny CPU policy and tokenizer (tiny)"),
    "rollout": Command("atommem.commands.rollout:main", "play episodes on Ray and write trajectories", job="rollout"),
    "collect-sft": Command("atommem.commands.training:collect_sft", "play teacher episodes and keep SFT trajectories",
                           job="collect_sft"),
    "sft": Command("atommem.commands.training:sft", "supervised fine-tuning on teacher trajectories", job="train_sft",
                   drains=True),
    "train": Command("atommem.commands.training:train", "GRPO training: rollouts on Ray, DeepSpeed learner group",
                     job="train_grpo", drains=True),
    "demo": Command("atommem.commands.demo:main", "the embedded default: tiny SFT -> GRPO -> eval on CPU"),
    "compare-demos": Command("atommem.commands.demo:compare_main", "one model of two demo runs on the same dev episodes, paired CI"),
    "eval": Command("atommem.commands.eval:main", "evaluate policies and baselines on a dataset", job="evaluate"),
    "serve": Command("atommem.commands.serve:main", "serve a trained agent over HTTP with Ray Serve", job="serve",
                     drains=True),
}
JOBS: dict[str, str] = {c.job: name for name, c in COMMANDS.items() if c.job}  # job -> command


def usage() -> str:
    lines = ["usage: atommem <command> [args]", "", "commands:"]
    lines += [f"  {name:<14} {c.help}" for name, c in COMMANDS.items()]
    return "\n".join(lines)


def run_command(name: str, argv: list[str]) -> int:
    """Run command `name`; user errors print one `error: ...` line and exit 2 (no traceback). SIGTERM and
    SIGINT let a draining command finish its work in flight and exit 0; others stop at once (130)."""
    from atommem.errors import run_user_facing
    from atommem.stopping import stop_on_signals

    command = COMMANDS[name]
    module, _, function = command.target.partition(":")
    main = getattr(importlib.import_module(module), function)
    with stop_on_signals(drain=command.drains):
        return run_user_facing(lambda: main(argv))


def run_job(job: str, argv: list[str]) -> int:
    """Entry point of `jobs/<job>.py`: the command it names, with its leading arguments."""
    name = JOBS[job]
    return run_command(name, [*COMMANDS[name].job_args, *argv])
