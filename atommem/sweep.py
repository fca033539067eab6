"""`atommem demo --seeds 0,1,2,3,4`: the demo once per seed, then one table of every seed: the evidence is the
sweep and its pass count, not one seed that happened to pass.

Each seed runs in `<run-dir>/seed-S` with `trainer.seed=S`, and, when the config builds a tiny model, with
`model.tiny.seed=S` at a model path of its own. Why both: a tiny policy starts from random weights, and the
step at which SFT forms the value copy varied from ~750 to >2,250 with the initialisation as much as with the
batch order (README); a sweep over `trainer.seed` alone would draw one initialisation five times and call it
five seeds. The task stays fixed (`data.synth.seed`): every seed is scored on the same dev episodes and the
same validation split, so what varies is everything training draws (the model's initialisation, the teacher's
choices, SFT's batch order, GRPO's rollouts), not what it is judged on. A model directory is built once per
seed and reused by later sweeps with the same settings (`models/tiny.py` refuses one built otherwise).

A seed that fails is recorded (`seed-S/error.txt`, its traceback) and the sweep goes on. `sweep_table` builds
the table from the seed directories alone, so `atommem demo --table-only` gives one table of a sweep that was
interrupted or run in pieces (`--seeds 0,1` today, `--seeds 2,3,4` tomorrow, into the same run dir).
"""

from __future__ import annotations

import json
import re
import traceback
from pathlib import Path

import yaml

from atommem.config import load_config
from atommem.demo import DEFAULT_CONFIG, run_demo
from atommem.errors import UserError
from atommem.tracking import read_metrics

SEED_DIR = re.compile(r"^seed-(\d+)$")
ERROR_FILE = "error.txt"

# The pass rule of a seed (issue 35's "Done when"); the table states it.
MIN_QUESTIONS = 500  # dev questions: below this the CI's half-width (~±0.05) is the size of every effect seen
MAX_MINUTES = 20.0  # the whole demo run, start to report
COPY_KEY = "val_full/relevant/create"  # held-out whole-response accuracy on adds of a relevant fact: the value copy
COPY_FORMED = 0.9  # ...formed at the first SFT validation at or above this
LENGTH_FACTOR = 4  # the longer-than-trained evaluation the rule reads (eval.length_factors must include it)
LENGTH_KEEP = 0.9  # GRPO's EM there must be at least this share of its 1x dev EM
PASS_RULE = (f"greedy SFT > 0; GRPO - SFT, GRPO - control and GRPO - best scripted baseline each with 95% CI low > 0; "
             f">= {MIN_QUESTIONS} dev questions; <= {MAX_MINUTES:g} minutes; update per revision turn higher after GRPO "
             f"than after SFT; at {LENGTH_FACTOR}x the documents GRPO keeps >= {LENGTH_KEEP} of its 1x dev EM and beats "
             f"the best scripted baseline there with 95% CI low > 0")
# what differs between the seeds of one sweep by design (everything else must match for one table)
SEED_KEYS = ("trainer.seed", "trainer.run_dir", "model.tiny.seed", "model.path")


def seed_overrides(config: str | Path, overrides: tuple[str, ...], seed: int) -> list[str]:
    """`overrides` plus what makes `seed` vary everything training draws (see the module docstring)."""
    taken = sorted({o.split("=", 1)[0].strip() for o in overrides} & {"trainer.seed", "model.tiny.seed"})
    if taken:
        raise UserError(f"--seeds sets {', '.join(taken)} per seed: drop --set {taken[0]}=...")
    cfg = load_config(config, list(overrides))
    out = [*overrides, f"trainer.seed={seed}"]
    if cfg.model.tiny is not None:
        if not cfg.model.path:
            raise UserError("model.path is not set: give the path the tiny model is built at (each seed gets '<path>-seed<S>')")
        out += [f"model.tiny.seed={seed}", f"model.path={cfg.model.path}-seed{seed}"]
    return out


