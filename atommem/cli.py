"""`atommem` command line: dispatches to the module that owns each subcommand (imported lazily)."""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module exposing `main(argv) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("atommem.data.cli", "synthesise, build and inspect datasets (synth | build | show)"),
    "env": ("atommem.env.cli", "play scripted responses through a MemoryEnv (replay)"),
    "model": ("atommem.models.cli", "build the tiny CPU policy and tokenizer (tiny)"),
    "rollout": ("atommem.rollout.cli", "play episodes on Ray and write trajectories"),
    "collect-sft": ("atommem.train", "play teacher episodes and keep SFT trajectories"),
    "sft": ("atommem.train", "supervised fine-tuning on teacher trajectories"),
    "train": ("atommem.train", "GRPO training: rollouts on Ray, DeepSpeed learner group"),
    "demo": ("atommem.demo", "the embedded default: tiny SFT -> GRPO -> eval on CPU"),
    "eval": ("atommem.eval.cli", "evaluate policies and baselines on a dataset"),
    "serve": ("atommem.serve.cli", "serve a trained agent over HTTP with Ray Serve"),
}


def _usage() -> str:
    lines = ["usage: atommem <command> [args]", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"atommem: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    from atommem.errors import run_user_facing

    if module.__name__ == "atommem.train":
        return run_user_facing(lambda: module.main([name, *rest]))
    return run_user_facing(lambda: module.main(rest))


if __name__ == "__main__":
    sys.exit(main())
