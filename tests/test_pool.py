"""RolloutPool: scaling rules against a fake group (deterministic clock), then a real scale-up/down on local Ray."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from atommem.config import ConfigError, RolloutConfig
from atommem.rollout.pool import RolloutPool


class FakeGroup:
    """EnvRunnerGroup's bookkeeping without Ray: each runner holds up to `capacity` episodes."""

    def __init__(self, runners: int, capacity: int):
        self.capacity = capacity
        self.queue: list[str] = []
        self.load: dict[int, list[str]] = {}
        self.next_index = 0
        self.removed: list[tuple[int, bool]] = []
        for _ in range(runners):
            self.add_runner()

    @property
    def num_runners(self) -> int:
        return len(self.load)

    def add_runner(self) -> int:
        index = self.next_index
        self.next_index += 1
        self.load[index] = []
        self._dispatch()
        return index

    def remove_runner(self, index: int, wait: bool = True) -> None:
        self.removed.append((index, wait))
        episodes = self.load.pop(index)
        if not wait:
            self.queue[:0] = episodes
        self._dispatch()

    def _dispatch(self) -> None:
        for eps in self.load.values():
            while self.queue and len(eps) < self.capacity:
                eps.append(self.queue.pop(0))

    def submit(self, requests: list[str]) -> None:
        self.queue += requests
        self._dispatch()

    def finish(self, index: int) -> None:
        self.load[index].clear()
        self._dispatch()

    def pending(self) -> int:
        return len(self.queue)

    def in_flight(self) -> int:
        return sum(map(len, self.load.values()))

    def in_flight_by_runner(self) -> dict[int, int]:
        return {i: len(e) for i, e in self.load.items()}

    def shutdown(self) -> None:
        self.load.clear()


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _pool(group, **cfg):
    requested: list[list[dict]] = []
    clock = Clock()
    base = dict(min_workers=1, max_workers=4, scale_up_pending_per_worker=4, scale_down_idle_s=10.0,
                num_cpus_per_worker=0.5, worker_resource="rollout_cpu")
    pool = RolloutPool(group, RolloutConfig(**{**base, **cfg}), request_resources=requested.append, clock=clock)
    return pool, clock, requested


def test_grows_while_pending_per_runner_exceeds_the_threshold_up_to_max():
    group = FakeGroup(runners=1, capacity=2)
    pool, clock, requested = _pool(group)
    assert requested == [[{"CPU": 0.5, "rollout_cpu": 0.001}]]
    pool.submit([f"e{i}" for i in range(6)])  # 2 in flight, 4 queued: 4 per runner is not above 4
    assert pool.num_workers == 1
    pool.submit(["e6"])  # 5 queued on 1 runner > 4: grow; the new runner takes 2, leaving 3 <= 4*2
    assert pool.num_workers == 2 and group.pending() == 3
    pool.submit([f"f{i}" for i in range(40)])
    assert pool.num_workers == 4  # capped at max_workers although 35 remain queued
    assert group.pending() == 47 - 4 * 2
    assert [e.workers for e in pool.history] == [1, 2, 4]
    assert len(requested[-1]) == 4 and pool.requests == [1, 2, 4]


def test_shrinks_idle_runners_after_the_idle_time_down_to_min_newest_first():
    group = FakeGroup(runners=1, capacity=2)
    pool, clock, requested = _pool(group)
    pool.submit([f"e{i}" for i in range(20)])
    assert pool.num_workers == 4
    while group.in_flight():
        for i in list(group.load):
            group.finish(i)
    pool.autoscale()  # all idle from now on
    clock.t = 9.9
    assert pool.autoscale() == 0 and pool.num_workers == 4
    clock.t = 10.0
    assert pool.autoscale() == -3 and pool.num_workers == 1
    assert [i for i, _ in group.removed] == [3, 2, 1]  # newest first, runner 0 stays
    assert all(wait for _, wait in group.removed)  # retiring drains, never drops episodes
    assert pool.requests[-1] == 1 and len(requested[-1]) == 1
    assert [e.action for e in pool.history][-1] == "down"


def test_busy_runners_and_queued_work_are_never_retired():
    group = FakeGroup(runners=2, capacity=2)
    pool, clock, _ = _pool(group, min_workers=0)
    group.submit(["a"])  # runner 0 busy, runner 1 idle
    pool.autoscale()
    clock.t = 100.0
    pool.autoscale()
    assert list(group.load) == [0]  # only the idle one went
    assert pool.num_workers == 1
    group.finish(0)
    pool.autoscale()  # idle from t=100
    clock.t = 105.0
    pool.autoscale()
    assert pool.num_workers == 1  # not idle long enough
    clock.t = 110.0
    pool.autoscale()
    assert pool.num_workers == 0  # min_workers 0: a pool may empty completely
    pool.submit(["b"])  # ...and comes back when work arrives
    assert pool.num_workers == 1 and group.in_flight() == 1