def run_sweep(run_dir: str | Path, seeds: list[int], config: str | Path = DEFAULT_CONFIG,
              overrides: tuple[str, ...] = ()) -> dict:
    """The demo once per seed into `run_dir/seed-S` (a failure is recorded and the next seed runs), then the
    table of every seed directory in `run_dir` (`sweep_table`)."""
    import ray

    run_dir = Path(run_dir)
    if len(set(seeds)) != len(seeds) or not seeds:
        raise UserError(f"--seeds must name distinct seeds, got {seeds}")
    plans = {seed: seed_overrides(config, overrides, seed) for seed in seeds}  # a bad override fails before any run
    used = [f"seed-{s}" for s in seeds if (run_dir / f"seed-{s}").is_dir() and any((run_dir / f"seed-{s}").iterdir())]
    if used:
        raise UserError(f"{run_dir / used[0]} holds an earlier run ({len(used)} of the seeds do): delete it to rerun that "
                        "seed, or rebuild the table of what is there with --table-only")
    for seed in seeds:
        seed_dir = run_dir / f"seed-{seed}"
        print(f"[sweep] seed {seed}: {seed_dir}", flush=True)
        try:
            run_demo(seed_dir, config, tuple(plans[seed]))
        except Exception:
            seed_dir.mkdir(parents=True, exist_ok=True)
            (seed_dir / ERROR_FILE).write_text(traceback.format_exc())
            print(f"[sweep] seed {seed} failed ({seed_dir / ERROR_FILE}); going on", flush=True)
        finally:
            ray.shutdown()  # the next seed starts a fresh local Ray: nothing of a failed run lingers in it
    return sweep_table(run_dir)


def sweep_table(run_dir: str | Path) -> dict:
    """One row per `seed-S` directory of `run_dir` (finished, failed or incomplete), the pass count, and the
    configs' differences beyond the seed; printed, and written to `run_dir/sweep.md` and `sweep.json`."""
    run_dir = Path(run_dir)
    dirs = sorted((int(m[1]), p) for p in (run_dir.iterdir() if run_dir.is_dir() else ()) if (m := SEED_DIR.match(p.name)))
    if not dirs:
        raise UserError(f"no seed-S directories in {run_dir}: run `atommem demo --seeds ... --run-dir {run_dir}` first")
    rows = [seed_row(seed, path) for seed, path in dirs]
    sweep = {
        "run_dir": str(run_dir),
        "rule": PASS_RULE,
        "passed": sum(r["passes"] for r in rows),
        "seeds": len(rows),
        "config_differences": _config_differences([p for _, p in dirs]),
        "commits": sorted({r["commit"] for r in rows if r.get("commit")}),
        "cpus": sorted({r["cpu"] for r in rows if r.get("cpu")}),
        "rows": rows,
    }
    (run_dir / "sweep.json").write_text(json.dumps(sweep, indent=2))
    text = "\n".join(_table_lines(sweep)) + "\n"
    (run_dir / "sweep.md").write_text(text)
    print(text, end="")
    return sweep


SFT_STOPPED = {"bar": "bar passed", "steps": "step cap", "time": "time cap", "signal": "signal"}  # why SFT ended (sft.until_full)


def copy_formed_step(metrics: list[dict]) -> int | None:
    """The first SFT validation step whose held-out `relevant/create` whole-response accuracy reaches
    COPY_FORMED (None: it never did, or SFT was not validated)."""
    for row in metrics:
        if row.get("phase") == "sft" and row.get(COPY_KEY, -1.0) >= COPY_FORMED:
            return int(row["step"])
    return None


