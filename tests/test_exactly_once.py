"""Exactly-once where it can fail: episodes finish on a runner that dies before the driver collects them.

The runner plays four episodes of two GRPO groups. One of them (the first dispatched) waits on a file; the
other three finish, and their results reach the driver, which does not collect them yet. Then the runner is
killed for good. The group learns of the death from the waiting episode's call and queues all four again on
a new runner; the three finished results are still there. Each episode must reach the training batch once:
the three from the dead runner (their replays dropped as duplicates), the fourth from its replay. A group
without the drop would hand the learner those three twice; one that forgot the dead runner's results would
play them again and use the replays.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from ray import cloudpickle

from atommem.data.synthetic import generate_synthetic
from atommem.learner.grpo import group_advantages
from atommem.rollout.buffer import GroupBuffer
from atommem.rollout.env_runner_group import EnvRunnerGroup
from atommem.rollout.records import make_requests
from rollout_support import small_config

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

GROUP_SIZE = 2


class WaitForFile:
    """Policy factory: the oracle, except that episode `episode_id` first waits until `path` exists."""

    def __init__(self, episode_id: str, path: str):
        self.episode_id, self.path = episode_id, path

    def __call__(self, request, engine, tokenizer):
        from atommem.policies.oracle import OraclePolicy

        oracle = OraclePolicy(rng_seed=request.seed)
        return _Waiting(oracle, self.path) if request.episode_id == self.episode_id else oracle


class _Waiting:
    def __init__(self, oracle, path: str):
        self.oracle, self.path = oracle, path

    async def act(self, env):
        while not Path(self.path).exists():
            await asyncio.sleep(0.05)
        return await self.oracle.act(env)


def _wait_until_with_driver(group: EnvRunnerGroup, episode_ids: list[str], timeout_s: float = 120) -> None:
    """Block until these episodes' results (or errors) have reached the driver, without collecting them."""
    import ray

    refs = [group._calls[eid].summary_ref for eid in episode_ids]  # the group's own refs: nothing is consumed
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s, fetch_local=False)
    assert len(ready) == len(refs), f"episodes {episode_ids} did not finish in {timeout_s}s"


def test_results_finished_before_the_runner_died_are_trained_once_and_their_replays_dropped(ray_local, tmp_path):
    ray = ray_local
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # runners cannot import the tests directory
    cfg = small_config(envs=4, workers=1)
    requests = make_requests(generate_synthetic(cfg.data.synth, n=2, seed=21), GROUP_SIZE, nonce="x1")
    waiting, finished = requests[0].episode_id, [r.episode_id for r in requests[1:]]
    release = tmp_path / "release"
    group = EnvRunnerGroup(cfg, WaitForFile(waiting, str(release)), poll_s=0.25)
    try:
        group.submit(requests)  # `waiting` goes out first, so its call is the first the driver looks at
        (index,) = group.runner_indices()
        assert group.in_flight_on(index) == sorted(r.episode_id for r in requests)
        _wait_until_with_driver(group, finished)
        ray.kill(group.handle(index), no_restart=True)  # dies holding three finished, uncollected results
        _wait_until_with_driver(group, [waiting])  # ...and the driver has seen the death (the call's error)
        release.touch()
        buffer = GroupBuffer(GROUP_SIZE)
        for ref, summary in group.results(timeout_s=120):
            buffer.add(ref, summary)
        entries = [e for g in buffer.pop_groups(len(requests)) for e in g]
        summaries = [s for _, s in entries]
        advantages = group_advantages([s.reward for s in summaries], [s.uid for s in summaries])
        batch = [(ref, float(a)) for (ref, _), a in zip(entries, advantages)]  # what GRPOTrainer hands the learner
        trained = ray.get([ref for ref, _ in batch])
        outcome = {s.episode_id: (s.worker, t.metadata["worker"], s.reward) for s, t in zip(summaries, trained)}
        print("exactly-once:", {"episodes": outcome, "duplicates_dropped": group.duplicates_dropped,
                                "replayed": group.replayed, "runners_replaced": group.runners_replaced})
        assert Counter(t.episode_id for t in trained) == Counter(r.episode_id for r in requests)  # each once
        assert Counter(t.uid for t in trained) == Counter({r.uid: GROUP_SIZE for r in requests})
        assert group.replayed == len(requests) and group.runners_replaced == 1
        assert group.duplicates_dropped == len(finished)  # the replays of the three finished episodes
        dead, new = f"env-runner-{index}", f"env-runner-{group.runner_indices()[0]}"
        for eid in finished:  # trained from the dead runner's result, summary and tokens from the same play
            assert outcome[eid][:2] == (dead, dead)
        assert outcome[waiting][:2] == (new, new)
        assert all(s.reward == 1.0 for s in summaries)
        # the new runner played the waiting episode; the finished ones' replays were cancelled before they ran
        deadline = time.monotonic() + 30
        while (stats := group.stats()[0])["active"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert stats["episodes"] == 1
    finally:
        group.shutdown()
