"""When does SFT form the value copy? The demo's data, teacher, base stage and SFT, per seed, until it has.

The demo's result rides on one skill: copying the asked value from the chunk into the `<add_memory>`. This probe
runs the demo's own stages up to SFT (tiny model per seed, teacher episodes, the base stage when the config has
one, SFT with the config's batches) and validates every `--val-every` steps on the held-out teacher episodes; a
seed's copy has formed at the first validation whose `val_full/relevant/create` (whole response right,
teacher-forced) is >= 0.9, the sweep table's rule. A seed stops there or at `--max-steps`. Seeds vary as in
`atommem demo --seeds` (trainer.seed and the tiny model's initialisation, atommem/sweep.py). No GRPO, no
evaluation: a tenth of a demo's time per seed.

Prints one JSON object (per seed: the step, the base stage's and SFT's training seconds, the curve) and writes it
with a Markdown table to `--out`.
Usage: python bench/copy_probe.py [--config configs/tiny_cpu.yaml] [--seeds 0-9] [--max-steps 1200] [--val-every 50]
       [--out runs/copy_probe] [--set key=value ...]
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


def probe_seed(config: str, overrides: list[str], seed: int, out: Path, max_steps: int, val_every: int) -> dict:
    from atommem.trainer.inputs import model_path_of
    from atommem.trainer.pretrain import base_corpus, pretrain_base
    from atommem.trainer.sft import SFTData, SFTTrainer, collect_teacher

    run_dir = out / f"seed-{seed}"
    cfg = load_config(config, [*seed_overrides(config, tuple(overrides), seed), f"trainer.run_dir={run_dir}"])
    cfg = replace(cfg, sft=replace(cfg.sft, data=str(run_dir / "sft_data"), val_every=val_every))
    model_path = model_path_of(cfg)
    _, refs, val_refs = collect_teacher(cfg)
    logger = RunLogger(run_dir, cfg, tensorboard=False)
    corpus = base_corpus(cfg, model_path) if cfg.pretrain.steps > 0 or cfg.pretrain.mix_rows > 0 else None
    t0 = time.monotonic()
    start = str(pretrain_base(cfg, model_path, run_dir / "base" / "model", logger, corpus))
    base_s = time.monotonic() - t0
    sft = SFTTrainer(cfg, start, SFTData(refs, cfg.sft.batch_size, cfg.trainer.seed, val_refs), logger, mix=corpus)
    curve, formed = [], None
    try:
        while sft.step < max_steps and formed is None:
            sft.run(min(max_steps, sft.step + val_every))
            curve.append([sft.step, round(sft.validation.get(COPY_KEY, 0.0), 3)])
            if curve[-1][1] >= COPY_FORMED:
                formed = sft.step
    finally:
        sft.shutdown()
        logger.close()
    return {"seed": seed, "formed_at": formed, "steps": sft.step, "base_train_s": round(base_s, 1),
            "sft_train_s": round(sft.train_seconds, 1), "curve": curve}


def table(results: list[dict], max_steps: int) -> str:
    formed = [r["formed_at"] for r in results if r["formed_at"] is not None]
    lines = ["| seed | copy formed at SFT step | SFT s | base stage s |", "|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['formed_at'] if r['formed_at'] is not None else f'not by {max_steps}'} | "
              f"{r['sft_train_s']} | {r['base_train_s']} |" for r in results]
    lines += ["", f"formed: {len(formed)} of {len(results)} seeds"
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
    p.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value (repeatable)")
    a = p.parse_args()
    out = Path(a.out)
    cfg = load_config(a.config, a.overrides)
    init_ray(cfg.cluster)
    results = []
    for seed in seed_list(a.seeds):
        results.append(probe_seed(a.config, a.overrides, seed, out, a.max_steps, a.val_every))
        print(f"[copy_probe] seed {seed}: formed at {results[-1]['formed_at']}", flush=True)
    report = {"config": a.config, "overrides": a.overrides, "max_steps": a.max_steps, "val_every": a.val_every,
              "rule": f"{COPY_KEY} >= {COPY_FORMED}", "seeds": results}
    out.mkdir(parents=True, exist_ok=True)
    (out / "copy_probe.json").write_text(json.dumps(report, indent=2))
    (out / "copy_probe.md").write_text(table(results, a.max_steps))
    print(table(results, a.max_steps))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
