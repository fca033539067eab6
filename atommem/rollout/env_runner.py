"""`EnvRunner`: plays MemoryEnv episodes concurrently on one asyncio loop (RLlib's EnvRunner role).

Each `play` call is one episode: a fresh MemoryEnv and a fresh policy, stepped turn by turn. Up to
`envs_per_worker` episodes run at once; while one awaits its engine request the loop steps the others,
so a slow generation never blocks a sibling env. All envs of a runner share one `BatchingEmbedder`, so
their memory writes and queries go to the embedder in batches. Model-driven episodes stick to one engine
replica (`ReplicaRouter`) for the prefix cache.

The class is plain Python (in-process use in benchmarks and tests); `EnvRunnerGroup` runs it as a Ray
actor, calling `play` with two return values: the `Trajectory` (stays in the object store, owned by the
driver) and its small `TrajectorySummary`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

from atommem.config import Config
from atommem.engines.base import SamplingParams
from atommem.env.episode import play_episode
from atommem.env.memory_env import MemoryEnv
from atommem.memory.embedders import BatchingEmbedder, make_embedder
from atommem.policies.base import Policy
from atommem.rollout.replica_router import ReplicaRouter, StickyEngine
from atommem.rollout.records import EpisodeRequest, TrajectorySummary
from atommem.trajectory import Trajectory

# (request, engine client or None, tokenizer or None) -> a fresh Policy for that one episode
PolicyFactory = Callable[[EpisodeRequest, "StickyEngine | None", Any], Policy]

MODEL_POLICIES = ("model", "atommem")  # names that mean "the trained policy on our engines"


def sampling_params(cfg: Config, tokenizer: Any, temperature: float | None = None) -> SamplingParams:
    """Engine sampling for rollouts from `cfg.sampling`; generation stops after the tokenizer's EOS."""
    stop = [tokenizer.eos_token_id] if tokenizer is not None and tokenizer.eos_token_id is not None else []
    return SamplingParams(
        temperature=cfg.sampling.temperature if temperature is None else temperature,
        top_p=cfg.sampling.top_p,
        max_tokens=cfg.sampling.max_tokens,
        stop_token_ids=stop,
    )


def builtin_policy_factory(
    name: str, cfg: Config, tokenizer: Any, policy_kwargs: dict | None = None, temperature: float | None = None
) -> PolicyFactory:
    """Factory for a registered policy name: "model" (ModelPolicy on the episode's engine), "oracle"
    (scripted teacher seeded by the request), or any name in `atommem.policies` that takes
    `engine`, `tokenizer` and `sampling` keywords (baselines)."""
    from atommem.policies import make_policy_factory

    kw = dict(policy_kwargs or {})
    if name == "oracle":
        build = make_policy_factory("oracle", tokenizer=tokenizer, **kw)
        return lambda request, engine, tok: build(rng_seed=request.seed)
    sampling = sampling_params(cfg, tokenizer, temperature)
    if name in MODEL_POLICIES:  # sampled from the request's seed: a rollout replays from the same weights
        build = make_policy_factory("atommem", tokenizer=tokenizer, sampling=sampling, **kw)
        return lambda request, engine, tok: build(engine=engine, seed=request.seed)
    build = make_policy_factory(name, tokenizer=tokenizer, sampling=sampling, **kw)
    return lambda request, engine, tok: build(engine=engine)


def needs_engine(policy: str | PolicyFactory) -> bool:
    """Named model-driven policies drive an engine; a custom factory gets engines only if given."""
    from atommem.baselines import needs_model

    return isinstance(policy, str) and needs_model(policy)


