"""A live GRPOTrainer (micro config, one engine, one rollout runner, one learner rank) under faults:
an engine and a rollout runner killed mid-step (Ray restarts both), an engine added late, save/resume
of the whole trainer, the async staleness filter, and SIGTERM ending run() with a checkpoint.

"Mid-step" is exact: the kill lands once the step's episodes are submitted and the engine has answered
a first request, so every episode of the step is in flight and needs the restarted actor to finish.
The restarted engine is shown by what it generated: each turn carries the start id of the engine process
that answered it, and the new process's turns are what the learner's weights of that step give (an HF
forward pass), with none served before its re-sync.
"""

from __future__ import annotations

import json
import os
import signal
from contextlib import contextmanager

import pytest

from atommem.config import load_config
from atommem.engines.base import Generation
from atommem.rollout.records import TrajectorySummary
from helpers_models import TEST_SYNTH, ZERO3_WITH_REFERENCE, make_tiny_model_dir
from test_learner_group import make_trajectories
from vllm_support import forward_check

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

GROUPS, GROUP_SIZE = 2, 2


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    import ray

    from atommem.runtime import init_ray
    from atommem.tracking import RunLogger
    from atommem.trainer.grpo import GRPOTrainer

    if ray.is_initialized():
        ray.shutdown()
    tmp = tmp_path_factory.mktemp("faults")
    model = make_tiny_model_dir(tmp)
    synth = {f"data.synth.{k}": json.dumps(v) for k, v in vars(TEST_SYNTH).items() if k != "num_samples"}
    cfg = load_config("configs/tiny_cpu.yaml", [
        f"data.train={tmp / 'data/train'}", f"data.dev={tmp / 'data/dev'}", "data.val=null", "data.synth.num_samples=8",
        "data.dev_samples=2", *[f"{k}={v}" for k, v in synth.items()], f"model.path={model}", "model.tiny=null",
        f"trainer.run_dir={tmp / 'run'}", "trainer.steps=100", "trainer.eval_every=0", "trainer.checkpoint_every=0",
        "trainer.time_budget_s=null", "trainer.tensorboard=false", f"grpo.batch_groups={GROUPS}",
        f"grpo.group_size={GROUP_SIZE}", "sampling.max_tokens=8", "rollout.envs_per_worker=4", "rollout.num_workers=1",
        # rewards that differ within a group (format errors cost) and an entropy bonus: every step moves the weights
        "env.format_penalty=0.05", "grpo.entropy_coef=0.01", "grpo.lr=1e-2",
        "rollout.min_workers=1", "rollout.max_workers=1", "rollout.num_cpus_per_worker=0.5", "engine.num_cpus=0.5",
        "learner.num_cpus=1", *ZERO3_WITH_REFERENCE, "cluster.num_cpus=4",
    ])
    init_ray(cfg.cluster)
    logger = RunLogger(cfg.trainer.run_dir, cfg, tensorboard=False)
    t = GRPOTrainer(cfg, str(model), logger)
    try:
        t.step()  # version 1: from here on the weights on disk are old
        yield t
    finally:
        t.shutdown()
        logger.close()
        ray.shutdown()


@contextmanager
def kill_mid_step(trainer, kill):
    """Run `kill()` once the next step has submitted its episodes and the engine answered one request."""
    import ray

    engine = trainer.fleet.handles[0]
    submit = trainer._submit

    def submit_then_kill(num_groups):
        submit(num_groups)
        served = ray.get(engine.health.remote())["requests"]
        while ray.get(engine.health.remote())["requests"] == served:
            pass
        kill()

    trainer._submit = submit_then_kill
    try:
        yield
    finally:
        del trainer._submit


@contextmanager
def trained_episodes(trainer, trajectories: bool = False):
    """The episode ids (or the trajectories) of every batch handed to the learner."""
    import ray

    update, seen = trainer.learner.update_grpo, []

    def recording(batch):
        trajs = ray.get([ref for ref, _ in batch])
        seen.append(trajs if trajectories else [t.episode_id for t in trajs])
        return update(batch)

    trainer.learner.update_grpo = recording
    try:
        yield seen
    finally:
        del trainer.learner.update_grpo


def learner_model(trainer):
    """An HF model holding the learner group's current weights."""
    from atommem.models.loading import load_model

    model = load_model(trainer.model_path)
    missing, unexpected = model.load_state_dict(trainer.learner.state_dict(), strict=False)
    assert missing == ["lm_head.weight"] and not unexpected  # tied: it comes with the embedding
    return model


