"""`make demo`: the embedded default, a tiny end-to-end SFT -> GRPO -> eval run on local Ray and CPU.

1. synthesise train/dev data and build the tiny tokenizer + model;
2. a deliberately weak oracle teacher plays episodes (its most likely operation is wrong in recognisable
   states, e.g. it adds a stale duplicate on revisions of some attributes: reinforcement learning then has
   a decision to improve);
3. the base stage when `pretrain.steps` > 0 (a tiny random model learns to copy from its context on the task's
   documents, as a pretrained LLM arrives able to), then SFT on the teacher's trajectories on the learner group;
4. GRPO from the SFT model (rollouts on Ray, DeepSpeed learner, weight broadcast), scored on a validation
   split (`data.val`, held out from train and dev) on the way; the best validation step is kept;
5. the control: SFT trained on from the same checkpoint for GRPO's wall time;
6. greedy dev evaluation of all three on the same episodes, the scripted workflows and the teacher on
   them too, paired bootstrap by episode, report + plots (action rates per turn state included);
   with `eval.length_factors`, GRPO, the scripted workflows and the oracle also on longer contexts than
   trained on (`eval/lengths.py`).

With `configs/tiny_cpu_overwrite.yaml` the same pipeline trains MemAgent's overwrite-only action set (the
scripted MemAgent teaches it); `compare_demos` (`atommem compare-demos`) pairs two runs on their dev episodes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from atommem.baselines import BASELINES, SCRIPTED
from atommem.config import Config, load_config, save_config
from atommem.learner.pretrain import PROMPT_RECALL_LABEL
from atommem.tracking import RunLogger, plot_series, read_metrics

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny_cpu.yaml"
# the fixed workflows GRPO must beat: every scripted baseline of the registry (the oracle is scored too, as
# the upper bound, but is no baseline)
SCRIPTED_BASELINES = tuple(name for name in BASELINES if name in SCRIPTED)


def _with(cfg: Config, **sections) -> Config:
    """A copy of `cfg` with some fields of some sections replaced: _with(cfg, model={"path": p})."""
    out = dataclasses.replace(cfg)
    for name, changes in sections.items():
        setattr(out, name, dataclasses.replace(getattr(cfg, name), **changes))
    return out


def _rates(ev) -> dict:
    return {k: round(v, 4) for k, v in ev.summary["action_rates"].items()}


def run_demo(run_dir: str | Path, config: str | Path = DEFAULT_CONFIG, overrides: tuple[str, ...] = ()) -> Path:
    from atommem.eval.evaluate import evaluate_policies, evaluation_runners, run_eval
    from atommem.eval.lengths import length_splits
    from atommem.eval.scores import paired_bootstrap_diff
    from atommem.runtime import init_ray
    from atommem.trainer.grpo import GRPOTrainer, eval_record
    from atommem.trainer.inputs import dev_samples, model_path_of, val_samples
    from atommem.trainer.pretrain import base_corpus, pretrain_base
    from atommem.trainer.sft import SFTData, SFTTrainer, collect_teacher, scripted_teacher

    t_start = time.monotonic()
    run_dir = Path(run_dir)
    cfg = load_config(config, list(overrides))
    cfg = _with(cfg, trainer={"run_dir": str(run_dir)})
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    logger = RunLogger(run_dir, None, tensorboard=cfg.trainer.tensorboard)
    timings: dict[str, float] = {}

    def lap(name: str, t0: float) -> None:
        timings[name] = round(time.monotonic() - t0, 1)
        print(f"[demo] {name}: {timings[name]:.1f}s", flush=True)

    t0 = time.monotonic()
    dev = dev_samples(cfg)
    val = val_samples(cfg)
    base_model = model_path_of(cfg)
    longer = length_splits(cfg, base_model, len(dev))
    init_ray(cfg.cluster)
    lap("data+model", t0)

    t0 = time.monotonic()
    teacher_data = run_dir / "sft_data"
    _, teacher_refs, val_refs = collect_teacher(_with(cfg, sft={"data": str(teacher_data)}))
    lap("teacher", t0)

    # The base stage (pretrain.*): the random tiny model learns to copy from its context on the task's documents
    # (with pretrain.prompt_share, inside the teacher's prompts), as a pretrained LLM arrives able to, before SFT
    # imitates the teacher (restated documents also join every SFT step).
    t0 = time.monotonic()
    corpus = (base_corpus(cfg, base_model, teacher_data) if cfg.pretrain.steps > 0 or cfg.pretrain.mix_rows > 0
              else None)
    sft_start, base_stage = pretrain_base(cfg, base_model, run_dir / "base" / "model", logger, corpus)
    lap("base", t0)

    # SFT; its full learner state is saved so the control can train on from exactly here.
    t0 = time.monotonic()
    data = SFTData(teacher_refs, cfg.sft.batch_size, cfg.trainer.seed, val_refs)
    sft = SFTTrainer(cfg, str(sft_start), data, logger, mix=corpus)
    try:
        sft_steps = sft.run(cfg.sft.steps, cfg.sft.time_budget_s, until_bar=True)
        sft_stopped_by = sft.stopped_by
        sft_kept = sft.keep_best() if cfg.sft.keep_best else sft_steps
        training = {**({"base": base_stage["train_seconds"]} if base_stage else {}), "sft": sft.train_seconds}
        sft_model = sft.save(run_dir / "sft")
        sft_validation = sft.validation
    finally:
        sft.shutdown()
    lap("sft", t0)

    # GRPO from the SFT model. The validation curve (data.val, at the start, every trainer.eval_every steps
    # and after the last) is measured on the live engines and excluded from its training time; its best step
    # is the GRPO model. Dev is scored before (SFT) and after (the kept model), never while selecting.
    gcfg = _with(cfg, model={"path": str(sft_model), "tiny": None})
    trainer = GRPOTrainer(gcfg, str(sft_model), logger)
    t0 = time.monotonic()

    def print_step(record: dict) -> None:
        val_em = f" val em {record['val_em']:.3f}" if "val_em" in record else ""
        print(f"[grpo] step {trainer.state.step} reward {record['reward_mean']:.3f} em {record['em']:.3f}{val_em} "
              f"kl {record.get('kl', 0):.4f} {record['step_s']:.1f}s", flush=True)

    try:
        ev_sft = trainer.evaluate(dev, "sft")
        logger.log(0, eval_record(ev_sft), phase="grpo")
        trainer.run(val=val, on_step=print_step)
        grpo_seconds = trainer.state.train_seconds
        grpo_steps = trainer.state.step
        kept_step = trainer.keep_best()
        ev_grpo = trainer.evaluate(dev, "grpo")
        grpo_model = trainer.learner.save_hf(str(run_dir / "grpo" / "model"))
        val_em = [[int(step), em] for step, em in trainer.state.val_em]
    finally:
        trainer.shutdown()
    lap("grpo", t0)

    # Control: SFT trained on from the SFT checkpoint (optimizer and data position included) for GRPO's time.
    t0 = time.monotonic()
    control = SFTTrainer(cfg, str(sft_start), data, logger, phase="sft_control", mix=corpus)
    try:
        control.resume(run_dir / "sft" / "checkpoint")
        ctrl_steps = control.run(sft_kept + 10**9, grpo_seconds)
        ctrl_kept = control.keep_best() if cfg.sft.keep_best else ctrl_steps
        training.update(grpo=grpo_seconds, control=control.train_seconds)
        ctrl_model = control.save(run_dir / "sft_control")
        ctrl_validation = control.validation
    finally:
        control.shutdown()
    lap("control", t0)

    # The control on dev (an engine and a runner) while the scripted workflows, the oracle and the teacher
    # play the same dev episodes in this process (no model; chunked by the policy's tokenizer exactly as
    # the model's episodes are): the two share nothing but the cores. The GRPO model plays the longer splits
    # (eval.length_factors) beside the control, on an engine of its own (GRPO's engines, learner and runners
    # held every CPU Ray has), and the scripted ones and the oracle play them after dev.
    t0 = time.monotonic()
    with ThreadPoolExecutor(2, thread_name_prefix="model-eval") as pool:
        control_eval = pool.submit(evaluate_policies, cfg, str(ctrl_model), dev, ["atommem"], tag="control", progress=False)
        longer_grpo = [pool.submit(evaluate_policies, split.cfg, str(grpo_model), split.samples, ["atommem"],
                                   tag=f"grpo-x{split.factor}", progress=False) for split in longer]
        scripted = evaluate_policies(cfg, base_model, dev, [*SCRIPTED_BASELINES, "oracle"], tag="baselines", progress=False)
        ev_teacher = None
        teacher = scripted_teacher(cfg)
        if teacher is not None:
            with evaluation_runners(cfg, teacher[0], base_model, policy_kwargs=teacher[1]) as runners:
                ev_teacher = run_eval(runners, cfg, dev, "teacher", tag="teacher")
        longer_scripted = [evaluate_policies(split.cfg, base_model, split.samples, [*SCRIPTED_BASELINES, "oracle"],
                                             tag=f"baselines-x{split.factor}", progress=False) for split in longer]
        (ev_ctrl,) = control_eval.result()
        length_evals = [_length_eval(split, grpo.result()[0], others, ev_grpo.em, cfg.trainer.seed)
                        for split, grpo, others in zip(longer, longer_grpo, longer_scripted)]
    lap("evaluation", t0)
    best = _best_baseline(scripted)

    a, b, c = ev_sft.correct_by_episode(), ev_grpo.correct_by_episode(), ev_ctrl.correct_by_episode()
    n_questions = ev_sft.summary["questions"]
    d_sft, lo_sft, hi_sft = paired_bootstrap_diff(b, a, seed=cfg.trainer.seed)
    d_ctrl, lo_ctrl, hi_ctrl = paired_bootstrap_diff(b, c, seed=cfg.trainer.seed)
    d_base, lo_base, hi_base = paired_bootstrap_diff(b, best.correct_by_episode(), seed=cfg.trainer.seed)
    named = {"teacher": ev_teacher, "sft": ev_sft, "grpo": ev_grpo, "sft_control": ev_ctrl}
    report = {
        "seed": cfg.trainer.seed,
        "action_set": cfg.env.action_set,
        "teacher": cfg.sft.teacher,
        "dev_questions": n_questions,
        "dev_episodes": ev_sft.summary["episodes"],
        "em": {"sft": ev_sft.em, "grpo": ev_grpo.em, "sft_control": ev_ctrl.em},
        # per dev sample id, its questions' correctness: what `atommem compare-demos` pairs across runs
        "correct_by_episode": {"sft": a, "grpo": b, "sft_control": c},
        "grpo_minus_sft": {"diff": d_sft, "ci95": [lo_sft, hi_sft]},
        "grpo_minus_control": {"diff": d_ctrl, "ci95": [lo_ctrl, hi_ctrl]},
        "grpo_minus_best_baseline": {"policy": best.policy, "diff": d_base, "ci95": [lo_base, hi_base]},
        "scripted_em": {r.policy: r.em for r in scripted},
        "teacher_em": ev_teacher.em if ev_teacher is not None else None,
        "action_rates": {"sft": _rates(ev_sft), "grpo": _rates(ev_grpo), "sft_control": _rates(ev_ctrl)},
        # which GRPO step is the GRPO model: the validation argmax (data.val, never dev)
        "grpo_selection": {"kept_step": kept_step, "val_em": val_em, "val_samples": len(val),
                           "val_questions": sum(len(s.questions) for s in val),
                           "rule": "highest validation EM (greedy), the earliest step on a tie; step 0 is the SFT model"},
        # GRPO, the scripted workflows and the oracle at eval.length_factors x the training documents
        "length_evals": length_evals,
        "provenance": _provenance(),
        # the base stage ({} without one): its steps, training seconds and recall probe ([step, share right])
        "base_stage": base_stage,
        # teacher-forced on sft.val_episodes held-out teacher episodes: which decisions imitation has learned
        "sft_validation": {"episodes": len(val_refs), "sft": sft_validation, "sft_control": ctrl_validation},
        # operations per turn of each turn state (revision / relevant / distractor / answer on the revisions task)
        "state_action_rates": {k: ev.summary["state_action_rates"] for k, ev in named.items() if ev is not None},
        # Sampled (temperature 1) EM of the rollouts: at step 1 it is the SFT policy's own, which is the
        # signal GRPO starts from even where greedy SFT scores nothing.
        "rollout_em": _rollout_em(run_dir),
        "rollout_temperature": cfg.sampling.temperature,
        "grpo_steps": grpo_steps,
        "grpo_train_seconds": round(grpo_seconds, 2),
        "sft_steps": sft_steps,
        "sft_stopped_by": sft_stopped_by,
        "sft_kept_step": sft_kept,  # the SFT model's step: sft_steps, or its best validation's with sft.keep_best
        "control_sft_steps": ctrl_steps - sft_kept,
        "control_kept_step": ctrl_kept,
        "timings_s": timings,
        # the steps' own wall time (SFT and control without validation, GRPO without its dev curve); the rest
        # of total_s is starting, evaluating, validating and saving
        "training_s": {k: round(v, 2) for k, v in training.items()},
        "total_s": round(time.monotonic() - t_start, 1),
    }
    logger.close()
    _write_report(run_dir, report)
    print(f"report: {run_dir / 'report.md'}")
    print(f"dev EM: SFT {ev_sft.em:.3f} -> GRPO {ev_grpo.em:.3f} "
          f"(n={n_questions} questions, 95% CI of diff {_ci(lo_sft, hi_sft)})")
    print(f"dev EM: SFT trained on for the same time {ev_ctrl.em:.3f} "
          f"(GRPO - control {d_ctrl:+.3f}, 95% CI {_ci(lo_ctrl, hi_ctrl)})")
    print(f"dev EM: best scripted baseline {best.policy} {best.em:.3f} "
          f"(GRPO - baseline {d_base:+.3f}, 95% CI {_ci(lo_base, hi_base)})")
    for ev in length_evals:
        base = ev["grpo_minus_best_baseline"]
        print(f"dev EM at {ev['factor']}x the documents ({ev['doc_num']}, env.chunk_by {ev['chunk_by']}): GRPO "
              f"{ev['em']['grpo']:.3f} ({_ratio(ev['grpo_over_1x'])} of 1x), best scripted baseline {base['policy']} "
              f"{ev['em'][base['policy']]:.3f} (GRPO - baseline {base['diff']:+.3f}, 95% CI {_ci(*base['ci95'])})")
    return run_dir / "report.md"


def _best_baseline(results: list):
    """The best-scoring scripted workflow among `results` (the oracle is the upper bound, no baseline)."""
    return max((r for r in results if r.policy in SCRIPTED_BASELINES), key=lambda r: r.em)


def _length_eval(split, grpo, scripted: list, grpo_em_1x: float, seed: int) -> dict:
    """The report's entry for one longer length: every policy's EM there, GRPO against the best scripted
    workflow there (paired bootstrap by episode) and GRPO's EM as a share of its 1x dev EM."""
    from atommem.eval.scores import paired_bootstrap_diff

    best = _best_baseline(scripted)
    diff, lo, hi = paired_bootstrap_diff(grpo.correct_by_episode(), best.correct_by_episode(), seed=seed)
    return {
        **split.describe(),
        "questions": grpo.summary["questions"],
        "em": {"grpo": grpo.em, **{r.policy: r.em for r in scripted}},
        "grpo_over_1x": grpo.em / grpo_em_1x if grpo_em_1x else None,
        "grpo_minus_best_baseline": {"policy": best.policy, "diff": diff, "ci95": [lo, hi]},
        "grpo_action_rates": _rates(grpo),
        "grpo_state_action_rates": grpo.summary["state_action_rates"],
    }


