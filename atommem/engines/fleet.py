"""`EngineFleet`: the inference engines of one run, owned in one place: start, health, weight sync, shutdown.

Every stage that needs engines (rollouts, SFT teachers, training, evaluation, the demo) starts them
here, so they all get the same settings: `cfg.engine` (backend, replicas, resources, restarts),
`cfg.model.dtype`, and seeds `trainer.seed + i` for replica i.

Weight sync: the learner group's rank 0 and every engine form one dedicated broadcast group
(`weight_sync/`). The fleet builds it on the first sync (and again after a failed one, or when the set
of engines changed), then each sync is one broadcast from the learner that every engine receives; the
engines stamp later generations with the new version, which only goes forward.

Restarts: Ray restarts a dead engine (`engine.max_restarts`) with the weights on disk, and an engine
added by `add_engine` starts with them too. Such an engine holds its requests (engines/actor.py) until a
thread of the fleet, which checks every engine's health each `watch_s`, has caught it up: with the last
broadcast's source and version (the learner group re-broadcasts to every engine over a rebuilt group),
or, before any sync, by confirming that the weights on disk are current. An engine therefore never
generates with old weights, and retried requests of a mid-step crash resume on the current ones. The
trainer holds `weights_changing()` from a learner update to its sync, so a catch-up never stamps
updated weights with the old version.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

from atommem.config import Config
from atommem.errors import EngineError


class EngineFleet:
    """The inference engines of one run (Ray actors): started with one config, kept on the learner's current
    weights through restarts, stopped together. The module docstring gives the weight-sync and restart rules."""

    def __init__(self, cfg: Config, model_path: str, *, start_timeout_s: float = 900.0, watch_s: float = 1.0):
        """Start `cfg.engine.num_engines` engine actors serving `model_path` (on the current Ray), wait
        until each answers its health check, then keep them on the current weights (see the module doc)."""
        if cfg.engine.num_engines < 1:
            raise EngineError(f"engine.num_engines must be >= 1, got {cfg.engine.num_engines}")
        self.cfg = cfg
        self.model_path = str(model_path)
        self.handles: list[Any] = []
        self._sync_key: tuple | None = None  # the engine processes the current broadcast group was built for
        self.weight_version = 0
        self.catch_ups = 0  # engines brought back to the current weights after a restart or a late start
        self._source: Any = None  # the learner group of the last sync: where a restarted engine's weights come from
        self._lock = threading.RLock()  # one weight change at a time: a sync, a catch-up, a learner update
        self._stop = threading.Event()
        for _ in range(cfg.engine.num_engines):
            self._start_engine(needs_weights=False)
        try:
            self.health(timeout_s=start_timeout_s)
        except BaseException:
            self.shutdown()
            raise
        self._watch = threading.Thread(target=self._watch_loop, args=(watch_s,), name="engine-fleet-watch", daemon=True)
        self._watch.start()

    def _start_engine(self, needs_weights: bool) -> Any:
        from atommem.engines.actor import make_engine_actor

        handle = make_engine_actor(self.cfg.engine, self.model_path, name=None, seed=self.cfg.trainer.seed + len(self.handles),
                                   dtype=self.cfg.model.dtype, needs_weights=needs_weights)
        self.handles.append(handle)
        return handle

    def add_engine(self) -> Any:
        """One more engine; it serves once it holds the current weights (the watch thread syncs it)."""
        with self._lock:
            return self._start_engine(needs_weights=self._source is not None)

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

    def weights_digests(self) -> list[str | None]:
        """Every engine's `weights_digest` (None where its backend cannot report one)."""
        import ray

        return ray.get([h.weights_digest.remote() for h in self.handles])

    @contextmanager
    def weights_changing(self) -> Iterator[None]:
        """Hold from a learner update to the sync of its result: no catch-up broadcasts in between."""
        with self._lock:
            yield

    def sync_weights(self, learner: Any, version: int, rewind: bool = False) -> dict[str, float]:
        """Broadcast `learner`'s current weights to every engine; they stamp later outputs with `version`.
        `rewind`: a resume from a checkpoint onto engines that already served newer weights, the one case
        where the version goes back."""
        with self._lock:
            if version < self.weight_version and not rewind:
                raise ValueError(f"weight version {version} after {self.weight_version}: versions only go forward")
            return self._broadcast(learner, version)

    def _broadcast(self, learner: Any, version: int) -> dict[str, float]:
        import ray

        start = time.perf_counter()
        try:
            # One process per engine joins the group: a restarted engine is a new one (and waits to be asked).
            key = tuple(r["incarnation"] for r in ray.get([h.health.remote() for h in self.handles]))
            if self._sync_key != key:
                # NCCL between GPUs only: an engine on CPU joins over gloo (the learner sends from host memory)
                backend = "nccl" if self.cfg.learner.num_gpus > 0 and self.cfg.engine.num_gpus > 0 else "gloo"
                ip, port = learner.weight_sync_address()
                # a vLLM engine joins with each of its tensor-parallel workers: ranks 1 + i*tp .. (i+1)*tp
                tp = self.cfg.engine.tensor_parallel_size if self.cfg.engine.kind == "vllm" else 1
                world = len(self.handles) * tp + 1
                ray.get(
                    [learner.init_weight_sender(ip, port, world, backend)]
                    + [h.init_weight_sync.remote(ip, port, 1 + i * tp, world, backend) for i, h in enumerate(self.handles)]
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
        self._source = learner
        return {"seconds": time.perf_counter() - start, "bytes": float(sent), "version": float(version)}

    # -- keeping restarted and added engines on the current weights
    def _watch_loop(self, every_s: float) -> None:
        import ray

        asked: dict[str, tuple[Any, Any]] = {}  # engine id -> (handle, its health call in flight)
        while not self._stop.wait(every_s):
            try:
                behind = self._behind(asked)
                if behind and not self._stop.is_set():
                    self._catch_up(behind)
            except Exception as exc:  # the next round tries again; the held requests wait meanwhile
                if self._stop.is_set() or not ray.is_initialized():
                    return
                print(f"engine fleet: catching engines up failed ({exc!r}); retrying", file=sys.stderr, flush=True)

    def _behind(self, asked: dict[str, tuple[Any, Any]]) -> list[Any]:
        """Engines whose last health report says they wait for the current weights."""
        import ray

        for h in list(self.handles):
            if h._actor_id.hex() not in asked:
                asked[h._actor_id.hex()] = (h, h.health.remote())  # retried: it waits out a restart
        if not asked:
            return []
        done, _ = ray.wait([ref for _, ref in asked.values()], num_returns=len(asked), timeout=0)
        behind = []
        for key, (h, ref) in list(asked.items()):
            if ref in done:
                del asked[key]
                try:
                    if ray.get(ref).get("needs_weights"):
                        behind.append(h)
                except ray.exceptions.RayError:
                    pass  # dead for good: the calls that needed it fail with the actor's error
        return behind

    def _catch_up(self, behind: list[Any]) -> None:
        import ray

        with self._lock:
            if self._source is None:  # no sync yet: the weights every engine loaded from disk are current
                ray.get([h.weights_are_current.remote() for h in behind])
            else:  # the learner re-sends the last version to all, over a group that includes the new process
                self._broadcast(self._source, self.weight_version)
            self.catch_ups += len(behind)

    def shutdown(self, timeout_s: float = 60.0) -> None:
        """Kill every engine actor and wait (at most `timeout_s`) until each is gone."""
        import ray

        self._stop.set()
        with self._lock:  # a catch-up in progress finishes first
            for handle in self.handles:
                ray.kill(handle)
            # ray.kill only asks: wait until every actor is gone, so no call made after shutdown is served
            # and their CPUs are free for whatever the caller places next.
            deadline = time.monotonic() + timeout_s
            for handle in self.handles:
                while time.monotonic() < deadline:
                    try:
                        ray.get(handle.__ray_ready__.remote(), timeout=max(deadline - time.monotonic(), 0.1))
                    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                        break
                    time.sleep(0.1)
            self.handles = []
            self._sync_key = None
            self._source = None

    def __enter__(self) -> "EngineFleet":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
