"""`make demo`'s code path end to end on a micro config: every stage runs on local Ray and the report,
plots and the closing lines come out consistent with each other (learning itself is `make demo`'s job); GRPO
selects its kept step on the validation split, never on dev; the longer-than-trained evaluation reads whole
contexts; the overwrite action set's config runs the same pipeline and pairs with it (`compare-demos`); the
seed sweep's table is built from run dirs (the micro run's, a failed one, an unfinished one) and the sweep
survives a failing seed."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import shutil
from pathlib import Path

import pytest

from atommem.demo import SCRIPTED_BASELINES, run_demo

ROOT = Path(__file__).resolve().parents[1]


def _micro(root) -> list[str]:
    """`make demo`'s config shrunk to seconds; data and model under `root`, shared by the runs of this module."""
    return [
        f"data.train={root / 'data/train'}", f"data.dev={root / 'data/dev'}",
        "data.synth.num_samples=24", "data.dev_samples=6",
        f"model.path={root / 'model'}", "model.tiny.hidden_size=32", "model.tiny.num_layers=1",
        "model.tiny.intermediate_size=64",
        "sft.teacher_episodes=12", "sft.val_episodes=6", "sft.teacher_workers=1", "sft.batch_size=2", "sft.time_budget_s=2",
        "grpo.group_size=2", "grpo.batch_groups=2", "rollout.envs_per_worker=8",
        "trainer.time_budget_s=0.01", "trainer.eval_every=1", "cluster.num_cpus=4",
        f"data.val={root / 'data/val'}", "data.val_samples=6", "eval.length_factors=[4]", "eval.length_samples=2",
        "pretrain.steps=3", "pretrain.batch_size=2", "pretrain.mix_rows=2", "pretrain.eval_every=2",
        "pretrain.until_recall=null", "pretrain.prompt_share=1.0", "sft.keep_best=true", "sft.val_every=2",
    ]


def _content(sample) -> tuple:
    return (tuple((d.title, d.text) for d in sample.documents), tuple((q.question, tuple(q.answers)) for q in sample.questions))


