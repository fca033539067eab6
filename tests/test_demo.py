"""`make demo`'s code path end to end on a micro config: every stage runs on local Ray and the report,
plots and the closing lines come out consistent with each other (learning itself is `make demo`'s job); the
overwrite action set's config runs the same pipeline and pairs with it (`compare-demos`)."""

from __future__ import annotations

import contextlib
import io
import json
import re
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
    ]


@pytest.fixture(scope="module")
def atomic_demo(tmp_path_factory):
    """The micro demo of the default config: (data root, report.md, what it printed)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    root = tmp_path_factory.mktemp("demo")
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            report_path = run_demo(root / "run", overrides=tuple(_micro(root)))
    finally:
        ray.shutdown()
    return root, report_path, printed.getvalue()


def test_demo_runs_every_stage_and_reports_consistently(atomic_demo):
    root, report_path, out = atomic_demo
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
    # the dev curve: the SFT model at step 0, then every trainer.eval_every (1) steps, on the live engines
    assert [r["step"] for r in rows if r["phase"] == "grpo" and "dev_em" in r] == [0, 1]
    assert report["rollout_em"] == {"first_step": grpo_row["em"], "last_step": grpo_row["em"]}
    # training steps' own time within each phase's lap; the control trains at least as long as GRPO did
    training, laps = report["training_s"], report["timings_s"]
    assert set(training) == {"sft", "grpo", "control"} and training["grpo"] == report["grpo_train_seconds"]
    assert all(0 < training[k] <= laps[k] for k in training) and training["control"] >= training["grpo"] - 0.1
    md = report_path.read_text()
    assert f"outside them: {report['total_s'] - sum(training.values()):.1f}" in md
    assert f"EM {grpo_row['em']:.3f} at step 1 (the SFT policy)" in md and f"95% CI [{lo:+.3f}, {hi:+.3f}]" in md
    assert {"sft", "grpo", "sft_control"} <= phases
    assert "## Action rates by turn state" in md and "| revision | update |" in md
    assert f"| revision/update | {val['sft']['val_rows/revision/update']:.0f} | {val['sft']['val_first/revision/update']:.3f} |" in md
    assert [r["step"] for r in rows if r["phase"] == "sft" and "val_nll" in r] == [report["sft_steps"]]
    for name in ("grpo_reward.png", "action_rates.png", "sft_loss.png", "sft_validation.png", "state_rates.png", "config.yaml"):
        assert (run / name).is_file(), name
    for model in ("sft/model", "grpo/model", "sft_control/model"):
        assert (run / model / "config.json").is_file(), model
    # per-episode results (what compare-demos pairs) agree with the EMs
    for model, by_episode in report["correct_by_episode"].items():
        assert len(by_episode) == 6 and sum(map(sum, by_episode.values())) / n == pytest.approx(em[model])


def test_the_overwrite_demo_runs_the_same_pipeline_and_compares_with_the_atomic_one(atomic_demo, tmp_path, capsys):
    """configs/tiny_cpu_overwrite.yaml: MemAgent's action set, taught by the scripted MemAgent, on the same dev episodes."""
    from atommem.demo import compare_demos

    import ray

    root, atomic_report, _ = atomic_demo
    try:
        run_demo(tmp_path / "run", config=ROOT / "configs" / "tiny_cpu_overwrite.yaml", overrides=tuple(_micro(root)))
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
