"""HFEngine: batched decoding equals one-by-one greedy, raw logprobs, stops, weight loading and sync."""

from __future__ import annotations

import asyncio

import pytest
import torch

from atommem.errors import EngineError
from atommem.engines.base import Engine, Generation, SamplingParams
from atommem.engines.hf import HFEngine
from helpers_models import make_tiny_model_dir
from weight_sync_support import sync_over_gloo

GREEDY = SamplingParams(temperature=0.0, max_tokens=12)


def scrambled(engine: HFEngine, seed: int, scale: float = 0.3) -> list[tuple[str, torch.Tensor]]:
    """Random weights with a large scale: a freshly initialised tiny model repeats one token forever,
    which would make 'same output' comparisons vacuous."""
    g = torch.Generator().manual_seed(seed)
    params = engine.model.named_parameters()  # tied embeddings once
    return [(n, torch.randn(t.shape, generator=g) * scale) for n, t in params if "norm" not in n]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("hf"))


@pytest.fixture()
def engine(model_dir):
    eng = HFEngine(str(model_dir), max_batch_size=8, batch_wait_ms=5.0, seed=0)
    eng.load_weights(scrambled(eng, seed=1), version=1)
    yield eng
    eng.close()


@pytest.fixture()
def prompts(engine):
    tok = engine.tokenizer
    texts = [
        "zorp city lima .",
        "<|system|>You are a reading agent.<|user|>pet of blix ?<|assistant|>",
        "a",
        "the quick brown fox jumps over the lazy dog . " * 4,
        "<add_memory> zorp city lima </add_memory>",
        "Memory 3: blix pet owl\nMemory 4: zorp city lima",
    ]
    return [tok.encode(t, add_special_tokens=False) for t in texts]


def gather(engine, prompts, params):
    async def run():
        ps = params if isinstance(params, list) else [params] * len(prompts)
        return await asyncio.gather(*(engine.generate(p, sp) for p, sp in zip(prompts, ps)))

    return asyncio.run(run())


def hf_greedy(engine, prompt, max_new):
    ids = torch.tensor([prompt])
    out = engine.model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, do_sample=False,
        eos_token_id=engine.eos_token_id, pad_token_id=engine.pad_token_id,
    )
    return out[0, len(prompt):].tolist()


def test_serves_a_caller_that_knows_only_the_engine_protocol(engine, prompts):
    async def drive(eng: Engine):  # every call awaited with exactly the arguments `Engine` declares
        ready = await eng.health()
        before = await eng.generate(prompts[0], SamplingParams(temperature=0.0, max_tokens=5))
        await sync_over_gloo(eng, scrambled(engine, seed=2), version=3)
        after = await eng.generate(prompts[0], SamplingParams(temperature=0.0, max_tokens=5))
        return ready, before, after, await eng.health()

    ready, before, after, health = asyncio.run(drive(engine))
    assert ready["ready"] is True and ready["weight_version"] == 1
    for gen in (before, after):
        assert isinstance(gen, Generation) and 1 <= len(gen.token_ids) <= 5 and len(gen.logprobs) == len(gen.token_ids)
        assert gen.finish_reason == ("stop" if gen.token_ids[-1] == engine.eos_token_id else "length")
    assert (before.weight_version, after.weight_version, health["weight_version"]) == (1, 3, 3)


def test_batched_greedy_equals_one_by_one_generate(engine, prompts):
    gens = gather(engine, prompts, GREEDY)
    assert engine.stats["batches"] == 1  # all six coalesced into one batch
    outputs = set()
    for prompt, gen in zip(prompts, gens):
        expected = hf_greedy(engine, prompt, GREEDY.max_tokens)
        assert gen.token_ids == expected
        assert len(gen.logprobs) == len(gen.token_ids)
        outputs.add(tuple(gen.token_ids))
    assert len(outputs) == len(prompts)  # the comparison is not vacuous: prompts decode differently


def test_logprobs_are_raw_log_softmax_of_a_full_forward(engine, prompts):
    params = SamplingParams(temperature=1.3, top_p=0.8, max_tokens=10, seed=7)
    gens = gather(engine, prompts, params)
    for prompt, gen in zip(prompts, gens):
        ids = torch.tensor([prompt + gen.token_ids])
        with torch.no_grad():
            logits = engine.model(ids).logits[0, len(prompt) - 1 : -1].float()
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(gen.token_ids).unsqueeze(1)).squeeze(1)
        assert torch.allclose(torch.tensor(gen.logprobs), expected, atol=1e-4)


def test_seeded_sampling_is_reproducible_whatever_the_batch(engine, prompts):
    params = SamplingParams(temperature=1.0, top_p=0.95, max_tokens=10, seed=123)
    alone = gather(engine, prompts[:1], params)[0]
    mixed = gather(engine, prompts, [params] + [SamplingParams(temperature=1.0, max_tokens=5)] * (len(prompts) - 1))[0]
    assert alone.token_ids == mixed.token_ids
    other = gather(engine, prompts[:1], SamplingParams(temperature=1.0, top_p=0.95, max_tokens=10, seed=124))[0]
    assert other.token_ids != alone.token_ids


