"""`RolloutPool`: an `EnvRunnerGroup` that grows and shrinks with pending work.

Rules (from `RolloutConfig`), checked on every submit, after every delivered episode and about every
`tick_s` while `results()` waits:
- grow: while episodes queued on the driver per live runner exceed `scale_up_pending_per_worker`
  (or fewer than `min_workers` run), add a runner, up to `max_workers`. A new runner takes queued
  work at once, so each addition is re-checked against the shrunken queue.
- shrink: a runner with nothing in flight and an empty queue for `scale_down_idle_s` is retired
  (newest first) down to `min_workers`. Retiring drains: a runner only goes once idle, and
  `retire(index, hand_back=True)` returns a busy runner's episodes to the queue front instead.
Every change asks the cluster autoscaler for one bundle per runner through
`ray.autoscaler.sdk.request_resources` (CPU plus the rollout nodes' custom resource), so the Ray
autoscaler brings up or releases CPU rollout nodes (tests/test_autoscaling.py: Ray's real autoscaler on
cluster/local's fake multi-node cluster; on a local Ray without one the request is recorded and ignored).
The number of runners over time is kept in `history` and exported as the `atommem_rollout_workers` gauge.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator

from atommem.config import ConfigError, RolloutConfig
from atommem.metrics import get_metrics
from atommem.rollout.env_runner_group import take


@dataclass
class ScaleEvent:
    time_s: float  # seconds since the pool started
    action: str  # "start" | "up" | "down"
    workers: int  # live runners after the action
    pending: int  # episodes queued on the driver
    in_flight: int  # episodes on runners


def _request_resources(bundles: list[dict[str, float]]) -> None:
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=bundles)


class RolloutPool:
    def __init__(
        self,
        group: Any,
        cfg: RolloutConfig,
        *,
        tick_s: float = 1.0,
        request_resources: Callable[[list[dict[str, float]]], None] = _request_resources,
        clock: Callable[[], float] = time.monotonic,
    ):
        """`group`: an `EnvRunnerGroup` (or anything with its add_runner / remove_runner / pending /
        in_flight / in_flight_by_runner / num_runners / results interface)."""
        if not 0 <= cfg.min_workers <= cfg.max_workers or cfg.max_workers < 1:
            raise ConfigError(
                f"rollout.min_workers={cfg.min_workers} / rollout.max_workers={cfg.max_workers}: "
                "need 0 <= min_workers <= max_workers and max_workers >= 1"
            )
        if cfg.scale_up_pending_per_worker < 0:
            raise ConfigError(f"rollout.scale_up_pending_per_worker must be >= 0, got {cfg.scale_up_pending_per_worker}")
        self.group = group
        self.cfg = cfg
        self.tick_s = tick_s
        self._request = request_resources
        self._clock = clock
        self._t0 = clock()
        self._idle_since: dict[int, float] = {}
        self._requested: int | None = None  # bundles last asked of the cluster autoscaler
        self.history: list[ScaleEvent] = []
        self.requests: list[int] = []  # bundle counts sent to the autoscaler, in order
        self._record("start")
        self.autoscale()

    # ------------------------------------------------------------------ scaling
    @property
    def num_workers(self) -> int:
        return self.group.num_runners

    def bundles(self, n: int) -> list[dict[str, float]]:
        """What one runner needs, `n` times: the autoscaler's view of the pool."""
        bundle: dict[str, float] = {"CPU": self.cfg.num_cpus_per_worker}
        if self.cfg.worker_resource:
            bundle[self.cfg.worker_resource] = 0.001  # as EnvRunnerGroup asks: placement on rollout nodes only
        return [dict(bundle) for _ in range(n)]

    def autoscale(self) -> int:
        """Apply the grow/shrink rules once; returns the change in live runners."""
        before = self.num_workers
        grown = self._grow()
        shrunk = 0 if grown else self._shrink()
        if grown or shrunk:
            self._record("up" if grown else "down")
        self._sync_request()
        metrics = get_metrics()
        metrics.rollout_workers(self.num_workers)
        metrics.queue_depth("rollout_pending", self.group.pending())
        return self.num_workers - before

    def _grow(self) -> int:
        added = 0
        threshold = self.cfg.scale_up_pending_per_worker
        while self.num_workers < self.cfg.max_workers:
            n = self.num_workers
            if n >= self.cfg.min_workers and self.group.pending() <= threshold * n:
                break
            self.group.add_runner()
            added += 1
        return added

    def _shrink(self) -> int:
        now = self._clock()
        busy = self.group.pending() > 0
        load = self.group.in_flight_by_runner()
        for index, n in load.items():
            if n or busy:
                self._idle_since.pop(index, None)
            else:
                self._idle_since.setdefault(index, now)
        for index in list(self._idle_since):
            if index not in load:
                del self._idle_since[index]
        removed = 0
        expired = sorted((i for i, t in self._idle_since.items() if now - t >= self.cfg.scale_down_idle_s), reverse=True)
        for index in expired:
            if self.num_workers <= self.cfg.min_workers:
                break
            self.retire(index)
            removed += 1
        return removed

    def retire(self, index: int, hand_back: bool = False) -> None:
        """Retire runner `index`: it finishes its in-flight episodes first, or with `hand_back` they go
        back to the front of the queue for the other runners."""
        self.group.remove_runner(index, wait=not hand_back)
        self._idle_since.pop(index, None)

    def _sync_request(self) -> None:
        n = self.num_workers
        if n != self._requested:
            self._request(self.bundles(n))
            self._requested = n
            self.requests.append(n)

    def _record(self, action: str) -> None:
        self.history.append(ScaleEvent(
            time_s=round(self._clock() - self._t0, 3), action=action, workers=self.num_workers,
            pending=self.group.pending(), in_flight=self.group.in_flight(),
        ))

    def workers_over_time(self) -> list[dict]:
        return [asdict(e) for e in self.history]

    # ------------------------------------------------------------------ episodes
    def pending(self) -> int:
        """Episodes queued on the driver, not yet on a runner."""
        return self.group.pending()

    def in_flight(self) -> int:
        return self.group.in_flight()

    def submit(self, requests: list) -> None:
        self.group.submit(requests)
        self.autoscale()

    def results(self, timeout_s: float | None = None) -> Iterator[tuple[Any, Any]]:
        """Like `EnvRunnerGroup.results()`, re-checking the scaling rules while it waits.
        `timeout_s`: TimeoutError when nothing finishes for that long."""
        last = self._clock()
        while self.group.pending() or self.group.in_flight():
            self.autoscale()
            try:
                # The group gives control back after `tick_s` without a finished episode.
                for item in self.group.results(timeout_s=self.tick_s):
                    last = self._clock()
                    yield item
                    self.autoscale()
            except TimeoutError:
                if timeout_s is not None and self._clock() - last > timeout_s:
                    raise TimeoutError(
                        f"no episode finished in {timeout_s:.0f}s ({self.group.in_flight()} in flight, "
                        f"{self.group.pending()} queued, {self.num_workers} runners)"
                    ) from None
        self.autoscale()

    def collect(self, n: int, timeout_s: float | None = None) -> list[tuple[Any, Any]]:
        """The next `n` finished episodes (fewer only if fewer remain)."""
        return take(self.results(timeout_s=timeout_s), n)

    def shutdown(self) -> None:
        """Stop every runner and withdraw the resource request."""
        self.group.shutdown()
        self._request([])
        self._requested = 0
        self.requests.append(0)
        self._record("down")
        get_metrics().rollout_workers(0)

    def __enter__(self) -> "RolloutPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