@pytest.fixture(scope="module")
def atomic_demo(tmp_path_factory):
    """The micro demo of the default config: (data root, report.md, what it printed)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    from atommem.trainer.grpo import GRPOTrainer
    from atommem.trainer.sft import SFTTrainer

    root = tmp_path_factory.mktemp("demo")
    printed = io.StringIO()
    # what GRPO's evaluations played, and whether inside run() (where the kept step is selected)
    evaluated: list[tuple[bool, list[tuple]]] = []
    selecting = []
    evaluate, run = GRPOTrainer.evaluate, GRPOTrainer.run
    validate, save = SFTTrainer.validate, SFTTrainer.save
    weights: list[tuple[str, str, int, str]] = []  # (event, SFT phase, step, the learner's weights digest)

    def spy_validate(self):
        weights.append(("validate", self.phase, self.step, self.learner.weights_digest()))
        return validate(self)

    def spy_save(self, out):
        weights.append(("save", self.phase, self.step, self.learner.weights_digest()))
        return save(self, out)

    def spy_evaluate(self, samples, tag):
        evaluated.append((bool(selecting), [_content(s) for s in samples]))
        return evaluate(self, samples, tag)

    def spy_run(self, *args, **kwargs):
        selecting.append(True)
        try:
            return run(self, *args, **kwargs)
        finally:
            selecting.clear()

    try:
        with contextlib.redirect_stdout(printed), pytest.MonkeyPatch.context() as mp:
            mp.setattr(GRPOTrainer, "evaluate", spy_evaluate)
            mp.setattr(GRPOTrainer, "run", spy_run)
            mp.setattr(SFTTrainer, "validate", spy_validate)
            mp.setattr(SFTTrainer, "save", spy_save)
            report_path = run_demo(root / "run", overrides=tuple(_micro(root)))
    finally:
        ray.shutdown()
    _SFT_WEIGHTS[:] = weights
    return root, report_path, printed.getvalue(), evaluated


_SFT_WEIGHTS: list[tuple[str, str, int, str]] = []  # what the atomic demo's SFT validated and saved


def test_demo_runs_every_stage_and_reports_consistently(atomic_demo):
    root, report_path, out, _ = atomic_demo
    run = root / "run"
    report = json.loads((run / "report.json").read_text())
    assert report_path == run / "report.md" and f"report: {report_path}" in out
    assert (report["action_set"], report["teacher"]) == ("atomic", "oracle")
    assert report["grpo_steps"] == 1 and report["sft_steps"] >= 1 and report["control_sft_steps"] >= 1
    n = report["dev_questions"]
    assert report["dev_episodes"] == 6 and 6 <= n <= 12
    em = report["em"]
    first = re.search(r"^dev EM: SFT (\d\.\d{3}) -> GRPO (\d\.\d{3}) \(n=(\d+) questions, 95% CI of diff \[([-+]\d\.\d{3}), ([-+]\d\.\d{3})\]\)$", out, re.M)
    second = re.search(r"^dev EM: SFT trained on for the same time (\d\.\d{3}) ", out, re.M)
    assert first and second, out
    assert (float(first[1]), float(first[2]), int(first[3])) == (round(em["sft"], 3), round(em["grpo"], 3), n)
    lo, hi = report["grpo_minus_sft"]["ci95"]
    assert lo <= report["grpo_minus_sft"]["diff"] <= hi and (float(first[4]), float(first[5])) == (round(lo, 3), round(hi, 3))
    assert float(second[1]) == round(em["sft_control"], 3)
    third = re.search(r"^dev EM: best scripted baseline (\S+) (\d\.\d{3}) \(GRPO - baseline ([-+]\d\.\d{3}), 95% CI \[([-+]\d\.\d{3}), ([-+]\d\.\d{3})\]\)$", out, re.M)
    assert third, out
    scripted = report["scripted_em"]
    assert set(scripted) == {*SCRIPTED_BASELINES, "oracle"} and third[1] in SCRIPTED_BASELINES
    assert float(third[2]) == round(scripted[third[1]], 3) == round(max(scripted[p] for p in SCRIPTED_BASELINES), 3)
    base = report["grpo_minus_best_baseline"]
    assert base["policy"] == third[1] and float(third[3]) == round(base["diff"], 3)
    assert 0.0 <= report["teacher_em"] <= 1.0
    # per-state rates of every scored model, in the report and its plot
    assert set(report["state_action_rates"]) == {"teacher", "sft", "grpo", "sft_control"}
    assert {"revision", "answer"} <= set(report["state_action_rates"]["teacher"])
    assert {"sft", "grpo", "sft_control"} == set(report["action_rates"])
    # SFT validation on the 6 held-out teacher episodes, after SFT and after the control
    val = report["sft_validation"]
    assert val["episodes"] == 6 and {"revision/update", "answer/answer"} <= {k.split("/", 1)[1] for k in val["sft"] if k.startswith("val_rows/")}
    assert val["sft_control"].keys() == val["sft"].keys() and 0.0 <= val["sft"]["val_full"] <= 1.0

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    phases = {r["phase"] for r in rows}
    (grpo_row,) = [r for r in rows if r["phase"] == "grpo" and "em" in r]
    # dev during GRPO: the SFT model's score only; the curve is on the validation split (start, every step)
    assert [r["step"] for r in rows if r["phase"] == "grpo" and "dev_em" in r] == [0]
    assert [r["step"] for r in rows if r["phase"] == "grpo" and "val_em" in r] == [0, 1]
    assert report["rollout_em"] == {"first_step": grpo_row["em"], "last_step": grpo_row["em"]}
    # training steps' own time within each phase's lap; the control trains at least as long as GRPO did
    training, laps = report["training_s"], report["timings_s"]
    assert set(training) == {"base", "sft", "grpo", "control"} and training["grpo"] == report["grpo_train_seconds"]
    assert all(0 < training[k] <= laps[k] for k in training) and training["control"] >= training["grpo"] - 0.1
    md = report_path.read_text()
    assert f"outside them: {report['total_s'] - sum(training.values()):.1f}" in md
    assert f"EM {grpo_row['em']:.3f} at step 1 (the SFT policy)" in md and f"95% CI [{lo:+.3f}, {hi:+.3f}]" in md
    assert {"base", "sft", "grpo", "sft_control"} <= phases
    # the base stage: 3 steps, its recall probe at steps 2 and 3 (the last), and SFT started from its model
    base_stage = report["base_stage"]
    assert base_stage["steps"] == 3 and [s for s, _ in base_stage["recall"]] == [2, 3]
    # with pretrain.prompt_share the base rows are the teacher's read prompts: the probe the stage reports and stops
    # on is the copy inside them, logged beside the documents' probe
    probe = base_stage["recall_probe"]
    assert probe == "base/prompt_recall"
    assert [[r["step"], r[f"val_full/{probe}"]] for r in rows if f"val_full/{probe}" in r] == base_stage["recall"]
    assert all("val_full/base/recall" in r for r in rows if f"val_full/{probe}" in r)
    assert (run / "base" / "model" / "config.json").is_file() and "## Base stage (next-token training on the task's read prompts" in md
    assert "## Action rates by turn state" in md and "| revision | update |" in md
    assert f"| revision/update | {val['sft']['val_rows/revision/update']:.0f} | {val['sft']['val_first/revision/update']:.3f} |" in md
    last = report["sft_steps"]  # validated every sft.val_every (2) steps and at the last
    assert [r["step"] for r in rows if r["phase"] == "sft" and "val_nll" in r] == sorted({*range(2, last + 1, 2), last})
    for name in ("grpo_reward.png", "action_rates.png", "sft_loss.png", "sft_validation.png", "state_rates.png",
                 "val_em_curve.png", "config.yaml"):
        assert (run / name).is_file(), name
    for model in ("sft/model", "grpo/model", "sft_control/model"):
        assert (run / model / "config.json").is_file(), model
    # per-episode results (what compare-demos pairs) agree with the EMs
    for model, by_episode in report["correct_by_episode"].items():
        assert len(by_episode) == 6 and sum(map(sum, by_episode.values())) / n == pytest.approx(em[model])


def test_grpo_keeps_the_validation_argmax_and_never_plays_dev_while_selecting(atomic_demo):
    from atommem.data.schema import read_samples
    from atommem.trainer.grpo import best_step

    root, report_path, out, evaluated = atomic_demo
    report = json.loads((root / "run" / "report.json").read_text())
    sel = report["grpo_selection"]
    rows = [json.loads(line) for line in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [[r["step"], r["val_em"]] for r in rows if r["phase"] == "grpo" and "val_em" in r]
    assert sel["val_em"] == logged and [step for step, _ in logged] == [0, report["grpo_steps"]]
    assert sel["kept_step"] == best_step(logged)[0]
    assert [r["val_best_step"] for r in rows if "val_best_step" in r][-1] == sel["kept_step"]
    assert f"The GRPO model is step {sel['kept_step']} of {report['grpo_steps']}" in report_path.read_text()
    val = [_content(s) for s in read_samples(root / "data/val")]
    dev = {_content(s) for s in read_samples(root / "data/dev", limit=6)}
    assert len(val) == sel["val_samples"] == 6 and not set(val) & dev
    # inside run() every evaluation played exactly the validation split; dev only before (SFT) and after (kept model)
    during = [played for inside, played in evaluated if inside]
    assert len(during) == len(logged) and all(played == val for played in during)
    assert [set(played) <= dev and len(played) == 6 for inside, played in evaluated if not inside] == [True, True]


def test_sft_and_the_control_keep_their_best_validation_steps_weights(atomic_demo):
    root, report_path, _, _ = atomic_demo
    report = json.loads((root / "run" / "report.json").read_text())
    rows = [json.loads(line) for line in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    for phase, key in (("sft", "sft_kept_step"), ("sft_control", "control_kept_step")):
        curve = [(r["step"], r["val_full"]) for r in rows if r["phase"] == phase and "val_full" in r]
        assert len(curve) >= 2
        kept = max(curve, key=lambda c: (c[1], -c[0]))[0]  # the argmax, the earliest on a tie
        assert report[key] == kept
        digests = {step: d for event, p, step, d in _SFT_WEIGHTS if event == "validate" and p == phase}
        (saved,) = [(step, d) for event, p, step, d in _SFT_WEIGHTS if event == "save" and p == phase]
        # the model saved (SFT's: the one GRPO and the control start from) has the kept validation's weights
        assert saved == (kept, digests[kept])
    assert report["control_sft_steps"] >= 1 and report["sft_steps"] >= report["sft_kept_step"]
    assert f"kept step {report['sft_kept_step']}" in report_path.read_text() or report["sft_kept_step"] == report["sft_steps"]


def test_a_validation_split_sharing_content_with_dev_is_refused(atomic_demo, tmp_path):
    from atommem.config import load_config
    from atommem.data.output import write_dataset
    from atommem.data.schema import read_samples
    from atommem.errors import DataError
    from atommem.trainer.inputs import val_samples

    root = atomic_demo[0]
    dev = read_samples(root / "data/dev", limit=6)
    fresh = read_samples(root / "data/val")
    # a hand-made split (no synthesis record) whose third sample is a dev sample under another id
    write_dataset([*fresh[:2], dataclasses.replace(dev[3], id="renamed")], tmp_path / "val", info={"source": "hand-made"})
    cfg = load_config(root / "run" / "config.yaml", [f"data.val={tmp_path / 'val'}"])
    with pytest.raises(DataError, match=r"share 1 samples by content \(e\.g\. val renamed = dev " + re.escape(dev[3].id)):
        val_samples(cfg)
    assert [s.id for s in val_samples(load_config(root / "run" / "config.yaml"))] == [s.id for s in fresh]


def test_the_longer_evaluation_reads_whole_contexts_at_4x_the_documents(atomic_demo):
    from atommem.config import load_config
    from atommem.data.schema import read_samples
    from atommem.env.chunking import chunk_documents
    from atommem.eval.lengths import length_splits
    from atommem.models.loading import load_tokenizer

    root, report_path, out, _ = atomic_demo
    report = json.loads((root / "run" / "report.json").read_text())
    cfg = load_config(root / "run" / "config.yaml")
    (ev,) = report["length_evals"]
    assert (ev["factor"], ev["doc_num"], ev["samples"]) == (4, 4 * cfg.data.synth.doc_num, 2)
    assert (ev["chunk_by"], ev["chunk_tokens"]) == (cfg.env.chunk_by, cfg.env.chunk_tokens)
    (split,) = length_splits(cfg, str(root / "model"), 6)
    assert split.describe() == {k: ev[k] for k in split.describe()}
    tok = load_tokenizer(root / "model")
    env = split.cfg.env

    def cut(sample, max_chunks):
        return chunk_documents(sample.documents, env.chunk_tokens, env.chunk_overlap, max_chunks, tok, by=env.chunk_by).truncated

    # max_chunks fits the longest context exactly: nothing is cut, one chunk less would cut
    assert not any(cut(s, ev["max_chunks"]) for s in split.samples) and any(cut(s, ev["max_chunks"] - 1) for s in split.samples)
    assert all(len(s.documents) == ev["doc_num"] for s in split.samples)
    seen = {_content(s) for name in ("train", "dev", "val") for s in read_samples(root / "data" / name)}
    assert not {_content(s) for s in split.samples} & seen  # fresh samples
    assert set(ev["em"]) == {"grpo", *SCRIPTED_BASELINES, "oracle"} and ev["questions"] >= 2
    assert ev["grpo_over_1x"] == (pytest.approx(ev["em"]["grpo"] / report["em"]["grpo"]) if report["em"]["grpo"] else None)
    base = ev["grpo_minus_best_baseline"]
    assert ev["em"][base["policy"]] == max(ev["em"][p] for p in SCRIPTED_BASELINES)
    assert base["ci95"][0] <= base["diff"] <= base["ci95"][1]
    line = re.search(r"^dev EM at 4x the documents \((\d+), env\.chunk_by (\w+)\): GRPO (\d\.\d{3}) .*best scripted baseline "
                     r"(\S+) (\d\.\d{3}) \(GRPO - baseline ([-+]\d\.\d{3}), 95% CI", out, re.M)
    assert line, out
    assert (int(line[1]), line[2], float(line[3]), line[4], float(line[6])) == (
        ev["doc_num"], ev["chunk_by"], round(ev["em"]["grpo"], 3), base["policy"], round(base["diff"], 3))
    md = report_path.read_text()
    assert "## Longer than trained" in md and f"| 4x | {ev['doc_num']} | {ev['max_chunks']} | {ev['questions']} | {ev['em']['grpo']:.3f} |" in md


def test_the_overwrite_demo_runs_the_same_pipeline_and_compares_with_the_atomic_one(atomic_demo, tmp_path, capsys):
    """configs/tiny_cpu_overwrite.yaml: MemAgent's action set, taught by the scripted MemAgent, on the same dev episodes."""
    from atommem.demo import compare_demos

    import ray

    root, atomic_report, _, _ = atomic_demo
    try:
        run_demo(tmp_path / "run", config=ROOT / "configs" / "tiny_cpu_overwrite.yaml",
                 overrides=(*_micro(root), "eval.length_factors=[]"))
    finally:
        ray.shutdown()
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert (report["action_set"], report["teacher"]) == ("overwrite", "memagent-scripted")
    # the teacher is the MemAgent workflow: in the overwrite env it scores what the baseline scores in the whole language
    assert report["teacher_em"] == report["scripted_em"]["memagent-scripted"] and report["scripted_em"]["oracle"] == 1.0
    for model in ("teacher", "sft", "grpo", "sft_control"):
        ops = {op for state in report["state_action_rates"][model].values() for op, rate in state.items() if rate and op != "turns"}
        assert ops <= {"scratchpad", "answer", "error"}, (model, ops)
    md = (tmp_path / "run" / "report.md").read_text()
    assert "action set overwrite (teacher memagent-scripted)" in md and "| revision | scratchpad |" in md
    capsys.readouterr()
    out = compare_demos(atomic_report.parent, tmp_path / "run")
    assert [r["em"] for r in out["runs"]] == [json.loads((atomic_report.parent / "report.json").read_text())["em"]["grpo"], report["em"]["grpo"]]
    assert "overwrite - atomic" in capsys.readouterr().out


