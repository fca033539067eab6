"""When does the tiny policy learn to copy? The demo's data, base stage and SFT, per seed, until it has.

The demo's result rides on one skill: copying the asked value from the chunk into the `<add_memory>`. This probe
runs the demo's own stages up to SFT (tiny model per seed, the base stage when the config has one, teacher
episodes, SFT with the config's batches) and validates every `--val-every` steps on the held-out teacher
episodes; a seed's copy has formed at the first validation whose `val_full/relevant/create` (whole response
right, teacher-forced) is >= 0.9, the sweep table's rule. A seed stops there or at `--max-steps` (with
`--no-stop`, at `--max-steps`; each validation's whole-response accuracy per label is in the JSON). The base
stage's own probe (`val_full/base/recall`: the last word of a sentence of a document, after the rest of it; with
`pretrain.prompt_share`, `val_full/base/prompt_recall`: the same inside a teacher read prompt; every
`pretrain.eval_every` steps) is reported the same way; `--base-only` stops after the base stage. Seeds vary as in
`atommem demo --seeds` (trainer.seed and the tiny model's initialisation, atommem/sweep.py). No GRPO, no
evaluation: a fraction of a demo's time per seed. `--from-run DIR` starts each seed's SFT from what a sweep (or
an earlier probe) left in DIR/seed-S: its base-stage model and its teacher episodes, so that an SFT setting is
compared on the same base model and data (no base stage, no teacher episodes).

Prints one JSON object (per seed: the steps, the training seconds, the curves) and writes it with a Markdown
table to `--out`.
Usage: python bench/copy_probe.py [--config configs/tiny_cpu.yaml] [--seeds 0-9] [--max-steps 1200] [--val-every 50]
       [--base-only] [--no-stop] [--from-run DIR] [--out runs/copy_probe] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

from atommem.config import load_config
from atommem.demo import DEFAULT_CONFIG
from atommem.sweep import COPY_FORMED, COPY_KEY, seed_overrides
from atommem.tracking import RunLogger


def seed_list(text: str) -> list[int]:
    """"0-9" or "0,2,5"."""
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def probe_seed(config: str, overrides: list[str], seed: int, out: Path, max_steps: int, val_every: int,
               base_only: bool = False, no_stop: bool = False, from_run: Path | None = None) -> dict:
    from atommem.errors import UserError
    from atommem.trainer.inputs import model_path_of
    from atommem.trainer.pretrain import base_corpus, pretrain_base
    from atommem.trainer.sft import SFTData, SFTTrainer, collect_teacher

    run_dir = out / f"seed-{seed}"
    cfg = load_config(config, [*seed_overrides(config, tuple(overrides), seed), f"trainer.run_dir={run_dir}"])
    cfg = replace(cfg, sft=replace(cfg.sft, data=str(run_dir / "sft_data"), val_every=val_every))
    logger = RunLogger(run_dir, cfg, tensorboard=False)
    if from_run is not None:
        start, data = from_run / f"seed-{seed}" / "base" / "model", from_run / f"seed-{seed}" / "sft_data"
        if not (start / "config.json").is_file() or not data.is_dir():
            raise UserError(f"--from-run: {from_run / f'seed-{seed}'} has no base-stage model (base/model) or teacher "
                            "episodes (sft_data): give a sweep's or a probe's run dir that ran this seed")
        corpus = base_corpus(cfg, str(start), data) if cfg.pretrain.mix_rows > 0 else None
        result = {"seed": seed, "from_run": str(from_run), "base_steps": 0, "base_train_s": 0.0, "base_recall": [],
                  "base_formed_at": None}
        sft_data = SFTData.from_path(data, cfg.sft.batch_size, cfg.trainer.seed)
    else:
        model_path = model_path_of(cfg)
        # the teacher first, as in the demo: with pretrain.prompt_share the base stage draws from its prompts
        teacher = collect_teacher(cfg) if not base_only or cfg.pretrain.prompt_share > 0 else None
        corpus = base_corpus(cfg, model_path) if cfg.pretrain.steps > 0 or cfg.pretrain.mix_rows > 0 else None
        start, base = pretrain_base(cfg, model_path, run_dir / "base" / "model", logger, corpus)
        formed = [step for step, recall in base.get("recall", []) if recall >= COPY_FORMED]
        result = {"seed": seed, "base_steps": base.get("steps", 0), "base_train_s": base.get("train_seconds", 0.0),
                  "base_recall": [[s, round(r, 3)] for s, r in base.get("recall", [])], "base_formed_at": formed[0] if formed else None}
        if base_only:
            logger.close()
            return result
        _, refs, val_refs = teacher
        sft_data = SFTData(refs, cfg.sft.batch_size, cfg.trainer.seed, val_refs)
    sft = SFTTrainer(cfg, str(start), sft_data, logger, mix=corpus)
    curve, decisions, formed_at = [], [], None
    try:
        while sft.step < max_steps and (formed_at is None or no_stop):
            sft.run(min(max_steps, sft.step + val_every))
            curve.append([sft.step, round(sft.validation.get(COPY_KEY, 0.0), 3)])
            decisions.append({"step": sft.step, **{k.split("/", 1)[1]: round(v, 3) for k, v in sft.validation.items()
                                                   if k.startswith("val_full/")}})
            if curve[-1][1] >= COPY_FORMED and formed_at is None:
                formed_at = sft.step
    finally:
        sft.shutdown()
        logger.close()
    return {**result, "formed_at": formed_at, "steps": sft.step, "sft_train_s": round(sft.train_seconds, 1), "curve": curve,
            "labels": decisions}


def table(results: list[dict], max_steps: int) -> str:
    def step(r: dict, key: str, cap: int) -> str:
        return str(r[key]) if r.get(key) is not None else f"not by {cap}"

    sft = "formed_at" in results[0]
    lines = ["| seed | base stage: recall formed at step | base steps run | base s |"
             + (" copy formed at SFT step | SFT s |" if sft else ""),
             "|---|---|---|---|" + ("---|---|" if sft else "")]
    for r in results:
        base = f"{r['from_run']}'s" if r.get("from_run") else step(r, "base_formed_at", r["base_steps"])
        row = f"| {r['seed']} | {base} | {r['base_steps']} | {r['base_train_s']} |"
        lines.append(row + (f" {step(r, 'formed_at', max_steps)} | {r['sft_train_s']} |" if sft else ""))
    key = "formed_at" if sft else "base_formed_at"
    formed = [r[key] for r in results if r.get(key) is not None]
    lines += ["", f"{'copy formed in SFT' if sft else 'recall formed in the base stage'}: {len(formed)} of {len(results)} seeds"
              + (f"; median step {statistics.median(formed):g}, max {max(formed)}" if formed else "")]
    return "\n".join(lines) + "\n"


def main() -> None:
    from atommem.runtime import init_ray

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--seeds", default="0-9", help="'0-9' or '0,2,5'")
    p.add_argument("--max-steps", type=int, default=1200)
    p.add_argument("--val-every", type=int, default=50)
    p.add_argument("--out", default="runs/copy_probe")
    p.add_argument("--base-only", action="store_true", help="the base stage only: when its recall probe passes 0.9")
    p.add_argument("--no-stop", action="store_true",
                   help="train to --max-steps after the copy forms too (each validation's labels are in the JSON)")
    p.add_argument("--from-run", type=Path, default=None,
                   help="start SFT from DIR/seed-S's base-stage model and teacher episodes (a sweep's or probe's run dir)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value (repeatable)")
    a = p.parse_args()
    if a.from_run is not None and a.base_only:
        p.error("--from-run starts SFT from a run's base stage: it has no --base-only")
    out = Path(a.out)
    cfg = load_config(a.config, a.overrides)
    init_ray(cfg.cluster)
    results = []
    for seed in seed_list(a.seeds):
        results.append(probe_seed(a.config, a.overrides, seed, out, a.max_steps, a.val_every, a.base_only, a.no_stop,
                                  a.from_run))
        r = results[-1]
        base = f"SFT from {a.from_run}'s base stage" if a.from_run else f"recall formed at base step {r['base_formed_at']}"
        print(f"[copy_probe] seed {seed}: {base}, copy at SFT step {r.get('formed_at', '(not run)')}", flush=True)
    report = {"config": a.config, "overrides": a.overrides, "from_run": str(a.from_run) if a.from_run else None,
              "max_steps": a.max_steps, "val_every": a.val_every,
              "rule": f"{COPY_KEY} >= {COPY_FORMED} (SFT); the base stage's recall probe (val_full/base/recall, or "
                      f"base/prompt_recall with pretrain.prompt_share) >= {COPY_FORMED}",
              "seeds": results}
    out.mkdir(parents=True, exist_ok=True)
    (out / "copy_probe.json").write_text(json.dumps(report, indent=2))
    (out / "copy_probe.md").write_text(table(results, a.max_steps))
    print(table(results, a.max_steps))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
