"""`atommem rollout`: play N samples x n rollouts on Ray, print a summary, write trajectories to Parquet.

    atommem rollout --config configs/tiny_cpu.yaml [--set k=v ...] [--policy oracle|model]
                    [--num-samples N] [--group-size n] [--data PATH] [--out DIR]

Samples come from `--data` or `data.train` (synthesised first when that path is missing, like every
stage). The model (`model.path`, built when `model.tiny` is set and it is missing) supplies the
tokenizer for chunking and token ids, and the engines for `--policy model`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from atommem.commands.options import add_config_options, config_of
from atommem.errors import UserError


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="atommem rollout", description="play episodes on Ray and write trajectories")
    add_config_options(ap)
    ap.add_argument("--policy", choices=["model", "oracle"], help="who acts (default rollout.policy)")
    ap.add_argument("--num-samples", type=int, help="samples to play (default rollout.num_samples)")
    ap.add_argument("--group-size", type=int, help="rollouts per sample (default grpo.group_size)")
    ap.add_argument("--data", help="Parquet dir of samples (default data.train)")
    ap.add_argument("--out", help="trajectory dir (default rollout.out or <run_dir>/trajectories)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    cfg = config_of(args)
    policy = args.policy or cfg.rollout.policy
    num_samples = args.num_samples if args.num_samples is not None else cfg.rollout.num_samples
    group_size = args.group_size if args.group_size is not None else cfg.grpo.group_size
    if num_samples < 1 or group_size < 1:
        raise UserError(f"--num-samples and --group-size must be >= 1 (got {num_samples}, {group_size})")

    model_path = None
    if cfg.model.path:
        from atommem.models.tiny import ensure_model

        model_path = str(ensure_model(cfg.model, cfg.data.synth))
    elif policy == "model":
        raise UserError("--policy model needs model.path (an HF directory, or model.tiny settings to build one)")

    from atommem.data.schema import read_samples

    if args.data:
        samples = read_samples(args.data, limit=num_samples)
    else:
        from atommem.data.prepare import prepare

        samples = read_samples(prepare(cfg)["train"], limit=num_samples)

    from atommem.eval.scores import EpisodeScore, summarize
    from atommem.rollout.parquet import write_trajectories
    from atommem.rollout.play import play

    results, wall_s = play(cfg, samples, group_size, policy, model_path, progress=not args.no_progress)
    summaries = [s for _, s in results]
    summary = summarize([EpisodeScore.of(s) for s in summaries], cfg.eval.length_buckets)
    tokens = sum(s.generated_tokens for s in summaries)
    summary.update(policy=policy, wall_s=wall_s, generated_tokens=tokens,
                   episodes_per_s=len(results) / wall_s, generated_tokens_per_s=tokens / wall_s)
    out = Path(args.out or cfg.rollout.out or Path(cfg.trainer.run_dir) / "trajectories")
    write_trajectories([ref for ref, _ in results], out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    rates = "  ".join(f"{k} {v:.2f}" for k, v in summary["action_rates"].items())
    print(f"policy {policy}: {len(results)} episodes in {wall_s:.1f}s ({summary['episodes_per_s']:.2f}/s, "
          f"{summary['generated_tokens_per_s']:.0f} generated tokens/s)")
    print(f"  EM {summary['em']:.3f}   F1 {summary['f1']:.3f}   turns/episode {summary['mean_turns']:.1f}")
    print(f"  actions per turn: {rates}")
    print(f"wrote {len(results)} trajectories to {out}")
    return 0