def _demo_report(run, action_set, grpo, seed=0):
    run.mkdir()
    report = {"seed": seed, "action_set": action_set, "em": {"grpo": sum(map(sum, grpo.values())) / sum(map(len, grpo.values()))},
              "correct_by_episode": {"grpo": grpo}}
    (run / "report.json").write_text(json.dumps(report))


def test_compare_demos_pairs_two_runs_on_the_same_dev_episodes(tmp_path, capsys):
    from atommem.demo import compare_demos
    from atommem.errors import UserError

    episodes = [f"s{i}" for i in range(40)]
    _demo_report(tmp_path / "atomic", "atomic", {e: [True, i % 2 == 0] for i, e in enumerate(episodes)})
    _demo_report(tmp_path / "overwrite", "overwrite", {e: [i % 4 == 0, False] for i, e in enumerate(episodes)})
    out = compare_demos(tmp_path / "atomic", tmp_path / "overwrite")
    a, b = out["runs"]
    assert (a["action_set"], a["em"], b["action_set"], b["em"]) == ("atomic", 0.75, "overwrite", 0.125)
    diff, (lo, hi) = out["b_minus_a"]["diff"], out["b_minus_a"]["ci95"]
    assert diff == pytest.approx(-0.625) and lo <= diff <= hi < 0 and out["questions"] == 80
    assert f"overwrite - atomic {diff:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}] (n=80 questions)" in capsys.readouterr().out

    _demo_report(tmp_path / "other_dev", "overwrite", {f"t{i}": [True] for i in range(40)})
    with pytest.raises(UserError, match="different dev episodes"):
        compare_demos(tmp_path / "atomic", tmp_path / "other_dev")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "report.json").write_text(json.dumps({"em": {"grpo": 0.5}}))
    with pytest.raises(UserError, match="rerun atommem demo"):
        compare_demos(tmp_path / "atomic", tmp_path / "old")
    with pytest.raises(UserError, match="not found"):
        compare_demos(tmp_path / "atomic", tmp_path / "missing")