def _provenance() -> dict:
    """The commit (with `-dirty` for uncommitted changes) and the CPU a run came from: every reported number
    names them."""
    import platform
    import subprocess

    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    if commit and git("status", "--porcelain", "--untracked-files=no"):
        commit += "-dirty"
    cpu = platform.processor() or None
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    return {"commit": commit, "cpu": cpu, "cpus": os.cpu_count()}


# (state, kind) series of the GRPO rollouts plotted over steps: where the paper's direction should show
_STATE_SERIES = (("revision", "update"), ("revision", "create"), ("revision", "delete"), ("relevant", "create"),
                 ("distractor", "create"))


MODELS = ("sft", "grpo", "sft_control")  # the models a demo run scores on dev


def compare_demos(run_a: str | Path, run_b: str | Path, model: str = "grpo") -> dict:
    """`model` of two demo runs (e.g. the atomic and the overwrite action set, `configs/tiny_cpu_overwrite.yaml`)
    on the same dev episodes: each one's EM and B - A with its paired bootstrap CI; printed and returned."""
    from atommem.errors import UserError
    from atommem.eval.scores import paired_bootstrap_diff

    if model not in MODELS:
        raise UserError(f"compare-demos --model must be one of {', '.join(MODELS)}, got {model!r}")
    runs = [Path(run_a), Path(run_b)]
    reports = []
    for run in runs:
        path = run / "report.json"
        if not path.is_file():
            raise UserError(f"{path} not found: give the run dir of a finished `atommem demo`")
        report = json.loads(path.read_text())
        if "correct_by_episode" not in report:
            raise UserError(f"{path} has no per-episode results (a demo from before they were recorded): rerun atommem demo")
        reports.append(report)
    correct = [r["correct_by_episode"][model] for r in reports]
    if set(correct[0]) != set(correct[1]):
        raise UserError(f"{runs[0]} and {runs[1]} were scored on different dev episodes (data.dev or data.dev_samples differ)")
    diff, lo, hi = paired_bootstrap_diff(correct[1], correct[0], seed=reports[1]["seed"])
    out = {
        "model": model,
        "questions": sum(len(v) for v in correct[0].values()),
        "runs": [{"run_dir": str(run), "action_set": r["action_set"], "em": r["em"][model]}
                 for run, r in zip(runs, reports)],
        "b_minus_a": {"diff": diff, "ci95": [lo, hi]},
    }
    a, b = out["runs"]
    print(f"dev EM ({model}): {a['action_set']} {a['em']:.3f} ({a['run_dir']}) vs {b['action_set']} {b['em']:.3f} "
          f"({b['run_dir']}): {b['action_set']} - {a['action_set']} {diff:+.3f}, 95% CI {_ci(lo, hi)} "
          f"(n={out['questions']} questions)")
    return out


