"""EnvRunnerGroup on a local Ray: oracle episodes, exactly-once delivery under killed runners, draining."""

from __future__ import annotations

from collections import Counter

import pytest
import rollout_support
from ray import cloudpickle

from atommem.data.synthetic import generate_synthetic
from atommem.rollout.buffer import GroupBuffer
from atommem.rollout.records import make_requests
from atommem.rollout.env_runner_group import EnvRunnerGroup
from rollout_support import FailOn, small_config

pytestmark = pytest.mark.ray


def test_oracle_rollouts_group_by_uid_and_outlive_the_runners(ray_local):
    ray = ray_local
    cfg = small_config(envs=4, workers=2)
    samples = generate_synthetic(cfg.data.synth, n=4, seed=3)
    requests = make_requests(samples, 3, nonce="s0")
    group = EnvRunnerGroup(cfg, "oracle")
    group.submit(requests)
    assert group.pending() + group.in_flight() == len(requests)
    assert max(group.in_flight_by_runner().values()) <= group.capacity
    buf = GroupBuffer(group_size=3)
    for ref, summary in group.results(timeout_s=120):
        assert isinstance(ref, ray.ObjectRef)
        buf.add(ref, summary)
    assert buf.pop_groups(0) == []
    groups = buf.pop_groups(10)
    assert len(groups) == 4 and buf.num_partial == 0
    assert sorted(s.episode_id for g in groups for _, s in g) == sorted(r.episode_id for r in requests)
    assert {s.worker for g in groups for _, s in g} == {"env-runner-0", "env-runner-1"}  # both runners worked
    group.shutdown()
    # the driver owns the trajectories: readable after every runner is gone
    trajs = ray.get([ref for g in groups for ref, _ in g])
    assert all(t.reward == 1.0 for t in trajs)
    assert [t.episode_id for t in trajs] == [s.episode_id for g in groups for _, s in g]


def test_every_episode_arrives_exactly_once_when_runners_are_killed(ray_local):
    ray = ray_local
    cfg = small_config(envs=3, workers=2)
    samples = generate_synthetic(cfg.data.synth, n=12, seed=4)
    requests = make_requests(samples, 2)
    group = EnvRunnerGroup(cfg, "oracle")
    group.submit(requests)
    got = []
    for ref, summary in group.results(timeout_s=180):
        got.append((ref, summary))
        if len(got) == 3:
            ray.kill(group.handle(0), no_restart=False)  # crash: Ray restarts it and replays its calls
        if len(got) == 8:
            ray.kill(group.handle(1), no_restart=True)  # gone for good: the group replaces it and replays
    counts = Counter(s.episode_id for _, s in got)
    assert counts == Counter(r.episode_id for r in requests)  # each exactly once
    assert group.runners_replaced == 1 and group.replayed >= 1
    assert 1 not in group.runner_indices() and group.num_runners == 2
    assert all(s.reward == 1.0 for _, s in got)
    assert [t.episode_id for t in ray.get([r for r, _ in got])] == [s.episode_id for _, s in got]
    group.shutdown()


def test_remove_runner_hands_back_or_drains_and_add_runner_takes_work(ray_local):
    cfg = small_config(envs=2, workers=1)
    samples = generate_synthetic(cfg.data.synth, n=8, seed=5)
    requests = make_requests(samples, 1)
    group = EnvRunnerGroup(cfg, "oracle")
    group.submit(requests)
    assert group.in_flight() == group.capacity and group.pending() == len(requests) - group.capacity
    new = group.add_runner()
    assert group.in_flight_by_runner()[new] == group.capacity  # queued work goes to the new runner at once
    group.remove_runner(0, wait=False)  # hand back: its episodes return to the queue front
    assert 0 not in group.runner_indices() and group.num_runners == 1
    assert group.in_flight() == group.capacity and group.pending() == len(requests) - group.capacity
    first = group.collect(1, timeout_s=120)
    group.add_runner()
    group.remove_runner(new, wait=True)  # drain: no new work, finishes what it has
    assert group.num_runners == 1
    rest = group.collect(100, timeout_s=120)
    assert new not in group.runner_indices()
    assert sorted(s.episode_id for _, s in first + rest) == sorted(r.episode_id for r in requests)
    group.shutdown()


def test_an_episode_that_raises_fails_loudly_and_the_rest_still_arrive(ray_local):
    cfg = small_config(envs=4, workers=1)
    requests = make_requests(generate_synthetic(cfg.data.synth, n=4, seed=6), 1)
    bad = requests[1].episode_id
    cloudpickle.register_pickle_by_value(rollout_support)  # runners cannot import the tests directory
    group = EnvRunnerGroup(cfg, FailOn(bad))
    assert group.idle_runners() == [0]
    group.submit(requests)
    assert group.idle_runners() == []
    got = []
    with pytest.raises(ValueError, match="exploded on purpose"):
        for item in group.results(timeout_s=120):
            got.append(item)
    got += group.collect(10, timeout_s=120)
    assert group.failed == [bad]
    assert sorted(s.episode_id for _, s in got) == sorted(r.episode_id for r in requests if r.episode_id != bad)
    assert group.in_flight() == 0 and group.idle_runners() == [0]
    group.shutdown()


def test_a_runner_that_cannot_start_is_an_error_not_a_restart_loop(ray_local, tmp_path):
    cfg = small_config(envs=2, workers=1)
    group = EnvRunnerGroup(cfg, "oracle", model_path=str(tmp_path / "no-such-model"))
    group.submit(make_requests(generate_synthetic(cfg.data.synth, n=1, seed=7), 1))
    with pytest.raises(Exception, match="does not exist"):
        group.collect(1, timeout_s=120)
    assert group.runners_replaced == 0
    group.shutdown()
