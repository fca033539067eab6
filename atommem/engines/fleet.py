"""`EngineFleet`: the inference engines of one run, owned in one place: start, health, weight sync, shutdown.

Every stage that needs engines (rollouts, SFT teachers, training, evaluation, the demo) starts them
here, so they all get the same settings: `cfg.engine` (backend, replicas, resources, restarts),
`cfg.model.dtype`, and seeds `trainer.seed + i` for replica i.

Weight sync: the learner group's rank 0 and every engine form one dedicated broadcast group
(`weight_sync/`). The fleet builds it on the first sync (and again after a failed one, or when the set
of engines changed), then each sync is one broadcast from the learner that every engine receives; the
engines stamp later generations with the new version.
"""

from __future__ import annotations

import time
from typing import Any

from atommem.config import Config
from atommem.errors import EngineError


class EngineFleet:
    def __init__(self, cfg: Config, model_path: str, *, start_timeout_s: float = 900.0):
        """Start `cfg.engine.num_engines` engine actors serving `model_path` (on the current Ray) and wait
        until each answers its health check."""
        from atommem.engines.actor import make_engine_actor

        if cfg.engine.num_engines < 1:
            raise EngineError(f"engine.num_engines must be >= 1, got {cfg.engine.num_engines}")
        self.cfg = cfg
        self.model_path = str(model_path)
        self.handles: list[Any] = [
            make_engine_actor(cfg.engine, self.model_path, name=None, seed=cfg.trainer.seed + i, dtype=cfg.model.dtype)
            for i in range(cfg.engine.num_engines)
        ]
        self._sync_key: tuple | None = None  # the engines the current broadcast group was built for
        self.weight_version = 0
        try:
            self.health(timeout_s=start_timeout_s)
        except BaseException:
            self.shutdown()
            raise

    def __len__(self) -> int:
        return len(self.handles)

    def health(self, timeout_s: float | None = None) -> list[dict]:
        """Every engine's health report (blocks until each has started and loaded its model)."""
        import ray

        try:
            return ray.get([h.health.remote() for h in self.handles], timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise EngineError(
                f"{len(self.handles)} engine(s) ({self.cfg.engine.kind}, {self.model_path}) not ready after "
                f"{timeout_s:.0f} s; the cluster has {ray.cluster_resources()}: lower engine.num_engines / "
                "engine.num_cpus / engine.num_gpus, or add nodes"
            ) from None

    def sync_weights(self, learner: Any, version: int) -> dict[str, float]:
        """Broadcast `learner`'s current weights to every engine; they stamp later outputs with `version`."""
        import ray

        start = time.perf_counter()
        key = tuple(h._actor_id.hex() for h in self.handles)
        try:
            if self._sync_key != key:
                backend = "nccl" if self.cfg.learner.num_gpus > 0 else "gloo"
                ip, port = learner.weight_sync_address()
                world = len(self.handles) + 1
                ray.get(
                    [learner.init_weight_sender(ip, port, world, backend)]
                    + [h.init_weight_sync.remote(ip, port, i + 1, world, backend) for i, h in enumerate(self.handles)]
                )
                self._sync_key = key
            sends = learner.broadcast_weights()
            receives = [h.receive_weights.remote(version) for h in self.handles]
            sent = ray.get(sends)[0]
            ray.get(receives)
        except Exception:
            self._sync_key = None  # a failed broadcast leaves the group unusable: rebuild it next time
            raise
        self.weight_version = version
        return {"seconds": time.perf_counter() - start, "bytes": float(sent), "version": float(version)}

    def shutdown(self) -> None:
        import ray

        for handle in self.handles:
            ray.kill(handle)
        self.handles = []
        self._sync_key = None

    def __enter__(self) -> "EngineFleet":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
