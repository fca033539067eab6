"""GRPO alone, from the SFT models a sweep left: the demo's GRPO phase per seed and its dev EM.

GRPO's gain over the same SFT model varies by seed, and a full demo per setting costs 13-16 minutes a seed. This
probe starts each seed's GRPO from `DIR/seed-S/sft/model` (a sweep's run dir, `atommem demo --seeds ...
--run-dir DIR`) with the config at that seed (`atommem demo --seeds` varies it the same way) and the `--set`
overrides, runs it for the config's GRPO time, keeps the best validation step as the demo does, and scores that
model on the dev questions the demo scores. Two GRPO settings thus meet the same SFT models; the SFT score to
compare with is in `DIR/seed-S/report.json`. GRPO's budget is time, so compare runs of one machine, alone on it.

Prints one JSON object (per seed: steps, the kept step, the validation curve, dev EM) and writes it with a
Markdown table to `--out`.
Usage: python bench/grpo_probe.py --from-run DIR [--config configs/tiny_cpu.yaml] [--seeds 0-3]
       [--out runs/grpo_probe] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from copy_probe import seed_list

from atommem.config import load_config
from atommem.demo import DEFAULT_CONFIG
from atommem.sweep import seed_overrides
from atommem.tracking import RunLogger


def probe_seed(config: str, overrides: list[str], seed: int, from_run: Path, out: Path) -> dict:
    from atommem.errors import UserError
    from atommem.trainer.grpo import GRPOTrainer
    from atommem.trainer.inputs import dev_samples, val_samples

    sft_model, run_dir = from_run / f"seed-{seed}" / "sft" / "model", out / f"seed-{seed}"
    if not (sft_model / "config.json").is_file():
        raise UserError(f"--from-run: {sft_model} is not an SFT model: give the run dir of a sweep that ran seed {seed}")
    cfg = load_config(config, [*seed_overrides(config, tuple(overrides), seed), f"trainer.run_dir={run_dir}",
                               f"model.path={sft_model}", "model.tiny=null"])
    logger = RunLogger(run_dir, cfg, tensorboard=False)
    trainer = GRPOTrainer(cfg, str(sft_model), logger)
    try:
        trainer.run(val=val_samples(cfg))
        kept = trainer.keep_best()
        dev = trainer.evaluate(dev_samples(cfg), "grpo")
    finally:
        trainer.shutdown()
        logger.close()
    sft_em = None
    report = from_run / f"seed-{seed}" / "report.json"
    if report.is_file():
        sft_em = json.loads(report.read_text())["em"].get("sft")
    return {"seed": seed, "steps": trainer.state.step, "train_s": round(trainer.state.train_seconds, 1), "kept": kept,
            "val_em": [[s, round(v, 3)] for s, v in trainer.state.val_em], "dev_em": round(dev.em, 3),
            "sft_dev_em": sft_em}


def table(results: list[dict]) -> str:
    lines = ["| seed | SFT dev EM (from the run) | GRPO dev EM | GRPO steps | step kept | validation EM per step |",
             "|---|---|---|---|---|---|"]
    for r in results:
        sft = f"{r['sft_dev_em']:.3f}" if r["sft_dev_em"] is not None else "-"
        curve = ", ".join(f"{s}: {v:.2f}" for s, v in r["val_em"])
        lines.append(f"| {r['seed']} | {sft} | {r['dev_em']:.3f} | {r['steps']} | {r['kept']} | {curve} |")
    lines += ["", f"mean GRPO dev EM {statistics.mean(r['dev_em'] for r in results):.3f} over {len(results)} seeds"]
    return "\n".join(lines) + "\n"


def main() -> None:
    from atommem.runtime import init_ray

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--from-run", type=Path, required=True, help="a sweep's run dir: DIR/seed-S/sft/model per seed")
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--seeds", default="0-3", help="'0-3' or '0,2,5'")
    p.add_argument("--out", default="runs/grpo_probe")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value (repeatable)")
    a = p.parse_args()
    out = Path(a.out)
    init_ray(load_config(a.config, a.overrides).cluster)
    results = []
    for seed in seed_list(a.seeds):
        results.append(probe_seed(a.config, a.overrides, seed, a.from_run, out))
        print(f"[grpo_probe] seed {seed}: dev EM {results[-1]['dev_em']:.3f}, step {results[-1]['kept']} of "
              f"{results[-1]['steps']} kept", flush=True)
    report = {"config": a.config, "overrides": a.overrides, "from_run": str(a.from_run), "seeds": results}
    out.mkdir(parents=True, exist_ok=True)
    (out / "grpo_probe.json").write_text(json.dumps(report, indent=2))
    (out / "grpo_probe.md").write_text(table(results))
    print(table(results))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