class EnvRunner:
    def __init__(
        self,
        cfg: Config,
        policy: str | PolicyFactory = "model",
        engines: list[Any] | None = None,
        model_path: str | None = None,
        *,
        name: str = "runner-0",
        index: int = 0,
        policy_kwargs: dict | None = None,
        temperature: float | None = None,
        tokenizer: Any = None,
    ):
        """`engines`: engine actor handles or local Engine objects (required unless policy="oracle").
        `model_path`: HF dir whose tokenizer drives chunking and prompt ids (None: oracle without ids)."""
        self.cfg = cfg
        self.name = name
        if tokenizer is None and model_path is not None:
            from atommem.models.loading import load_tokenizer

            tokenizer = load_tokenizer(model_path)
        self.tokenizer = tokenizer
        self.engines = ReplicaRouter(engines, offset=index) if engines else None
        if self.engines is None and needs_engine(policy):
            raise ValueError(f"EnvRunner policy {policy!r} needs engines; pass engine handles or use policy='oracle'")
        if isinstance(policy, str):
            policy = builtin_policy_factory(policy, cfg, tokenizer, policy_kwargs, temperature)
        self._factory = policy
        self._embedder = make_embedder(cfg.embedder)
        self.embedder = BatchingEmbedder(self._embedder, max_batch_texts=max(cfg.embedder.batch_size, 1))
        self._slots: asyncio.Semaphore | None = None
        self.active = 0  # episodes being stepped now
        self.episodes = 0  # episodes finished
        self.env_steps = 0

    def _semaphore(self) -> asyncio.Semaphore:
        if self._slots is None:  # created on the actor's event loop, not in __init__
            self._slots = asyncio.Semaphore(self.cfg.rollout.envs_per_worker)
        return self._slots

    async def run_episode(self, request: EpisodeRequest) -> Trajectory:
        """Play one episode to the end and return its token-level trajectory."""
        async with self._semaphore():
            self.active += 1
            try:
                return await self._play(request)
            finally:
                self.active -= 1

    async def play(self, request: EpisodeRequest) -> tuple[Trajectory, TrajectorySummary]:
        traj = await self.run_episode(request)
        summary = TrajectorySummary.of(traj, worker=self.name)
        _record_metrics(summary, self.name, traj.metadata.get("engine"))
        return traj, summary

    async def _play(self, request: EpisodeRequest) -> Trajectory:
        start = time.perf_counter()
        env = MemoryEnv(self.cfg.env, self.cfg.memory, self._embedder, tokenizer=self.tokenizer)
        env.reset(seed=request.seed, options={"sample": request.sample})
        engine = self.engines.acquire(request.episode_id) if self.engines is not None else None
        try:
            played = await play_episode(env, self._factory(request, engine, self.tokenizer), embedder=self.embedder)
            replica = engine.replica if engine is not None else None  # may have moved if its replica died
        finally:
            if self.engines is not None:
                self.engines.release(request.episode_id)
        res = played.result
        self.episodes += 1
        self.env_steps += len(played.turns)
        return Trajectory(
            uid=request.uid,
            group_index=request.group_index,
            sample_id=request.sample.id,
            source=request.sample.source,
            turns=played.turns,
            reward=res.reward,
            correct=list(res.correct),
            f1=list(res.f1),
            answers=list(res.answers),
            action_counts=dict(res.action_counts),
            num_errors=res.num_errors,
            context_tokens=res.context_tokens,
            episode_id=request.episode_id,
            metadata={"worker": self.name, "engine": replica, "wall_s": time.perf_counter() - start},
            state_counts={k: dict(v) for k, v in res.state_counts.items()},
        )

    def stats(self) -> dict:
        return {
            "name": self.name,
            "active": self.active,
            "episodes": self.episodes,
            "env_steps": self.env_steps,
            "embed_calls": self.embedder.num_calls,
            "embed_texts": self.embedder.num_texts,
            "engine_load": self.engines.load() if self.engines is not None else [],
            "engine_retries": self.engines.retries if self.engines is not None else 0,
        }

    def ping(self) -> str:
        return self.name


def _record_metrics(summary: TrajectorySummary, worker: str, engine: Any) -> None:
    from atommem.metrics import get_metrics

    metrics = get_metrics()
    metrics.episode_finished(summary, worker=worker)
    metrics.env_steps(summary.num_turns, worker=worker)
    if summary.generated_tokens:
        metrics.generated_tokens(summary.generated_tokens, engine=str(engine))
