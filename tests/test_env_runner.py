"""EnvRunner in-process (no Ray): oracle episodes, env concurrency, sticky least-loaded engines, retries."""

from __future__ import annotations

import asyncio

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError

from atommem.data.synthetic import generate_synthetic
from atommem.errors import EngineError
from atommem.engines.base import Generation, SamplingParams
from atommem.policies.oracle import OraclePolicy
from atommem.rollout.replica_router import ReplicaRouter
from atommem.rollout.records import TrajectorySummary, make_requests
from atommem.rollout.env_runner import EnvRunner
from rollout_support import small_config


def test_oracle_episodes_reach_em_one_and_share_one_batched_embedder():
    cfg = small_config(envs=8)
    samples = generate_synthetic(cfg.data.synth, n=6, seed=1)
    requests = make_requests(samples, 2)
    runner = EnvRunner(cfg, "oracle")

    async def main():
        return await asyncio.gather(*(runner.play(r) for r in requests))

    results = asyncio.run(main())
    assert sorted(s.episode_id for _, s in results) == sorted(r.episode_id for r in requests)
    for traj, summary in results:
        assert summary == TrajectorySummary.of(traj, worker="runner-0")
        assert traj.reward == 1.0 and all(traj.correct)
        assert traj.num_turns == summary.num_turns > 0
        assert traj.action_counts["create"] >= 1 and traj.action_counts["answer"] == len(traj.correct)
        assert [t.phase for t in traj.turns][-1] == "answer"
        # every turn carries its state label (unlabelled samples: the phase), counted per state
        assert {t.state for t in traj.turns} == set(traj.state_counts) == {"read", "answer"}
        assert sum(c["turns"] for c in traj.state_counts.values()) == traj.num_turns
    stats = runner.stats()
    assert stats["episodes"] == len(requests) and stats["active"] == 0
    # 12 concurrent episodes write and query memory: far fewer embed calls than texts embedded
    assert stats["embed_calls"] < stats["embed_texts"] / 2


class GatedEngine:
    """Requests of episode `slow` wait on a gate; every other request answers at once."""

    def __init__(self):
        self.gate = asyncio.Event()
        self.calls: list[str] = []

    async def generate(self, prompt_ids, params):
        self.calls.append(params.seed)
        if params.seed == "slow":
            await self.gate.wait()
        return Generation([1], [0.0], "stop", 0)


class EngineOracle:
    """Oracle actions, one engine request per turn (tagged with the episode so the engine can gate it)."""

    def __init__(self, engine, tag, seed):
        self.engine, self.tag, self.oracle = engine, tag, OraclePolicy(rng_seed=seed)

    async def act(self, env):
        await self.engine.generate([], SamplingParams(seed=self.tag))
        return await self.oracle.act(env)


def test_a_slow_generation_does_not_block_other_envs():
    cfg = small_config(envs=4)
    samples = generate_synthetic(cfg.data.synth, n=3, seed=2)
    requests = make_requests(samples, 1)
    engine = GatedEngine()
    tags = {requests[0].episode_id: "slow"}
    runner = EnvRunner(
        cfg, lambda req, eng, tok: EngineOracle(eng, tags.get(req.episode_id, "fast"), req.seed), engines=[engine]
    )

    async def main():
        slow = asyncio.create_task(runner.run_episode(requests[0]))
        # the other two episodes run to the end while the slow one's first request is still pending
        fast = await asyncio.wait_for(asyncio.gather(*(runner.run_episode(r) for r in requests[1:])), timeout=30)
        assert not slow.done() and runner.active == 1
        engine.gate.set()
        return await slow, fast

    slow, fast = asyncio.run(main())
    assert all(t.reward == 1.0 for t in [slow, *fast])
    assert engine.calls.count("slow") == slow.num_turns


class CountingEngine:
    def __init__(self, fail_first: int = 0, error: type = ActorUnavailableError):
        self.calls = 0
        self.fail_first = fail_first
        self.error = error

    async def generate(self, prompt_ids, params):
        self.calls += 1
        if self.calls <= self.fail_first:
            raise self.error("engine restarting", None) if self.error is ActorUnavailableError else self.error()
        return Generation([7], [-0.5], "stop", 3)


def test_engine_group_least_loaded_and_sticky():
    engines = [CountingEngine(), CountingEngine(), CountingEngine()]
    group = ReplicaRouter(engines)
    clients = [group.acquire(f"ep{i}") for i in range(6)]
    assert group.load() == [2, 2, 2]
    first = clients[0].replica
    group.release("ep0")
    group.release("ep3")
    assert group.load()[first] == 0
    assert group.acquire("ep6").replica == first  # least loaded wins

    async def turns():
        for _ in range(4):
            await clients[1].generate([1, 2], SamplingParams())

    asyncio.run(turns())
    assert [e.calls for e in engines] == [4 if i == clients[1].replica else 0 for i in range(3)]  # sticky


def test_engine_group_retries_a_restarting_replica_then_moves_the_episode():
    flaky = CountingEngine(fail_first=2)
    group = ReplicaRouter([flaky], max_retries=3, retry_wait_s=0.0)
    gen = asyncio.run(group.acquire("a").generate([1], SamplingParams()))
    assert gen.weight_version == 3 and flaky.calls == 3 and group.retries == 2

    dead, healthy = CountingEngine(fail_first=10**6), CountingEngine()
    group = ReplicaRouter([dead, healthy], max_retries=2, retry_wait_s=0.0)
    client = group.acquire("b")
    assert client.replica == 0
    asyncio.run(client.generate([1], SamplingParams()))
    assert client.replica == 1 and healthy.calls == 1 and group.load() == [0, 1]

    # a lone replica being restarted is waited for (a model load can take minutes), past max_retries
    slow = CountingEngine(fail_first=20)
    group = ReplicaRouter([slow], max_retries=2, retry_wait_s=0.0)
    assert asyncio.run(group.acquire("c").generate([1], SamplingParams())).weight_version == 3 and slow.calls == 21

    group = ReplicaRouter([CountingEngine(fail_first=10**6)], max_retries=2, retry_wait_s=0.0, restart_wait_s=0.0)
    with pytest.raises(EngineError, match="failed"):
        asyncio.run(group.acquire("d").generate([1], SamplingParams()))
    group = ReplicaRouter([CountingEngine(fail_first=10**6, error=ActorDiedError)], max_retries=2, retry_wait_s=0.0)
    with pytest.raises(EngineError, match="failed 3 times"):  # dead for good: no waiting
        asyncio.run(group.acquire("e").generate([1], SamplingParams()))
