"""`atommem train` (GRPOTrainer.run) on a micro config with a validation split: GRPO keeps the validation
argmax (by its weights) and never plays dev; its evaluation is the one evaluation path, so it agrees with
`atommem eval` of the saved model; its rollouts go through the autoscaled pool, which grows while episodes are
queued and retires idle runners between steps."""

from __future__ import annotations

import copy
import json

import pytest

from atommem.config import load_config
from helpers_models import TEST_SYNTH, ZERO3_WITH_REFERENCE, make_tiny_model_dir

pytestmark = pytest.mark.ray

# The validation EM the selection sees per step (the real one is kept aside): a peak in the middle, so keeping
# the first or the last step would both be caught.
FORCED_VAL_EM = {0: 0.25, 1: 0.75, 2: 0.5}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import ray

    import atommem.trainer.grpo as grpo_module
    from atommem.trainer.grpo import GRPOTrainer, train_grpo

    if ray.is_initialized():
        ray.shutdown()
    tmp = tmp_path_factory.mktemp("grpo")
    model = make_tiny_model_dir(tmp)
    synth = {f"data.synth.{k}": json.dumps(v) for k, v in vars(TEST_SYNTH).items() if k != "num_samples"}
    overrides = [
        f"data.train={tmp / 'data/train'}", f"data.dev={tmp / 'data/dev'}", "data.synth.num_samples=12",
        "data.dev_samples=4", *[f"{k}={v}" for k, v in synth.items()],
        f"model.path={model}", "model.tiny=null", f"trainer.run_dir={tmp / 'run'}",
        f"data.val={tmp / 'data/val'}", "trainer.steps=2", "trainer.eval_every=1", "trainer.checkpoint_every=0",
        "trainer.time_budget_s=null",
        "grpo.entropy_coef=0.1",  # a gradient at every step, whatever the rewards: each step's weights differ
        "trainer.tensorboard=false", "grpo.batch_groups=2", "grpo.group_size=2",
        "sampling.max_tokens=8", "engine.max_batch_size=1",  # one request per forward: greedy is batch-independent
        # 4 episodes per step, 3 per runner: the queue grows a second runner; idle ones retire at once
        "rollout.envs_per_worker=2", "rollout.num_workers=1", "rollout.min_workers=1", "rollout.max_workers=2",
        "rollout.scale_up_pending_per_worker=0", "rollout.scale_down_idle_s=0.0", "rollout.num_cpus_per_worker=0.25",
        "engine.num_cpus=0.5", "learner.num_cpus=1", *ZERO3_WITH_REFERENCE, "cluster.num_cpus=3",
    ]
    cfg = load_config("configs/tiny_cpu.yaml", overrides)
    seen = {"real": {}, "weights": {}, "played": []}
    evaluate = GRPOTrainer.evaluate

    def spy_evaluate(self, samples, tag):
        """The real evaluation, its summary and the learner's weights noted; the EM selection sees is forced."""
        result = evaluate(self, samples, tag)
        step = self.state.step
        seen["played"].append(list(samples))
        seen["real"][step] = copy.deepcopy(result.summary)
        seen["weights"][step] = self.learner.state_dict()
        result.summary = {**result.summary, "em": FORCED_VAL_EM[step]}
        return result

    def no_dev(cfg):
        raise AssertionError("GRPO with a validation split read the dev split")

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(GRPOTrainer, "evaluate", spy_evaluate)
            mp.setattr(grpo_module, "dev_samples", no_dev)
            model_out = train_grpo(cfg)
        yield cfg, model_out, tmp / "run", seen
    finally:
        ray.shutdown()


def _rows(run_dir, phase):
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["phase"] == phase]


def test_grpo_keeps_the_validation_argmax_by_its_weights_and_never_plays_dev(trained):
    from safetensors.torch import load_file

    from atommem.data.schema import read_samples

    cfg, model_out, run_dir, seen = trained
    rows = [r for r in _rows(run_dir, "grpo") if "val_em" in r]
    assert [(r["step"], r["val_em"]) for r in rows] == sorted(FORCED_VAL_EM.items())
    assert rows[-1]["val_best_step"] == 1
    saved, weights = load_file(str(model_out / "model.safetensors")), seen["weights"]
    assert saved.keys() == weights[1].keys()
    assert all(saved[k].equal(weights[1][k]) for k in saved)
    for other in (0, 2):  # each step moved the weights: keeping the first or the last step would show
        assert not all(weights[1][k].equal(weights[other][k]) for k in saved), other
    val, dev = read_samples(cfg.data.val), read_samples(cfg.data.dev)
    assert seen["played"] == [val] * 3 and not any(s in dev for s in val)


def test_best_step_is_the_first_highest_validation_em():
    from atommem.trainer.grpo import best_step

    assert best_step([[0, 0.5], [2, 0.7], [4, 0.7], [6, 0.1]]) == (2, 0.7)
    assert best_step([[0, 0.0]]) == (0, 0.0)
    with pytest.raises(ValueError, match="no validation EM"):
        best_step([])


def test_training_evaluation_equals_atommem_eval_of_the_saved_model(trained):
    from atommem.eval.evaluate import evaluate

    cfg, model_out, run_dir, seen = trained
    (kept,) = [r for r in _rows(run_dir, "grpo") if r.get("val_em") == FORCED_VAL_EM[1]]
    report = evaluate(cfg, str(model_out), cfg.data.val, ["atommem"], out_dir=run_dir / "eval")
    summary = report["policies"]["atommem"]
    assert summary["episodes"] == 4
    assert (seen["real"][1]["em"], kept["val_f1"]) == (summary["em"], summary["f1"])
    # a random tiny model's action mix is the fingerprint of exactly which tokens were generated
    assert {k: kept[f"val_rate_{k}"] for k in summary["action_rates"]} == summary["action_rates"]
    assert {(state, k): kept[f"val_rate_{state}_{k}"] for state, rates in summary["state_action_rates"].items()
            for k in rates if k != "turns"} == {(state, k): v for state, rates in summary["state_action_rates"].items()
                                                for k, v in rates.items() if k != "turns"}
    assert summary["action_rates"]["error"] > 0


def test_rollout_workers_scale_up_with_queued_episodes_and_down_when_idle(trained):
    _, _, run_dir, _ = trained
    events = _rows(run_dir, "rollout_pool")
    actions = [e["action"] for e in events]
    assert actions.count("up") >= 2 and actions.count("down") >= 2, events  # every step: grow, then retire
    assert max(e["workers"] for e in events) == 2 and min(e["workers"] for e in events) == 1
    ups = [e for e in events if e["action"] == "up"]
    assert all(e["pending"] + e["in_flight"] > 0 for e in ups)  # grown for queued work, never idle
