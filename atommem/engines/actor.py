"""Engines as local objects or as Ray actors, plus a client that makes an actor look like an `Engine`.

`make_engine` picks the backend from `EngineConfig.kind`. `make_engine_actor` wraps the same engine in
an async Ray actor (restarted up to `max_restarts` times; `generate`/`health` are retried on a restarted
actor, weight-sync calls are not: a broadcast cannot be replayed, the fleet re-syncs instead). A
restarted engine comes back with the weights on disk, and so does one added to a run already past
them: such an engine holds every `generate` until its fleet has given it the run's current weights
(`engines/fleet.py` watches for it), so it never serves old weights under any version stamp. Each
generation carries the start id of the process that made it (`Generation.engine_id`, kept per turn in
trajectories); `health` reports it with the pid, the calls served and how many came before the weights
were current (0).
"""

from __future__ import annotations

import asyncio
import functools
import os
import uuid
import warnings
from typing import Any

import torch

from atommem.config import EngineConfig
from atommem.errors import EngineError
from atommem.engines.base import Engine, Generation, SamplingParams


def make_engine(
    cfg: EngineConfig, model_path: str, seed: int = 0, dtype: str = "float32", num_threads: int | None = None
) -> Engine:
    """The engine `cfg.kind` names, in this process (`num_threads`: torch intra-op threads of an hf engine)."""
    if cfg.kind == "hf":
        from atommem.engines.hf import HFEngine

        device = "cuda" if cfg.num_gpus > 0 and torch.cuda.is_available() else "cpu"
        return HFEngine(
            str(model_path), cfg.max_batch_size, cfg.batch_wait_ms, dtype=dtype, seed=seed, device=device, num_threads=num_threads
        )
    if cfg.kind == "vllm":
        from atommem.engines.vllm import VLLMEngine

        return VLLMEngine(
            str(model_path),
            tensor_parallel_size=cfg.tensor_parallel_size,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            kv_cache_gb=cfg.kv_cache_gb,
            enforce_eager=cfg.enforce_eager,
            max_num_seqs=cfg.max_batch_size,
            enable_prefix_caching=cfg.enable_prefix_caching,
            dtype=dtype,
            seed=seed,
        )
    if cfg.kind == "openai":
        from atommem.engines.openai import OpenAIEngine

        if not cfg.base_url:
            raise EngineError("engine.kind=openai needs engine.base_url (e.g. http://host:8000/v1)")
        return OpenAIEngine(cfg.base_url, cfg.served_model or str(model_path), cfg.api_key, cfg.request_timeout_s)
    raise EngineError(f"unknown engine.kind {cfg.kind!r} (use hf, vllm or openai)")


class EngineActor:
    """Body of the Ray actor: forwards to one engine. All methods are async (an asyncio actor)."""

    def __init__(self, cfg: EngineConfig, model_path: str, seed: int = 0, dtype: str = "float32", name: str = "engine",
                 needs_weights: bool = False):
        import ray

        # the actor owns its process: match torch's threads to the CPUs Ray reserved for it
        self.engine = make_engine(cfg, model_path, seed=seed, dtype=dtype, num_threads=max(1, int(cfg.num_cpus)))
        self.name = name
        # Ray runs __init__ again, with the first start's arguments, in the new process of a restarted actor.
        # (The property reads RuntimeContext.actor_id, deprecated: a warning in every engine's log otherwise.)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.restarted = bool(ray.get_runtime_context().was_current_actor_reconstructed)
        # this process: a weight-sync group is built for one set of them, and its generations carry it
        self.incarnation = uuid.uuid4().hex
        self.version = 0  # of the weights loaded (those on disk are 0); only goes forward
        self._current = asyncio.Event()  # set once the loaded weights are the run's current ones
        self.served = 0  # generate calls this process handed to its engine
        self.served_before_current: int | None = None  # of those, before its weights were the run's (always 0)
        if not (needs_weights or self.restarted):
            self._mark_current()

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        from atommem.metrics import get_metrics

        await self._current.wait()
        self.served += 1
        gen = await self.engine.generate(prompt_ids, params)
        gen.engine_id = self.incarnation
        get_metrics().generated_tokens(len(gen.token_ids), engine=self.name)
        return gen

    def _mark_current(self) -> None:
        if not self._current.is_set():
            self.served_before_current = self.served
            self._current.set()

    def _loaded(self, version: int) -> None:
        self.version = version
        self._mark_current()

    async def init_weight_sync(
        self, master_addr: str, master_port: int, rank: int, world_size: int, backend: str = "gloo"
    ) -> None:
        await self.engine.init_weight_sync(master_addr, master_port, rank, world_size, backend)

    async def receive_weights(self, version: int) -> dict:
        """One broadcast from the learner (the fleet keeps versions going forward: a receiver that refused
        to take part would stall the sender)."""
        out = await self.engine.receive_weights(version)
        self._loaded(version)
        return out

    async def weights_are_current(self) -> None:
        """The fleet's word that the weights loaded from disk are still the run's (no sync happened yet)."""
        self._mark_current()

    async def weights_digest(self) -> str | None:
        """sha256 of the engine's weights as the learner names them (`checkpoints.weights_digest`); None from a
        backend that holds them in another layout (vLLM packs qkv and gate/up) or elsewhere (a remote server)."""
        digest = getattr(self.engine, "weights_digest", None)
        return None if digest is None else await digest()

    async def health(self) -> dict:
        return {**await self.engine.health(), "restarted": self.restarted, "needs_weights": not self._current.is_set(),
                "incarnation": self.incarnation, "pid": os.getpid(), "served": self.served,
                "served_before_current": self.served_before_current}


@functools.cache
def _remote_class():
    import ray

    retried = ray.method(max_task_retries=-1)  # until the actor's restarts are used up
    body = type(
        "EngineActor",
        (EngineActor,),
        {"generate": retried(EngineActor.generate), "health": retried(EngineActor.health)},
    )
    return ray.remote(body)


def make_engine_actor(
    cfg: EngineConfig, model_path: str, name: str | None = None, seed: int = 0, dtype: str = "float32",
    needs_weights: bool = False,
) -> Any:
    """A Ray actor handle hosting `make_engine(cfg, model_path)`; resources and restarts from `cfg`.
    `needs_weights`: it joins a run past the weights on disk and serves nothing until it is synced."""
    options: dict[str, Any] = dict(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, max_restarts=cfg.max_restarts)
    if name is not None:
        options["name"] = name
    return _remote_class().options(**options).remote(cfg, str(model_path), seed, dtype, name or "engine", needs_weights)
