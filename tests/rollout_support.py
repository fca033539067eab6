"""Helpers for the rollout tests: a small synthetic-task config that plays in well under a second."""

from __future__ import annotations

from atommem.config import Config, EnvConfig, MemoryConfig, SynthConfig


def small_config(envs: int = 8, workers: int = 1) -> Config:
    cfg = Config()
    cfg.env = EnvConfig(chunk_tokens=32, chunk_overlap=4, max_chunks=8, max_answer_steps=3, strict_format=True, prompt_style="compact")
    cfg.memory = MemoryConfig(top_k=2, render_budget_tokens=64)
    cfg.data.synth = SynthConfig(num_entities=4, num_attributes=2, facts_per_chunk=4, name_vocab=60)
    cfg.rollout.envs_per_worker = envs
    cfg.rollout.num_workers = workers
    cfg.rollout.num_cpus_per_worker = 0.25
    cfg.rollout.max_restarts = 2
    return cfg


class FailOn:
    """Policy factory: the oracle, except that episode `episode_id` raises on its first turn."""

    def __init__(self, episode_id: str):
        self.episode_id = episode_id

    def __call__(self, request, engine, tokenizer):
        from atommem.policies.oracle import OraclePolicy

        if request.episode_id == self.episode_id:
            return _Failing()
        return OraclePolicy(rng_seed=request.seed)


class _Failing:
    async def act(self, env):
        raise ValueError("policy exploded on purpose")
