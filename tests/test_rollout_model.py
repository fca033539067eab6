"""Token in / token out with the real HFEngine on a tiny model: what the trajectory stores is exactly what
the env templated and what the engine sampled (no re-tokenization)."""

from __future__ import annotations

import asyncio

from atommem.data.synthetic import generate_synthetic
from atommem.engines.hf import HFEngine
from atommem.env.memory_env import MemoryEnv
from atommem.memory.embedders import make_embedder
from atommem.models.loading import load_tokenizer
from atommem.rollout.records import make_requests
from atommem.rollout.env_runner import EnvRunner
from helpers_models import TEST_SYNTH, make_tiny_model_dir
from rollout_support import small_config


class RecordingEngine:
    def __init__(self, engine):
        self.engine = engine
        self.calls: list[tuple[list[int], list[int], list[float], int]] = []

    async def generate(self, prompt_ids, params):
        gen = await self.engine.generate(prompt_ids, params)
        self.calls.append((list(prompt_ids), list(gen.token_ids), list(gen.logprobs), gen.weight_version))
        return gen


def _model_runner(tmp_path, envs: int, wrap=lambda engine: engine):
    """(config, tokenizer, engine, EnvRunner playing the tiny model through the real HFEngine)."""
    model_dir = make_tiny_model_dir(tmp_path)
    cfg = small_config(envs=envs)
    cfg.data.synth = TEST_SYNTH
    cfg.sampling.max_tokens = 12
    tok = load_tokenizer(model_dir)
    engine = wrap(HFEngine(str(model_dir), max_batch_size=8, batch_wait_ms=1.0, seed=0))
    return cfg, tok, engine, EnvRunner(cfg, "model", engines=[engine], tokenizer=tok)


def test_trajectory_tokens_are_the_envs_prompts_and_the_engines_samples(tmp_path):
    cfg, tok, engine, runner = _model_runner(tmp_path, 4, RecordingEngine)
    samples = generate_synthetic(TEST_SYNTH, n=2, seed=3)
    requests = make_requests(samples, 2)

    async def main():
        return await asyncio.gather(*(runner.run_episode(r) for r in requests))

    trajs = asyncio.run(main())
    turns = [turn for t in trajs for turn in t.turns]
    assert len(turns) == len(engine.calls)
    recorded = sorted(engine.calls)
    stored = sorted((t.prompt_ids, t.response_ids, t.logprobs, t.weight_version) for t in turns)
    assert stored == recorded  # response ids/logprobs exactly as sampled, prompts exactly as sent
    assert all(len(t.response_ids) == len(t.logprobs) > 0 for t in turns)

    # replaying the responses through a fresh env reproduces every turn's prompt ids
    for traj, req in zip(trajs, requests):
        env = MemoryEnv(cfg.env, cfg.memory, make_embedder(cfg.embedder), tokenizer=tok)
        env.reset(seed=req.seed, options={"sample": req.sample})
        for turn in traj.turns:
            assert env.prompt_ids(tok) == turn.prompt_ids
            assert turn.phase == env.phase
            env.step(turn.response_text, complete=turn.response_ids[-1] == tok.eos_token_id)
        assert env.done and env.result().reward == traj.reward


def test_a_rollout_replays_its_tokens_from_its_seed_whatever_runs_beside_it(tmp_path):
    _, _, _, runner = _model_runner(tmp_path, 8)
    requests = make_requests(generate_synthetic(TEST_SYNTH, n=3, seed=3), 2, seed=11)

    def responses(batch):
        async def main():
            return await asyncio.gather(*(runner.run_episode(r) for r in batch))

        return [[t.response_ids for t in traj.turns] for traj in asyncio.run(main())]

    together = responses(requests)
    assert responses(requests[:1]) == together[:1]  # alone, then beside five others: the same tokens
    # two episodes of one group share a sample, not a seed: temperature 1.0 samples them apart
    assert requests[0].sample is requests[1].sample and together[0] != together[1]
