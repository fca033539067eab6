"""`play`: run a batch of episodes on Ray (engines + EnvRunnerGroup) and summarise them.

The one-shot entry point behind `atommem rollout`, SFT data collection and quick checks; the training
loop keeps an `EnvRunnerGroup` alive across steps instead.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from atommem.actions import ACTION_KINDS
from atommem.config import Config
from atommem.data.schema import Sample
from atommem.errors import UserError
from atommem.rollout.records import TrajectorySummary, make_requests
from atommem.rollout.env_runner_group import EnvRunnerGroup
from atommem.rollout.env_runner import PolicyFactory, needs_engine


@dataclass
class RolloutStats:
    policy: str
    episodes: int
    wall_s: float
    env_steps: int
    generated_tokens: int
    mean_reward: float
    exact_match: float  # over questions
    mean_f1: float  # over questions
    mean_turns: float
    action_rates: dict[str, float] = field(default_factory=dict)  # ops per turn by kind (+ "error")
    replayed: int = 0  # episodes re-queued after their runner died

    @property
    def episodes_per_s(self) -> float:
        return self.episodes / self.wall_s if self.wall_s else 0.0

    @property
    def env_steps_per_s(self) -> float:
        return self.env_steps / self.wall_s if self.wall_s else 0.0

    @property
    def generated_tokens_per_s(self) -> float:
        return self.generated_tokens / self.wall_s if self.wall_s else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(
            episodes_per_s=self.episodes_per_s,
            env_steps_per_s=self.env_steps_per_s,
            generated_tokens_per_s=self.generated_tokens_per_s,
        )
        return d

    def format(self) -> str:
        rates = "  ".join(f"{k} {v:.2f}" for k, v in self.action_rates.items())
        return "\n".join(
            [
                f"policy {self.policy}: {self.episodes} episodes in {self.wall_s:.1f}s",
                f"  episodes/s {self.episodes_per_s:.2f}   env steps/s {self.env_steps_per_s:.1f}   "
                f"generated tokens/s {self.generated_tokens_per_s:.0f}",
                f"  mean reward {self.mean_reward:.3f}   EM {self.exact_match:.3f}   F1 {self.mean_f1:.3f}   "
                f"turns/episode {self.mean_turns:.1f}",
                f"  actions per turn: {rates}",
            ]
        )


def summarize(summaries: list[TrajectorySummary], policy: str, wall_s: float, replayed: int = 0) -> RolloutStats:
    n = len(summaries)
    turns = sum(s.num_turns for s in summaries)
    questions = [c for s in summaries for c in s.correct]
    f1 = [f for s in summaries for f in s.f1]
    kinds = (*ACTION_KINDS, "error")
    return RolloutStats(
        policy=policy,
        episodes=n,
        wall_s=wall_s,
        env_steps=turns,
        generated_tokens=sum(s.generated_tokens for s in summaries),
        mean_reward=sum(s.reward for s in summaries) / n if n else 0.0,
        exact_match=sum(questions) / len(questions) if questions else 0.0,
        mean_f1=sum(f1) / len(f1) if f1 else 0.0,
        mean_turns=turns / n if n else 0.0,
        action_rates={k: sum(s.action_counts.get(k, 0) for s in summaries) / turns if turns else 0.0 for k in kinds},
        replayed=replayed,
    )


def play(
    cfg: Config,
    samples: list[Sample],
    group_size: int = 1,
    policy: str | PolicyFactory = "model",
    model_path: str | None = None,
    *,
    engines: list[Any] | None = None,
    policy_kwargs: dict | None = None,
    temperature: float | None = None,
    nonce: str = "",
    seed: int = 0,
    progress: bool = True,
) -> tuple[list[tuple[Any, TrajectorySummary]], RolloutStats]:
    """Play every sample `group_size` times; returns [(ObjectRef[Trajectory], summary)] and stats.

    `engines`: engine actor handles to use; None starts `cfg.engine.num_engines` for `model_path` and
    stops them at the end (scripted policies such as "oracle" need none). The trajectories stay readable
    after return (the driver owns them).
    """
    from tqdm import tqdm

    from atommem.runtime import init_ray

    if not samples:
        raise UserError("play: no samples to play (check the data path and --num-samples)")
    name = policy if isinstance(policy, str) else getattr(policy, "__name__", "custom")
    own_engines = False
    if needs_engine(policy) and engines is None:
        if model_path is None:
            raise UserError(f"policy {name!r} needs a model: set model.path (or pass model_path)")
        from atommem.engines.actor import make_engine_actor

        init_ray(cfg.cluster)
        engines = [
            make_engine_actor(cfg.engine, str(model_path), seed=seed + i, dtype=cfg.model.dtype)
            for i in range(cfg.engine.num_engines)
        ]
        own_engines = True
    init_ray(cfg.cluster)
    requests = make_requests(samples, group_size, nonce=nonce, seed=seed)
    results: list[tuple[Any, TrajectorySummary]] = []
    group = EnvRunnerGroup(
        cfg,
        policy,
        engines,
        str(model_path) if model_path is not None else None,
        policy_kwargs=policy_kwargs,
        temperature=temperature,
    )
    try:
        import ray

        group.wait_ready()
        if engines:
            ray.get([handle.health.remote() for handle in engines])  # started and loaded
        start = time.perf_counter()
        group.submit(requests)
        bar = tqdm(total=len(requests), desc=f"rollout ({name})", unit="ep", disable=not progress)
        reward = 0.0
        for ref, summary in group.results():
            results.append((ref, summary))
            reward += summary.reward
            bar.update(1)
            bar.set_postfix(reward=f"{reward / len(results):.3f}", refresh=False)
        bar.close()
        wall = time.perf_counter() - start
    finally:
        group.shutdown()
        if own_engines:
            import ray

            for handle in engines:
                ray.kill(handle)
    return results, summarize([s for _, s in results], name, wall, replayed=group.replayed)