def _seed_dir(run: Path, into: Path) -> None:
    """A seed directory with what the sweep table reads of a finished demo run."""
    into.mkdir(parents=True)
    for name in ("report.json", "metrics.jsonl", "config.yaml"):
        shutil.copy(run / name, into / name)


def test_the_sweep_table_is_built_from_seed_run_dirs(atomic_demo, tmp_path, capsys):
    from atommem.commands.demo import main
    from atommem.sweep import sweep_table

    root, report_path, _, _ = atomic_demo
    report = json.loads((root / "run" / "report.json").read_text())
    sweep = tmp_path / "sweep"
    _seed_dir(root / "run", sweep / "seed-0")
    (sweep / "seed-3").mkdir()
    (sweep / "seed-3" / "error.txt").write_text("Traceback (most recent call last):\n  ...\nRuntimeError: boom\n")
    (sweep / "seed-5").mkdir()  # started, neither finished nor failed (interrupted, or still running)
    (sweep / "notes").mkdir()
    capsys.readouterr()
    assert main(["--table-only", "--run-dir", str(sweep)]) == 0
    printed = capsys.readouterr().out
    table = json.loads((sweep / "sweep.json").read_text())
    assert printed == (sweep / "sweep.md").read_text()
    done, failed, unfinished = table["rows"]
    assert [r["seed"] for r in table["rows"]] == [0, 3, 5] and (table["passed"], table["seeds"]) == (0, 3)
    assert (failed["status"], failed["error"], unfinished["status"]) == ("failed", "RuntimeError: boom", "incomplete")
    assert (done["sft"], done["grpo"], done["control"]) == (report["em"]["sft"], report["em"]["grpo"], report["em"]["sft_control"])
    assert done["grpo_minus_control"] == report["grpo_minus_control"] and done["questions"] == report["dev_questions"]
    assert (done["kept_step"], done["grpo_steps"]) == (report["grpo_selection"]["kept_step"], report["grpo_steps"])
    assert done["minutes"] == pytest.approx(report["total_s"] / 60) and done["commit"] == report["provenance"]["commit"]
    assert done["longer"]["grpo"] == report["length_evals"][0]["em"]["grpo"]
    recall = report["base_stage"]["recall"]
    assert done["base_steps"] == 3 and done["recall_formed_step"] == next((s for s, r in recall if r >= 0.9), None)
    rates = report["state_action_rates"]
    assert done["update_per_revision"] == {m: rates[m]["revision"]["update"] for m in ("sft", "grpo")}
    assert not done["passes"] and f"{report['dev_questions']} < 500 questions" in done["fails"]
    assert "**0 of 3 seeds pass.**" in printed and "| 3 | failed: RuntimeError: boom |" in printed
    assert f"| 0 | {done['sft']:.3f} | {done['grpo']:.3f} | {done['control']:.3f} |" in printed
    assert "Configs identical but for the seed." in printed