def seed_row(seed: int, seed_dir: Path) -> dict:
    """A seed's row: its demo report's numbers and the pass rule's verdict, or why there are none."""
    report_file = seed_dir / "report.json"
    if not report_file.is_file():
        error = seed_dir / ERROR_FILE
        if error.is_file():
            last = [line for line in error.read_text().splitlines() if line.strip()]
            return {"seed": seed, "status": "failed", "error": last[-1] if last else "", "passes": False}
        return {"seed": seed, "status": "incomplete", "passes": False}
    r = json.loads(report_file.read_text())
    metrics = read_metrics(seed_dir / "metrics.jsonl")
    rates = r["state_action_rates"]
    longer = {e["factor"]: e for e in r.get("length_evals", [])}.get(LENGTH_FACTOR)
    row = {
        "seed": seed,
        "status": "done",
        "sft": r["em"]["sft"],
        "grpo": r["em"]["grpo"],
        "control": r["em"]["sft_control"],
        "best_baseline": r["grpo_minus_best_baseline"]["policy"],
        "best_baseline_em": r["scripted_em"][r["grpo_minus_best_baseline"]["policy"]],
        "grpo_minus_sft": r["grpo_minus_sft"],
        "grpo_minus_control": r["grpo_minus_control"],
        "grpo_minus_best_baseline": r["grpo_minus_best_baseline"],
        "questions": r["dev_questions"],
        "minutes": r["total_s"] / 60,
        "sft_steps": r["sft_steps"],
        "sft_stopped_by": r.get("sft_stopped_by", ""),
        "sft_kept_step": r.get("sft_kept_step", r["sft_steps"]),
        "copy_measured": any(COPY_KEY in m for m in metrics if m.get("phase") == "sft"),
        "copy_formed_step": copy_formed_step(metrics),
        "base_steps": r.get("base_stage", {}).get("steps"),
        "recall_formed_step": next((step for step, recall in r.get("base_stage", {}).get("recall", []) if recall >= COPY_FORMED), None),
        "grpo_steps": r["grpo_steps"],
        "kept_step": r.get("grpo_selection", {}).get("kept_step"),
        "update_per_revision": {m: rates.get(m, {}).get("revision", {}).get("update") for m in ("sft", "grpo")},
        "longer": longer and {"factor": LENGTH_FACTOR, "doc_num": longer["doc_num"], "chunk_by": longer["chunk_by"],
                              "grpo": longer["em"]["grpo"], "grpo_over_1x": longer["grpo_over_1x"],
                              "best_baseline": longer["grpo_minus_best_baseline"]["policy"],
                              "best_baseline_em": longer["em"][longer["grpo_minus_best_baseline"]["policy"]],
                              "grpo_minus_best_baseline": longer["grpo_minus_best_baseline"]},
        **{k: r.get("provenance", {}).get(k) for k in ("commit", "cpu")},
    }
    row["fails"] = failed_checks(row)
    row["passes"] = not row["fails"]
    return row


def failed_checks(row: dict) -> list[str]:
    """The parts of the pass rule a finished seed's row breaks (empty: it passes)."""
    fails = []
    if not row["sft"] > 0:
        fails.append("greedy SFT scores 0")
    for key, name in (("grpo_minus_sft", "GRPO - SFT"), ("grpo_minus_control", "GRPO - control"),
                      ("grpo_minus_best_baseline", "GRPO - best baseline")):
        if not row[key]["ci95"][0] > 0:
            fails.append(f"{name} CI low {row[key]['ci95'][0]:+.3f}")
    if row["questions"] < MIN_QUESTIONS:
        fails.append(f"{row['questions']} < {MIN_QUESTIONS} questions")
    if row["minutes"] > MAX_MINUTES:
        fails.append(f"{row['minutes']:.1f} > {MAX_MINUTES:g} min")
    upd = row["update_per_revision"]
    if upd["sft"] is None or upd["grpo"] is None or not upd["grpo"] > upd["sft"]:
        fails.append(f"update per revision turn did not rise ({_num(upd['sft'])} -> {_num(upd['grpo'])})")
    longer = row["longer"]
    if longer is None:
        fails.append(f"no {LENGTH_FACTOR}x evaluation (eval.length_factors)")
    else:
        if longer["grpo_over_1x"] is None or longer["grpo_over_1x"] < LENGTH_KEEP:
            fails.append(f"{LENGTH_FACTOR}x: GRPO keeps {_num(longer['grpo_over_1x'], '.2f')} of its 1x EM")
        if not longer["grpo_minus_best_baseline"]["ci95"][0] > 0:
            fails.append(f"{LENGTH_FACTOR}x: GRPO - best baseline CI low {longer['grpo_minus_best_baseline']['ci95'][0]:+.3f}")
    return fails


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _diff(d: dict) -> str:
    lo, hi = d["ci95"]
    return f"{d['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _row_cells(row: dict) -> list[str]:
    if row["status"] != "done":
        why = f"failed: {row['error']}" if row["status"] == "failed" else "incomplete (no report.json, no error.txt)"
        return [str(row["seed"]), why.replace("|", "/"), *[""] * 16, "no"]
    copy = (f"{row['copy_formed_step']}" if row["copy_formed_step"] is not None
            else f"not formed by {row['sft_steps']}" if row["copy_measured"] else "not measured")
    recall = ("no base stage" if row["base_steps"] is None else f"{row['recall_formed_step']}"
              if row["recall_formed_step"] is not None else f"not formed by {row['base_steps']}")
    longer = row["longer"]
    upd = row["update_per_revision"]
    return [
        str(row["seed"]), f"{row['sft']:.3f}", f"{row['grpo']:.3f}", f"{row['control']:.3f}",
        f"{row['best_baseline']} {row['best_baseline_em']:.3f}",
        _diff(row["grpo_minus_sft"]), _diff(row["grpo_minus_control"]), _diff(row["grpo_minus_best_baseline"]),
        str(row["questions"]), f"{row['minutes']:.1f}", recall, copy,
        f"{row['sft_steps']}" + (f" ({SFT_STOPPED[row['sft_stopped_by']]})" if row.get("sft_stopped_by") in SFT_STOPPED else "")
        + (f", kept {row['sft_kept_step']}" if row["sft_kept_step"] != row["sft_steps"] else ""),
        f"{_num(row['kept_step'], 'd')} of {row['grpo_steps']}",
        f"{longer['grpo']:.3f} ({_num(longer['grpo_over_1x'], '.2f')})" if longer else "n/a",
        f"{longer['best_baseline']} {longer['best_baseline_em']:.3f}" if longer else "n/a",
        _diff(longer["grpo_minus_best_baseline"]) if longer else "n/a",
        f"{_num(upd['sft'])} -> {_num(upd['grpo'])}",
        "yes" if row["passes"] else "no",
    ]