def test_an_engine_killed_mid_step_serves_again_only_with_the_current_weights(trainer):
    import ray

    from atommem.checkpoints import weights_digest
    from atommem.models.loading import load_model

    version = trainer.state.version
    engine = trainer.fleet.handles[0]
    caught_up = trainer.fleet.catch_ups
    before = ray.get(engine.health.remote())
    model = learner_model(trainer)  # the weights of `version`, the ones this step must be sampled from
    assert weights_digest(model.model.named_parameters()) != weights_digest(load_model(trainer.model_path).model.named_parameters())
    with trained_episodes(trainer, trajectories=True) as seen, kill_mid_step(trainer, lambda: ray.kill(engine, no_restart=False)):
        record = trainer.step()
    health = ray.get(engine.health.remote())
    assert health["restarted"] and (health["incarnation"], health["pid"]) != (before["incarnation"], before["pid"])
    assert trainer.fleet.catch_ups > caught_up
    # every turn of the step came from the current weights: none stale, none dropped and replayed
    assert (record["policy_version"], record["groups_dropped"]) == (version, 0)
    (trajectories,) = seen
    ids = [t.episode_id for t in trajectories]
    assert len(ids) == len(set(ids)) == GROUPS * GROUP_SIZE == record["episodes"]
    # the turns answered after the kill came from the new process, each one it served, none before its re-sync,
    # and they are what the learner's weights of this step give, not the weights on disk it started with
    turns = [turn for t in trajectories for turn in t.turns]
    by_process = {turn.engine_id for turn in turns}
    assert by_process <= {before["incarnation"], health["incarnation"]}
    new = [turn for turn in turns if turn.engine_id == health["incarnation"]]
    assert len(new) == health["served"] > 0 and health["served_before_current"] == 0
    for turn in turns:
        gen = Generation(turn.response_ids, turn.logprobs, "stop", turn.weight_version)
        forward_check(model, turn.prompt_ids, gen, greedy=False)
    print(f"engine killed mid-step: pid {before['pid']} -> {health['pid']}, start id {before['incarnation'][:12]} -> "
          f"{health['incarnation'][:12]}; turns of the step by the old process {len(turns) - len(new)}, by the new "
          f"{len(new)} (it served {health['served']}, {health['served_before_current']} before its re-sync)")
    assert health["weight_version"] == trainer.state.version == version + 1  # and it took the step's sync
    assert trainer.step()["policy_version"] == version + 1


def test_a_rollout_worker_killed_mid_step_replays_its_episodes_exactly_once(trainer):
    import ray

    version = trainer.state.version
    group = trainer.pool.group
    (index,) = group.runner_indices()
    runner = group.handle(index)
    with trained_episodes(trainer) as seen, kill_mid_step(trainer, lambda: ray.kill(runner, no_restart=False)):
        record = trainer.step()
    assert ray.get(runner.stats.remote())["episodes"] == GROUPS * GROUP_SIZE  # all replayed by the restarted runner
    (ids,) = seen
    assert len(ids) == len(set(ids)) == GROUPS * GROUP_SIZE == record["episodes"]
    assert group.duplicates_dropped == 0
    assert (record["policy_version"], record["groups_dropped"]) == (version, 0)


def test_an_engine_added_late_serves_only_once_it_holds_the_current_weights(trainer):
    import ray

    from atommem.engines.base import SamplingParams

    late = trainer.fleet.add_engine()
    out = ray.get(late.generate.remote([5, 9, 30], SamplingParams(temperature=0.0, max_tokens=4)), timeout=120)
    assert out.weight_version == trainer.state.version > 0
    health = ray.get(late.health.remote())
    assert out.engine_id == health["incarnation"] and health["served_before_current"] == 0
    with pytest.raises(ValueError, match="only go forward"):
        trainer.fleet.sync_weights(trainer.learner, trainer.state.version - 1)


def test_save_and_resume_bring_back_the_step_data_position_and_weights(trainer):
    import ray

    from atommem.trainer.grpo import latest_checkpoint

    path = trainer.save()
    saved = (trainer.state.step, trainer.state.version, trainer.sampler.state_dict())
    digest = trainer.learner.param_digests()[0]
    after = trainer.step()
    vocab = trainer.learner.state_dict()["model.embed_tokens.weight"].shape[0]
    trainer.learner.update_sft([ray.put(t) for t in make_trajectories(vocab)])  # weights surely moved
    assert trainer.learner.param_digests()[0] != digest
    assert latest_checkpoint(trainer.cfg.trainer.run_dir) == path
    trainer.resume(path)
    assert (trainer.state.step, trainer.state.version, trainer.sampler.state_dict()) == saved
    assert trainer.learner.param_digests()[0] == digest
    assert {h["weight_version"] for h in trainer.fleet.health()} == {saved[1]}
    again = trainer.step()  # the step done before the resume, once more: same samples, same weights version
    for key in ("data_epoch", "data_pos", "policy_version", "weight_version"):
        assert again[key] == after[key], key


def test_sigterm_ends_the_run_after_the_step_in_flight_with_a_checkpoint(trainer):
    from atommem.checkpoints import verify
    from atommem.stopping import stop_on_signals

    start = trainer.state.step
    with stop_on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        trainer.run()
    assert trainer.stopped_by == "SIGTERM" and trainer.state.step == start + 1
    assert verify(trainer.checkpoints.path(start + 1))["weight_version"] == trainer.state.version


def test_async_mode_trains_on_groups_at_most_max_staleness_old(trainer):
    """Last: it leaves the next batch in flight, as async mode does."""

    def group(version: int) -> list[TrajectorySummary]:
        return [TrajectorySummary(f"u#{i}", "u", i, 1.0, 2, 3, [True], {}, 0, version, "t", 10) for i in range(2)]

    v = trainer.state.version
    assert trainer._fresh(group(v)) and not trainer._fresh(group(v - 1))  # sync: on-policy only
    trainer.cfg.trainer.mode, trainer.cfg.trainer.max_staleness = "async", 1
    assert trainer._fresh(group(v)) and trainer._fresh(group(v - 1)) and not trainer._fresh(group(v - 2))
    records = [trainer.step() for _ in range(3)]
    assert all(0 <= r["staleness"] <= 1 for r in records)
    assert records[-1]["staleness"] == 1  # played while the learner stepped: one version behind