_STOPPED = {"bar": ": its held-out decisions passed sft.until_full", "time": ": sft.time_budget_s ran out",
            "signal": ": stopped by a signal"}  # why SFT ended, where not at sft.steps


def _kept(kept: int, last: int) -> str:
    """", kept step N: its best validation" where sft.keep_best rewound a model from its `last` step."""
    return f", kept step {kept}: its best validation" if kept != last else ""


def _ci(lo: float, hi: float) -> str:
    return f"[{lo:+.3f}, {hi:+.3f}]"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _rollout_em(run_dir: Path) -> dict:
    ems = [r["em"] for r in read_metrics(run_dir / "metrics.jsonl") if r.get("phase") == "grpo" and "em" in r]
    return {"first_step": ems[0], "last_step": ems[-1]} if ems else {}


def _base_lines(base: dict) -> list[str]:
    """The report's base-stage paragraph (none without the stage)."""
    if not base:
        return []
    curve = ", ".join(f"{recall:.2f} at {step}" for step, recall in base["recall"])
    in_prompts = base.get("recall_probe") == PROMPT_RECALL_LABEL
    probe = ("the last word of a sentence of a read prompt's chunk, after the prompt and the rest of the sentence"
             if in_prompts else "the last word of a sentence of a document, after the rest of it")
    return [
        f"## Base stage (next-token training on the task's {'read prompts, each chunk' if in_prompts else 'documents, each'} restated)",
        "",
        f"{base['steps']} steps in {base['train_seconds']:.1f} s. Recall probe ({probe}, teacher-forced): "
        f"{curve or 'not evaluated'}.",
        "",
    ]


