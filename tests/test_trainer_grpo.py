"""`atommem train` (GRPOTrainer.run) on a micro config: its dev evaluation is the one evaluation path, so it
agrees with `atommem eval` of the saved model; its rollouts go through the autoscaled pool, which grows
while episodes are queued and retires idle runners between steps."""

from __future__ import annotations

import json

import pytest

from atommem.config import load_config
from helpers_models import TEST_SYNTH, make_tiny_model_dir

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import ray

    from atommem.trainer.grpo import train_grpo

    if ray.is_initialized():
        ray.shutdown()
    tmp = tmp_path_factory.mktemp("grpo")
    model = make_tiny_model_dir(tmp)
    synth = {f"data.synth.{k}": json.dumps(v) for k, v in vars(TEST_SYNTH).items() if k != "num_samples"}
    overrides = [
        f"data.train={tmp / 'data/train'}", f"data.dev={tmp / 'data/dev'}", "data.synth.num_samples=12",
        "data.dev_samples=4", *[f"{k}={v}" for k, v in synth.items()],
        f"model.path={model}", "model.tiny=null", f"trainer.run_dir={tmp / 'run'}",
        "trainer.steps=2", "trainer.eval_every=2", "trainer.checkpoint_every=0", "trainer.time_budget_s=null",
        "trainer.tensorboard=false", "grpo.batch_groups=2", "grpo.group_size=2",
        "sampling.max_tokens=8", "engine.max_batch_size=1",  # one request per forward: greedy is batch-independent
        # 4 episodes per step, 3 per runner: the queue grows a second runner; idle ones retire at once
        "rollout.envs_per_worker=2", "rollout.num_workers=1", "rollout.min_workers=1", "rollout.max_workers=2",
        "rollout.scale_up_pending_per_worker=0", "rollout.scale_down_idle_s=0.0", "rollout.num_cpus_per_worker=0.25",
        "engine.num_cpus=0.5", "learner.num_cpus=1", "cluster.num_cpus=3",
    ]
    cfg = load_config("configs/tiny_cpu.yaml", overrides)
    try:
        model_out = train_grpo(cfg)
        yield cfg, model_out, tmp / "run"
    finally:
        ray.shutdown()


def _rows(run_dir, phase):
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["phase"] == phase]


def test_training_evaluation_equals_atommem_eval_of_the_saved_model(trained):
    from atommem.eval.evaluate import evaluate

    cfg, model_out, run_dir = trained
    (last,) = [r for r in _rows(run_dir, "grpo") if "dev_em" in r]
    assert last["step"] == 2  # evaluated with the weights that were then saved
    report = evaluate(cfg, str(model_out), cfg.data.dev, ["atommem"], out_dir=run_dir / "eval")
    summary = report["policies"]["atommem"]
    assert summary["episodes"] == 4
    assert (last["dev_em"], last["dev_f1"]) == (summary["em"], summary["f1"])
    # a random tiny model's action mix is the fingerprint of exactly which tokens were generated
    assert {k: last[f"dev_rate_{k}"] for k in summary["action_rates"]} == summary["action_rates"]
    assert {(state, k): last[f"dev_rate_{state}_{k}"] for state, rates in summary["state_action_rates"].items()
            for k in rates if k != "turns"} == {(state, k): v for state, rates in summary["state_action_rates"].items()
                                                for k, v in rates.items() if k != "turns"}
    assert summary["action_rates"]["error"] > 0


def test_rollout_workers_scale_up_with_queued_episodes_and_down_when_idle(trained):
    _, _, run_dir = trained
    events = _rows(run_dir, "rollout_pool")
    actions = [e["action"] for e in events]
    assert actions.count("up") >= 2 and actions.count("down") >= 2, events  # every step: grow, then retire
    assert max(e["workers"] for e in events) == 2 and min(e["workers"] for e in events) == 1
    ups = [e for e in events if e["action"] == "up"]
    assert all(e["pending"] + e["in_flight"] > 0 for e in ups)  # grown for queued work, never idle