def test_the_pass_rule_names_every_check_a_seed_fails():
    from atommem.sweep import failed_checks

    good = {"sft": 0.5, "grpo_minus_sft": {"ci95": [0.1, 0.3]}, "grpo_minus_control": {"ci95": [0.05, 0.2]},
            "grpo_minus_best_baseline": {"ci95": [0.01, 0.1]}, "questions": 520, "minutes": 14.0,
            "update_per_revision": {"sft": 0.3, "grpo": 0.6},
            "longer": {"grpo_over_1x": 0.95, "grpo_minus_best_baseline": {"ci95": [0.02, 0.2]}}}
    assert failed_checks(good) == []
    broken = {
        "greedy SFT scores 0": {"sft": 0.0},
        "GRPO - control CI low -0.010": {"grpo_minus_control": {"ci95": [-0.01, 0.2]}},
        "499 < 500 questions": {"questions": 499},
        "20.5 > 20 min": {"minutes": 20.5},
        "update per revision turn did not rise (0.300 -> 0.300)": {"update_per_revision": {"sft": 0.3, "grpo": 0.3}},
        "no 4x evaluation (eval.length_factors)": {"longer": None},
        "4x: GRPO keeps 0.89 of its 1x EM": {"longer": {**good["longer"], "grpo_over_1x": 0.89}},
        "4x: GRPO - best baseline CI low +0.000": {"longer": {**good["longer"], "grpo_minus_best_baseline": {"ci95": [0.0, 0.1]}}},
    }
    for reason, change in broken.items():
        assert failed_checks({**good, **change}) == [reason]


