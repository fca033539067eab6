"""`ReplicaRouter`: the engine replicas one rollout worker talks to, least-loaded pick, sticky per episode.

An episode is pinned to one replica for all its turns so the engine's prefix cache sees the growing
conversation. The group holds either Ray actor handles of engines (`engines/actor.py`) or local `Engine`
objects (in-process benchmarks and tests); both are driven through `await ...generate(...)`.
A replica that dies and is being restarted by Ray makes a request fail with an actor error: the request
is retried on the same replica, and after `max_retries` failures the episode moves to another replica.
A replica Ray is still restarting (ActorUnavailableError: loading a model can take minutes) is waited
for up to `restart_wait_s` when no other replica can take the episode; one dead for good
(ActorDiedError, its restarts used up) fails the episode after `max_retries` tries per replica.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from atommem.errors import EngineError
from atommem.engines.base import Generation, SamplingParams


def _actor_errors() -> tuple[type[BaseException], ...]:
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    return (RayActorError, ActorDiedError, ActorUnavailableError)


def _is_actor(engine: Any) -> bool:
    from ray.actor import ActorHandle

    return isinstance(engine, ActorHandle)


class ReplicaRouter:
    def __init__(self, engines: list[Any], *, max_retries: int = 3, retry_wait_s: float = 1.0, offset: int = 0,
                 restart_wait_s: float = 600.0):
        """`offset` rotates tie-breaking so several workers do not all start on replica 0."""
        if not engines:
            raise EngineError("ReplicaRouter needs at least one engine (engine.num_engines >= 1)")
        self.engines = list(engines)
        self.max_retries = max_retries
        self.retry_wait_s = retry_wait_s
        self.restart_wait_s = restart_wait_s
        self._actors = [_is_actor(e) for e in self.engines]
        self._episodes: dict[str, int] = {}  # episode_id -> replica
        self._load = [0] * len(self.engines)  # episodes pinned per replica
        self._next = offset
        self.retries = 0  # requests re-sent after an engine failure

    def __len__(self) -> int:
        return len(self.engines)

    def load(self) -> list[int]:
        return list(self._load)

    def acquire(self, episode_id: str) -> "StickyEngine":
        """Pin `episode_id` to the least-loaded replica (ties rotate) and return its client."""
        if episode_id not in self._episodes:
            self._pin(episode_id, exclude=None)
        return StickyEngine(self, episode_id)

    def release(self, episode_id: str) -> None:
        idx = self._episodes.pop(episode_id, None)
        if idx is not None:
            self._load[idx] -= 1

    def replica_of(self, episode_id: str) -> int:
        return self._episodes[episode_id]

    def _pin(self, episode_id: str, exclude: int | None) -> int:
        n = len(self.engines)
        order = [(self._next + i) % n for i in range(n)]
        candidates = [i for i in order if i != exclude] or order
        idx = min(candidates, key=lambda i: self._load[i])
        self._next = (idx + 1) % n
        self.release(episode_id)
        self._episodes[episode_id] = idx
        self._load[idx] += 1
        return idx

    async def _call(self, idx: int, prompt_ids: list[int], params: SamplingParams) -> Generation:
        engine = self.engines[idx]
        if self._actors[idx]:
            return await engine.generate.remote(prompt_ids, params)
        return await engine.generate(prompt_ids, params)

    async def generate(self, episode_id: str, prompt_ids: list[int], params: SamplingParams) -> Generation:
        from ray.exceptions import ActorUnavailableError

        errors = _actor_errors()
        idx = self._episodes[episode_id]
        failures = 0
        first_failure = time.monotonic()
        while True:
            try:
                return await self._call(idx, prompt_ids, params)
            except errors as exc:
                failures += 1
                self.retries += 1
                restarting = isinstance(exc, ActorUnavailableError) and time.monotonic() - first_failure < self.restart_wait_s
                if failures > self.max_retries * len(self.engines) and not restarting:
                    raise EngineError(
                        f"every engine replica failed {failures} times in a row for episode {episode_id}: {exc}"
                    ) from exc
                if failures % self.max_retries == 0 and len(self.engines) > 1:
                    idx = self._pin(episode_id, exclude=idx)  # this replica stays down: move the episode
                await asyncio.sleep(self.retry_wait_s)


class StickyEngine:
    """The `Engine` a policy sees for one episode: every request goes to the episode's replica."""

    def __init__(self, group: ReplicaRouter, episode_id: str):
        self._group = group
        self.episode_id = episode_id

    @property
    def replica(self) -> int:
        return self._group.replica_of(self.episode_id)

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        return await self._group.generate(self.episode_id, prompt_ids, params)
