"""`make demo`'s code path end to end on a micro config: every stage runs on local Ray and the report,
plots and the two closing lines come out consistent with each other (learning itself is `make demo`'s job)."""

from __future__ import annotations

import json
import re

import pytest

from atommem.demo import SCRIPTED_BASELINES, run_demo


@pytest.fixture
def no_ray_left():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    yield
    ray.shutdown()


def test_demo_runs_every_stage_and_reports_consistently(tmp_path, capsys, no_ray_left):
    run = tmp_path / "run"
    overrides = [
        f"data.train={tmp_path / 'data/train'}", f"data.dev={tmp_path / 'data/dev'}",
        "data.synth.num_samples=24", "data.dev_samples=6",
        f"model.path={tmp_path / 'model'}", "model.tiny.hidden_size=32", "model.tiny.num_layers=1",
        "model.tiny.intermediate_size=64",
        "sft.teacher_episodes=12", "sft.val_episodes=6", "sft.batch_size=2", "sft.time_budget_s=2",
        "grpo.group_size=2", "grpo.batch_groups=2", "rollout.envs_per_worker=8",
        "trainer.time_budget_s=0.01", "trainer.eval_every=1", "cluster.num_cpus=4",
    ]
    report_path = run_demo(run, overrides=tuple(overrides))
    out = capsys.readouterr().out

    report = json.loads((run / "report.json").read_text())
    assert report_path == run / "report.md" and f"report: {report_path}" in out
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
    md = report_path.read_text()
    assert f"EM {grpo_row['em']:.3f} at step 1 (the SFT policy)" in md and f"95% CI [{lo:+.3f}, {hi:+.3f}]" in md
    assert {"sft", "grpo", "sft_control"} <= phases
    assert "## Action rates by turn state" in md and "| revision | update |" in md
    assert f"| revision/update | {val['sft']['val_rows/revision/update']:.0f} | {val['sft']['val_first/revision/update']:.3f} |" in md
    assert [r["step"] for r in rows if r["phase"] == "sft" and "val_nll" in r] == [report["sft_steps"]]
    for name in ("grpo_reward.png", "action_rates.png", "sft_loss.png", "sft_validation.png", "state_rates.png", "config.yaml"):
        assert (run / name).is_file(), name
    for model in ("sft/model", "grpo/model", "sft_control/model"):
        assert (run / model / "config.json").is_file(), model
