"""`LocalRunners`: the `submit` / `results` interface of `EnvRunnerGroup`, played in this process without Ray.

For scripted policies (oracle, *-scripted baselines), tests and quick checks: one in-process `EnvRunner`
plays every submitted episode concurrently on a private event loop, so the episodes, trajectories and
summaries are exactly those a Ray runner would produce. `results()` yields the `Trajectory` itself where
the Ray group yields its ObjectRef.
"""

from __future__ import annotations

import asyncio
from typing import Any, Iterator

from atommem.config import Config
from atommem.rollout.env_runner import EnvRunner, PolicyFactory
from atommem.rollout.records import EpisodeRequest, TrajectorySummary


class LocalRunners:
    def __init__(self, cfg: Config, policy: str | PolicyFactory, model_path: str | None = None, *,
                 engines: list[Any] | None = None, tokenizer: Any = None, policy_kwargs: dict | None = None,
                 temperature: float | None = None):
        """As `EnvRunner`: `engines` are local `Engine` objects; `tokenizer` overrides the one at `model_path`."""
        self._runner_args = (cfg, policy, engines, model_path)
        self._runner_kwargs = {"policy_kwargs": policy_kwargs, "temperature": temperature, "tokenizer": tokenizer,
                               "name": "local-runner"}
        self._queue: list[EpisodeRequest] = []

    def submit(self, requests: list[EpisodeRequest]) -> None:
        self._queue += requests

    def results(self) -> Iterator[tuple[Any, TrajectorySummary]]:
        """Play everything submitted so far; yield (trajectory, summary) in submission order."""
        requests, self._queue = self._queue, []
        # A fresh runner per call: its semaphore and batching embedder belong to one event loop.
        runner = EnvRunner(*self._runner_args, **self._runner_kwargs)

        async def play_all() -> list[tuple[Any, TrajectorySummary]]:
            return list(await asyncio.gather(*(runner.play(r) for r in requests)))

        yield from asyncio.run(play_all())

    def shutdown(self) -> None:
        self._queue.clear()

    def __enter__(self) -> "LocalRunners":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