def test_stop_ids_and_eos_stop_and_are_kept(engine, prompts):
    free = gather(engine, prompts[:1], GREEDY)[0].token_ids
    stop_at = next(i for i in range(1, len(free)) if free[i] not in free[:i])
    gen = gather(engine, prompts[:1], SamplingParams(temperature=0.0, max_tokens=12, stop_token_ids=[free[stop_at]]))[0]
    assert gen.token_ids == free[: stop_at + 1] and gen.finish_reason == "stop"
    engine.eos_token_id = free[stop_at]  # make the model "emit EOS" there: EOS stops without being asked
    gen = gather(engine, prompts[:1], GREEDY)[0]
    assert gen.token_ids == free[: stop_at + 1] and gen.finish_reason == "stop"


def test_per_request_max_tokens_and_length_finish(engine, prompts):
    caps = [1, 3, 12, 5, 7, 2]
    gens = gather(engine, prompts, [SamplingParams(temperature=0.0, max_tokens=c) for c in caps])
    for prompt, cap, gen in zip(prompts, caps, gens):
        assert len(gen.token_ids) == cap and gen.finish_reason == "length"
        assert gen.token_ids == hf_greedy(engine, prompt, cap)  # rows leaving the batch do not disturb others


def test_load_weights_changes_outputs_and_version(engine, prompts):
    before = gather(engine, prompts[:2], GREEDY)
    assert {g.weight_version for g in before} == {1}
    engine.load_weights(scrambled(engine, seed=2), version=5)
    after = gather(engine, prompts[:2], GREEDY)
    assert {g.weight_version for g in after} == {5}
    assert [g.token_ids for g in after] != [g.token_ids for g in before]
    assert asyncio.run(engine.health())["weight_version"] == 5
    with pytest.raises(EngineError, match="unknown weight 'nope'"):
        engine.load_weights([("nope", torch.zeros(1))], version=6)
    with pytest.raises(EngineError, match="shape"):
        engine.load_weights([("model.embed_tokens.weight", torch.zeros(2, 2))], version=6)
    assert engine.weight_version == 5


def test_twenty_concurrent_coroutines_all_complete_in_few_batches(engine, prompts):
    async def run():
        tasks = [
            engine.generate(prompts[i % len(prompts)], SamplingParams(temperature=1.0, max_tokens=4 + i % 5)) for i in range(20)
        ]
        mid = await engine.health()
        return await asyncio.gather(*tasks), mid

    gens, _ = asyncio.run(run())
    assert len(gens) == 20 and all(1 <= len(g.token_ids) <= 8 for g in gens)
    health = asyncio.run(engine.health())
    assert health["requests"] == 20 and 3 <= health["batches"] < 20  # max_batch_size 8 -> at least 3 batches
    assert health["generated_tokens"] == sum(len(g.token_ids) for g in gens) and health["queue_depth"] == 0


def test_invalid_requests_are_engine_errors(engine):
    with pytest.raises(EngineError, match="non-empty"):
        gather(engine, [[]], GREEDY)
    with pytest.raises(EngineError, match="vocabulary"):
        gather(engine, [[engine.vocab_size + 5]], GREEDY)
    with pytest.raises(EngineError, match="positions"):
        gather(engine, [[1] * engine.max_positions], GREEDY)
    with pytest.raises(EngineError, match="max_tokens"):
        gather(engine, [[5]], SamplingParams(max_tokens=0))


def test_missing_model_is_an_engine_error(tmp_path):
    with pytest.raises(EngineError, match="does not exist"):
        HFEngine(str(tmp_path / "absent"))


def test_receive_weights_from_a_gloo_sender(engine, prompts):
    new = scrambled(engine, seed=9)
    report = asyncio.run(sync_over_gloo(engine, new, version=11, bucket_bytes=1 << 12))  # several buckets
    assert report["version"] == 11 and report["tensors"] == len(new)
    state = engine.model.state_dict()
    assert all(torch.equal(state[n], t) for n, t in new)
    assert gather(engine, prompts[:1], GREEDY)[0].weight_version == 11


# ---------------------------------------------------------------------- ModelPolicy over the engine
def make_env(tokenizer):
    from atommem.config import EnvConfig, MemoryConfig
    from atommem.data.synthetic import generate_synthetic
    from atommem.env.memory_env import MemoryEnv
    from atommem.memory.embedders import HashEmbedder
    from helpers_models import TEST_SYNTH

    sample = generate_synthetic(TEST_SYNTH, n=1, seed=3)[0]
    env = MemoryEnv(EnvConfig(chunk_tokens=64, chunk_overlap=0, strict_format=True), MemoryConfig(), HashEmbedder(dim=32), tokenizer=tokenizer)
    env.reset(options={"sample": sample})
    return env