def _validation_lines(val: dict) -> list[str]:
    """The report's SFT validation table: per turn state / teacher action, after SFT and after the control."""
    sft, ctrl = val["sft"], val["sft_control"]
    labels = [k.split("/", 1)[1] for k in sft if k.startswith("val_rows/")]
    if not labels:
        return []
    return [
        f"## SFT validation (teacher-forced on {val['episodes']} held-out teacher episodes)",
        "",
        "Share of held-out teacher turns where the model's argmax is the teacher's first token (the operation)",
        "and every token (the whole response), by turn state / teacher's action.",
        "",
        "| turn / action | rows | SFT first | SFT whole | control first | control whole |",
        "|---|---|---|---|---|---|",
        *[f"| {x} | {sft[f'val_rows/{x}']:.0f} | {sft[f'val_first/{x}']:.3f} | {sft[f'val_full/{x}']:.3f} | "
          f"{ctrl.get(f'val_first/{x}', 0):.3f} | {ctrl.get(f'val_full/{x}', 0):.3f} |" for x in labels],
        "",
    ]


def _selection_lines(report: dict) -> list[str]:
    sel = report["grpo_selection"]
    return [
        f"The GRPO model is step {sel['kept_step']} of {report['grpo_steps']}: the {sel['rule']}, on "
        f"{sel['val_questions']} questions of {sel['val_samples']} validation samples held out from train and dev.",
        f"Validation EM per step: {', '.join(f'{step}: {em:.3f}' for step, em in sel['val_em'])}.",
        "",
    ]


