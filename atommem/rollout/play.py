"""`play`: a one-shot batch of episodes on Ray (an engine fleet when the policy needs one + an EnvRunnerGroup).

Behind `atommem rollout` and quick checks; training keeps its runners and engines alive across steps.
"""

from __future__ import annotations

import time
from typing import Any

from atommem.config import Config
from atommem.data.schema import Sample
from atommem.errors import UserError
from atommem.rollout.env_runner import PolicyFactory, needs_engine
from atommem.rollout.env_runner_group import EnvRunnerGroup
from atommem.rollout.records import TrajectorySummary, make_requests


def play(
    cfg: Config,
    samples: list[Sample],
    group_size: int = 1,
    policy: str | PolicyFactory = "model",
    model_path: str | None = None,
    *,
    policy_kwargs: dict | None = None,
    temperature: float | None = None,
    nonce: str = "",
    progress: bool = True,
) -> tuple[list[tuple[Any, TrajectorySummary]], float]:
    """Play every sample `group_size` times; returns [(ObjectRef[Trajectory], summary)] and the wall seconds.

    Model-driven policies play on an `EngineFleet` for `model_path`, started here and stopped at the end.
    The trajectories stay readable after return (the driver owns them).
    """
    from tqdm import tqdm

    from atommem.runtime import init_ray

    if not samples:
        raise UserError("play: no samples to play (check the data path and --num-samples)")
    name = policy if isinstance(policy, str) else getattr(policy, "__name__", "custom")
    if needs_engine(policy) and model_path is None:
        raise UserError(f"policy {name!r} needs a model: set model.path (or pass model_path)")
    init_ray(cfg.cluster)
    fleet = None
    results: list[tuple[Any, TrajectorySummary]] = []
    try:
        if needs_engine(policy):
            from atommem.engines.fleet import EngineFleet

            fleet = EngineFleet(cfg, str(model_path))
        with EnvRunnerGroup(cfg, policy, fleet.handles if fleet else [], str(model_path) if model_path else None,
                            policy_kwargs=policy_kwargs, temperature=temperature) as group:
            group.wait_ready()
            start = time.perf_counter()
            group.submit(make_requests(samples, group_size, nonce=nonce, seed=cfg.trainer.seed))
            bar = tqdm(total=len(samples) * group_size, desc=f"rollout ({name})", unit="ep", disable=not progress)
            reward = 0.0
            for ref, summary in group.results():
                results.append((ref, summary))
                reward += summary.reward
                bar.update(1)
                bar.set_postfix(reward=f"{reward / len(results):.3f}", refresh=False)
            bar.close()
            wall = time.perf_counter() - start
    finally:
        if fleet is not None:
            fleet.shutdown()
    return results, wall