class ScriptedEngine:
    """Returns fixed ids; lets the test check what ModelPolicy does with an engine's answer."""

    def __init__(self, token_ids, finish_reason):
        self.token_ids, self.finish_reason, self.prompts = token_ids, finish_reason, []

    async def generate(self, prompt_ids, params):
        self.prompts.append((list(prompt_ids), params))
        return Generation(list(self.token_ids), [-0.5] * len(self.token_ids), self.finish_reason, weight_version=7)


def test_model_policy_keeps_tags_drops_eos_and_reports_ids(engine):
    from atommem.policies.model import ModelPolicy

    tok = engine.tokenizer
    env = make_env(tok)
    response = tok.encode("<add_memory> zorp city lima </add_memory>", add_special_tokens=False) + [tok.eos_token_id]
    scripted = ScriptedEngine(response, "stop")
    params = SamplingParams(temperature=1.0, max_tokens=32)
    out = asyncio.run(ModelPolicy(scripted, tok, params).act(env))
    assert out.text == "<add_memory> zorp city lima </add_memory>"
    assert out.prompt_ids == env.prompt_ids(tok) == scripted.prompts[0][0]
    assert scripted.prompts[0][1] == params
    assert out.response_ids == response and out.logprobs == [-0.5] * len(response)
    assert out.weight_version == 7 and out.complete
    truncated = asyncio.run(ModelPolicy(ScriptedEngine(response[:3], "length"), tok, params).act(env))
    assert not truncated.complete and truncated.text == tok.decode(response[:3], skip_special_tokens=False)


def test_model_policy_plays_an_episode_with_the_hf_engine(engine):
    from atommem.policies.model import ModelPolicy

    tok = engine.tokenizer
    env = make_env(tok)
    params = SamplingParams(temperature=1.0, max_tokens=6, seed=0)

    async def play():
        turns = []
        while not env.done and len(turns) < 60:
            out = await ModelPolicy(engine, tok, params).act(env)
            assert out.prompt_ids == env.prompt_ids(tok)
            await env.astep(out.text, complete=out.complete)
            turns.append(out)
        return turns

    turns = asyncio.run(play())
    assert env.done and turns
    for out in turns:
        assert 1 <= len(out.response_ids) <= 6 and len(out.logprobs) == len(out.response_ids)
        assert out.complete == (out.response_ids[-1] == tok.eos_token_id) and out.weight_version == 1


# ---------------------------------------------------------------------- continuous batching
async def until_steps(engine, steps):
    """Wait until the running batch has decoded `steps` more tokens (requests then join mid-batch)."""
    target = engine.stats["decode_steps"] + steps
    while engine.stats["decode_steps"] < target:
        await asyncio.sleep(0.001)


def test_requests_joining_a_running_batch_decode_as_if_alone(engine, prompts):
    engine.max_batch_size = 4  # six requests, four slots: later ones also wait for a row to retire
    caps = [20, 9, 14, 6, 11, 16]
    seeded = SamplingParams(temperature=1.0, top_p=0.9, max_tokens=10, seed=5)

    async def run():
        tasks = [asyncio.ensure_future(engine.generate(prompts[0], SamplingParams(temperature=0.0, max_tokens=caps[0])))]
        for i in range(1, len(prompts)):
            await until_steps(engine, 2)
            tasks.append(asyncio.ensure_future(engine.generate(prompts[i], SamplingParams(temperature=0.0, max_tokens=caps[i]))))
        await until_steps(engine, 1)
        tasks.append(asyncio.ensure_future(engine.generate(prompts[2], seeded)))
        return await asyncio.gather(*tasks)

    gens = asyncio.run(run())
    assert engine.stats["joined_running"] >= 4  # admitted between decode steps, not after the batch drained
    for prompt, cap, gen in zip(prompts, caps, gens):
        assert gen.token_ids == hf_greedy(engine, prompt, cap)
        assert len(gen.logprobs) == len(gen.token_ids)
    assert gens[-1].token_ids == gather(engine, prompts[2:3], seeded)[0].token_ids  # same seed, alone
    assert engine.generate_batch([(p, GREEDY) for p in prompts]) == gather(engine, prompts, GREEDY)


def test_weight_update_lands_between_decode_steps(engine, prompts):
    engine.eos_token_id = -1  # no early stop: the first request surely decodes all its tokens

    async def run():
        first = asyncio.ensure_future(engine.generate(prompts[0], SamplingParams(temperature=0.0, max_tokens=40)))
        await until_steps(engine, 2)
        await sync_over_gloo(engine, scrambled(engine, seed=2), version=7)
        assert not first.done()  # the update did not wait for the running batch to finish
        second = await engine.generate(prompts[1], GREEDY)
        return await first, second

    first, second = asyncio.run(run())
    assert first.weight_version == 1 and len(first.token_ids) == 40  # stamped with the version at its first token
    assert second.weight_version == 7