def _length_lines(report: dict) -> list[str]:
    """The report's table of the longer-than-trained evaluations (none without eval.length_factors)."""
    evals = report["length_evals"]
    if not evals:
        return []
    policies = [p for p in evals[0]["em"] if p != "grpo"]
    kinds = sorted({k for e in evals for k in e["grpo_action_rates"]})
    return [
        "## Longer than trained (fresh dev samples, greedy)",
        "",
        f"Documents per sample x factor (trained on {evals[0]['doc_num'] // evals[0]['factor']}); chunked as trained "
        f"(env.chunk_by {evals[0]['chunk_by']}, env.chunk_tokens {evals[0]['chunk_tokens']}), env.max_chunks raised so "
        "no context is cut. GRPO / 1x: its EM here over its dev EM.",
        "",
        f"| factor | documents | max_chunks | questions | GRPO | GRPO / 1x | {' | '.join(policies)} | GRPO - best baseline, 95% CI |",
        "|---|---|---|---|---|---|" + "---|" * len(policies) + "---|",
        *[_length_row(e, policies) for e in evals],
        "",
        "GRPO's operations per turn at these lengths (error: format or action errors):",
        "",
        f"| factor | {' | '.join(kinds)} |",
        "|---|" + "---|" * len(kinds),
        *[f"| {e['factor']}x | " + " | ".join(f"{e['grpo_action_rates'].get(k, 0):.3f}" for k in kinds) + " |" for e in evals],
        "",
    ]


