"""Engine actors: the HF engine inside a Ray actor behaves like the local one, and once killed and restarted by
Ray it serves from its new process, holding every request until it is given weights."""

from __future__ import annotations

import asyncio

import pytest
import torch

from atommem.config import EngineConfig
from atommem.engines.actor import make_engine, make_engine_actor
from atommem.errors import EngineError
from atommem.engines.base import SamplingParams
from helpers_models import make_tiny_model_dir
from weight_sync_support import sync_over_gloo

pytestmark = pytest.mark.ray


def test_engine_actor_matches_local_engine_takes_weights_and_restarts_holding_requests(ray_local, tmp_path):
    model_dir = make_tiny_model_dir(tmp_path)
    cfg = EngineConfig(kind="hf", num_cpus=1, max_batch_size=4, max_restarts=1)
    local = make_engine(cfg, str(model_dir))
    actor = make_engine_actor(cfg, str(model_dir), name="engine-test-0")
    prompts = [[5, 9, 30], [7], [40, 41, 42, 43]]
    greedy = SamplingParams(temperature=0.0, max_tokens=5)
    g = torch.Generator().manual_seed(0)
    new = [(n, torch.randn(t.shape, generator=g) * 0.3) for n, t in local.model.named_parameters() if "norm" not in n]

    async def run():
        remote = await asyncio.gather(*(actor.generate.remote(p, greedy) for p in prompts))
        here = await asyncio.gather(*(local.generate(p, greedy) for p in prompts))
        await sync_over_gloo(actor, new, version=2)
        local.load_weights(new, version=2)
        remote2 = await asyncio.gather(*(actor.generate.remote(p, greedy) for p in prompts))
        here2 = await asyncio.gather(*(local.generate(p, greedy) for p in prompts))
        return remote, here, remote2, here2, await actor.health.remote()

    remote, here, remote2, here2, health = asyncio.run(run())
    assert [r.token_ids for r in remote] == [h.token_ids for h in here]
    assert [r.token_ids for r in remote2] == [h.token_ids for h in here2]
    assert [r.token_ids for r in remote2] != [r.token_ids for r in remote]
    assert {r.weight_version for r in remote2} == {2}
    assert {r.engine_id for r in remote + remote2} == {health["incarnation"]}
    assert health["ready"] and health["weight_version"] == 2 and health["requests"] == health["served"] == 6
    assert health["served_before_current"] == 0 and not health["restarted"]
    assert ray_local.get_actor("engine-test-0") is not None

    # killed: Ray restarts it with the weights on disk; a request sent meanwhile is held until weights come
    newer = [(n, t * -0.5) for n, t in new]
    local.load_weights(newer, version=3)

    async def restart():
        ray_local.kill(actor, no_restart=False)
        waiting = await actor.health.remote()
        while not waiting["restarted"]:  # the kill lands asynchronously: a loaded machine's old process may answer first
            waiting = await actor.health.remote()
        held = actor.generate.remote(prompts[0], greedy)  # the new process, before its weights are current
        answered, _ = ray_local.wait([held], timeout=2)
        await sync_over_gloo(actor, newer, version=3)
        return waiting, answered, await held, await local.generate(prompts[0], greedy), await actor.health.remote()

    waiting, answered, gen, expected, after = asyncio.run(restart())
    assert waiting["restarted"] and waiting["needs_weights"] and waiting["served"] == 0 and not answered
    assert (after["pid"], after["incarnation"]) != (health["pid"], health["incarnation"])
    assert gen.engine_id == after["incarnation"] and gen.weight_version == 3
    assert gen.token_ids == expected.token_ids != remote[0].token_ids  # the synced weights, not those on disk
    assert after["served"] == 1 and after["served_before_current"] == 0


def test_openai_kind_without_url_is_an_engine_error():
    with pytest.raises(EngineError, match="base_url"):
        make_engine(EngineConfig(kind="openai"), "tiny")