def _table_lines(sweep: dict) -> list[str]:
    rows = sweep["rows"]
    chunk_by = sorted({r["longer"]["chunk_by"] for r in rows if r.get("longer")})
    header = ["seed", "SFT", "GRPO", "control", "best baseline", "GRPO - SFT [95% CI]", "GRPO - control [95% CI]",
              "GRPO - baseline [95% CI]", "n", "min", "recall formed (base step)", "copy formed (SFT step)", "SFT steps", "GRPO step kept",
              f"{LENGTH_FACTOR}x: GRPO (of 1x)", f"{LENGTH_FACTOR}x: best baseline", f"{LENGTH_FACTOR}x: GRPO - baseline [95% CI]",
              "update/revision SFT -> GRPO", "pass"]
    lines = [
        f"# Seed sweep: {sweep['run_dir']}",
        "",
        f"Commit {', '.join(sweep['commits']) or 'unknown'}; CPU {', '.join(sweep['cpus']) or 'unknown'}; "
        f"{LENGTH_FACTOR}x evaluation chunked by env.chunk_by {', '.join(chunk_by) or 'n/a'}.",
        ("Configs identical but for the seed." if not sweep["config_differences"]
         else f"Configs differ beyond the seed in: {', '.join(sweep['config_differences'])}."),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *["| " + " | ".join(_row_cells(r)) + " |" for r in rows],
        "",
        f"**{sweep['passed']} of {sweep['seeds']} seeds pass.** Rule: {sweep['rule']}. Recall formed: the first base-stage "
        f"evaluation with its recall probe >= {COPY_FORMED}. Copy formed: the first SFT validation step with held-out "
        f"`{COPY_KEY}` >= {COPY_FORMED}.",
        "",
    ]
    fails = [f"- seed {r['seed']}: {'; '.join(r['fails'])}" for r in rows if r["status"] == "done" and r["fails"]]
    return lines + (["Why a seed fails:", "", *fails, ""] if fails else [])


def _config_differences(seed_dirs: list[Path]) -> list[str]:
    """Dotted config keys whose values differ between the seeds' config.yaml beyond SEED_KEYS."""
    def flat(tree: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in tree.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    configs = [flat(yaml.safe_load(p.read_text()) or {}) for p in (d / "config.yaml" for d in seed_dirs) if p.is_file()]
    keys = set().union(*configs) - set(SEED_KEYS) if configs else set()
    return sorted(k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1)