def test_the_copy_forms_at_the_first_sft_validation_at_or_above_0_9():
    from atommem.sweep import COPY_KEY, copy_formed_step

    metrics = [{"phase": "sft", "step": 10, "loss": 1.0}, {"phase": "sft", "step": 250, COPY_KEY: 0.5},
               {"phase": "base", "step": 300, COPY_KEY: 0.95}, {"phase": "sft", "step": 500, COPY_KEY: 0.9},
               {"phase": "sft", "step": 750, COPY_KEY: 0.85}]
    assert copy_formed_step(metrics) == 500 and copy_formed_step(metrics[:3]) is None


def test_a_sweep_varies_every_seed_and_survives_a_failing_seed(atomic_demo, tmp_path, monkeypatch, capsys):
    import atommem.sweep as sweep_module
    from atommem.commands.demo import _seeds
    from atommem.config import load_config
    from atommem.errors import UserError

    root = atomic_demo[0]
    played = []

    def fake_demo(run_dir, config, overrides):
        cfg = load_config(config, list(overrides))
        played.append((Path(run_dir).name, cfg.trainer.seed, cfg.model.tiny.seed, cfg.model.path))
        if cfg.trainer.seed == 1:
            Path(run_dir).mkdir(parents=True)
            raise RuntimeError("seed 1 broke")
        _seed_dir(root / "run", Path(run_dir))

    monkeypatch.setattr(sweep_module, "run_demo", fake_demo)
    sweep = sweep_module.run_sweep(tmp_path / "sweep", _seeds("0-1,2"), overrides=tuple(_micro(root)))
    assert played == [(f"seed-{s}", s, s, f"{root / 'model'}-seed{s}") for s in (0, 1, 2)]
    assert [r["status"] for r in sweep["rows"]] == ["done", "failed", "done"]
    assert sweep["rows"][1]["error"] == "RuntimeError: seed 1 broke"
    assert "seed 1 broke" in (tmp_path / "sweep" / "seed-1" / "error.txt").read_text()
    with pytest.raises(UserError, match="seed-1 holds an earlier run"):
        sweep_module.run_sweep(tmp_path / "sweep", [1, 4], overrides=tuple(_micro(root)))
    with pytest.raises(UserError, match="--seeds sets trainer.seed"):
        sweep_module.run_sweep(tmp_path / "other", [0], overrides=("trainer.seed=3",))
    assert len(played) == 3  # refused before any run