def _length_row(e: dict, policies: list[str]) -> str:
    base = e["grpo_minus_best_baseline"]
    ems = " | ".join(f"{e['em'][p]:.3f}" for p in policies)
    return (f"| {e['factor']}x | {e['doc_num']} | {e['max_chunks']} | {e['questions']} | {e['em']['grpo']:.3f} | "
            f"{_ratio(e['grpo_over_1x'])} | {ems} | {base['diff']:+.3f} {_ci(*base['ci95'])} ({base['policy']}) |")


def _write_report(run_dir: Path, report: dict) -> None:
    from atommem.eval.report import plot_state_rates, state_rates_table

    (run_dir / "report.json").write_text(json.dumps(report, indent=2))
    rows = read_metrics(run_dir / "metrics.jsonl")
    by_state = report["state_action_rates"]
    plots = [
        plot_series(rows, ["reward_mean", "em"], run_dir / "grpo_reward.png", "GRPO rollouts: reward and EM per step", phase="grpo"),
        plot_series(rows, ["val_em"], run_dir / "val_em_curve.png", "Validation EM (greedy) during GRPO: the kept step is its best",
                    phase="grpo"),
        plot_series(rows, ["rate_create", "rate_read", "rate_update", "rate_delete", "rate_answer", "rate_error"],
                    run_dir / "action_rates.png", "Action rates per turn (GRPO rollouts)", phase="grpo"),
        plot_series(rows, ["loss", "val_nll"], run_dir / "sft_loss.png", "SFT loss (train batch, held-out per token)", phase="sft"),
        plot_series(rows, [k for k in report["sft_validation"]["sft"] if k.startswith("val_full/")], run_dir / "sft_validation.png",
                    "SFT held-out teacher turns: whole response right (teacher-forced)", phase="sft"),
        plot_state_rates(by_state, run_dir / "state_rates.png", title="Operations per turn by turn state (dev, greedy)"),
        plot_series(rows, [f"rate_{st}_{k}" for st, k in _STATE_SERIES], run_dir / "grpo_state_rates.png",
                    "GRPO rollouts: operations per turn of a turn state", phase="grpo"),
    ]
    base = report["grpo_minus_best_baseline"]
    em = report["em"]
    rates = report["action_rates"]
    kinds = sorted(set(rates["sft"]) | set(rates["grpo"]))
    lines = [
        "# AtomMem demo report",
        "",
        f"Seed {report['seed']}; action set {report['action_set']} (teacher {report['teacher']}); "
        f"{report['dev_questions']} dev questions in {report['dev_episodes']} episodes; greedy decoding.",
        "",
        "| model | dev EM |",
        "|---|---|",
        f"| SFT ({report['sft_steps']} steps{_STOPPED.get(report.get('sft_stopped_by', ''), '')}{_kept(report['sft_kept_step'], report['sft_steps'])}) | {em['sft']:.3f} |",
        f"| GRPO ({report['grpo_steps']} steps, {report['grpo_train_seconds']} s) | {em['grpo']:.3f} |",
        f"| SFT trained on for the same time ({report['control_sft_steps']} more steps"
        f"{_kept(report['control_kept_step'], report['sft_kept_step'] + report['control_sft_steps'])}) | {em['sft_control']:.3f} |",
        "",
        f"GRPO - SFT: {report['grpo_minus_sft']['diff']:+.3f}, 95% CI {_ci(*report['grpo_minus_sft']['ci95'])}",
        f"GRPO - control: {report['grpo_minus_control']['diff']:+.3f}, 95% CI {_ci(*report['grpo_minus_control']['ci95'])}",
        f"GRPO - best scripted baseline ({base['policy']}): {base['diff']:+.3f}, 95% CI {_ci(*base['ci95'])}",
        "(paired bootstrap, resampling episodes)",
        "",
        *_selection_lines(report),
        *_length_lines(report),
        "## Scripted workflows and the teacher on the same dev episodes",
        "",
        "| policy | dev EM |",
        "|---|---|",
        *[f"| {name} | {value:.3f} |" for name, value in report["scripted_em"].items()],
        *([f"| teacher (scripted, the SFT data's source) | {report['teacher_em']:.3f} |"] if report["teacher_em"] is not None else []),
        "",
        *([f"GRPO rollouts (sampled, temperature {report['rollout_temperature']}): EM {report['rollout_em']['first_step']:.3f} "
           f"at step 1 (the SFT policy) -> {report['rollout_em']['last_step']:.3f} at step {report['grpo_steps']}"]
          if report["rollout_em"] else []),
        "",
        *_base_lines(report["base_stage"]),
        *_validation_lines(report["sft_validation"]),
        "## Action rates (ops per turn, dev, greedy)",
        "",
        "| action | SFT | GRPO | control |",
        "|---|---|---|---|",
        *[f"| {k} | {rates['sft'].get(k, 0):.3f} | {rates['grpo'].get(k, 0):.3f} | {rates['sft_control'].get(k, 0):.3f} |" for k in kinds],
        "",
        "## Action rates by turn state (ops per turn of that state, dev, greedy)",
        "",
        state_rates_table(by_state),
        "",
        "## Timings (s)",
        "",
        *[f"- {k}: {v}" for k, v in report["timings_s"].items()],
        f"- total: {report['total_s']}",
        f"- of which training steps: {', '.join(f'{k} {v}' for k, v in report['training_s'].items())}; "
        f"outside them: {report['total_s'] - sum(report['training_s'].values()):.1f}",
        "",
        "## Plots",
        "",
        *[f"![{p.stem}]({p.name})" for p in plots if p is not None],
    ]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")