def test_idle_clock_restarts_when_a_runner_gets_work():
    group = FakeGroup(runners=2, capacity=1)
    pool, clock, _ = _pool(group)
    clock.t = 8.0
    pool.submit(["a"])  # runner 0 busy; runner 1 idle since t=0
    group.finish(0)
    clock.t = 12.0
    pool.autoscale()
    assert list(group.load) == [0]  # runner 1 was idle 12 s; runner 0's idle clock restarted at 12
    clock.t = 21.9
    pool.autoscale()
    assert pool.num_workers == 1


def test_hand_back_returns_a_busy_runners_episodes_to_the_queue():
    group = FakeGroup(runners=2, capacity=2)
    pool, _, _ = _pool(group, scale_up_pending_per_worker=100)
    pool.submit(["a", "b", "c", "d", "e"])
    assert group.in_flight_by_runner() == {0: 2, 1: 2}
    pool.retire(1, hand_back=True)
    assert group.removed == [(1, False)]
    assert group.queue == ["c", "d", "e"]  # its episodes first, ahead of work that was already waiting
    assert pool.num_workers == 1


@pytest.mark.parametrize("bad", [dict(min_workers=3, max_workers=2), dict(min_workers=0, max_workers=0),
                                 dict(scale_up_pending_per_worker=-1)])
def test_bad_bounds_are_config_errors(bad):
    with pytest.raises(ConfigError, match="rollout"):
        _pool(FakeGroup(1, 1), **bad)


# ---------------------------------------------------------------------------------------------- Ray


@pytest.mark.ray
def test_pool_scales_up_under_load_and_back_down_on_local_ray(ray_local):
    from atommem.data.synthetic import generate_synthetic
    from atommem.rollout.records import make_requests
    from atommem.rollout.env_runner_group import EnvRunnerGroup
    from rollout_support import small_config

    latency_s = 0.1

    # Defined here so Ray ships them by value to the runner processes (no test-module imports there).
    class SimulatedEngine:
        """An inference engine that answers every request after a fixed latency."""

        async def generate(self, prompt_ids, params):
            import asyncio

            from atommem.engines.base import Generation

            await asyncio.sleep(latency_s)
            return Generation(token_ids=[], logprobs=[], finish_reason="stop", weight_version=0)

    class OracleOnEngine:
        """The scripted oracle's actions, each turn paying one engine round trip."""

        def __init__(self, engine, seed):
            from atommem.policies.oracle import OraclePolicy

            self.engine, self.oracle = engine, OraclePolicy(rng_seed=seed)

        async def act(self, env):
            from atommem.engines.base import SamplingParams

            await self.engine.generate([], SamplingParams())
            return await self.oracle.act(env)

    def factory(request, engine, tokenizer):
        return OracleOnEngine(engine, request.seed)

    cfg = small_config(envs=2, workers=1)
    cfg.rollout.min_workers = 1
    cfg.rollout.max_workers = 4
    cfg.rollout.scale_up_pending_per_worker = 3
    cfg.rollout.scale_down_idle_s = 1.0
    group = EnvRunnerGroup(cfg, factory, engines=[SimulatedEngine()], poll_s=0.25)
    samples = generate_synthetic(cfg.data.synth, n=12, seed=11)
    requests = make_requests(samples, 2, nonce="pool")
    pool = RolloutPool(group, cfg.rollout, tick_s=0.5)
    try:
        pool.submit(requests)
        assert pool.num_workers > 1  # 24 episodes on one 3-slot runner: grows at once
        got = [s for _, s in pool.results(timeout_s=240)]
        peak = max(e.workers for e in pool.history)
        deadline = time.monotonic() + 60
        while pool.num_workers > cfg.rollout.min_workers and time.monotonic() < deadline:
            time.sleep(0.25)
            pool.autoscale()  # what a trainer does between steps
        final = pool.num_workers
        over_time = pool.workers_over_time()
        print("rollout pool workers over time:", json.dumps(over_time))
        assert Counter(s.episode_id for s in got) == Counter(r.episode_id for r in requests)  # each exactly once
        assert all(s.reward == 1.0 for s in got)
        assert peak == cfg.rollout.max_workers
        assert final == cfg.rollout.min_workers
        assert len({s.worker for s in got}) > 1  # the added runners did play episodes
        assert pool.requests[0] == 1 and max(pool.requests) == 4 and pool.requests[-1] == 1
        assert [e["action"] for e in over_time][0] == "start" and over_time[-1]["action"] == "down"
    finally:
        pool.shutdown()
    assert pool.num_workers == 0
