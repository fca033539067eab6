"""`EnvRunnerGroup`: W `EnvRunner` actors fed from one driver-side queue, exactly-once delivery.

The driver submits `EpisodeRequest`s; the group hands each to the least-busy live runner, keeping at
most ~1.25 x envs_per_worker episodes per runner so the rest stay queued here (`pending()` is what an
autoscaler looks at, and a runner added later gets work at once). `results()` yields
`(ObjectRef[Trajectory], TrajectorySummary)` as episodes finish; only the summaries are fetched.

Trajectories are the runner's *return values*, so the driver owns them: a runner that dies after
finishing an episode does not take that trajectory with it (an object `ray.put` inside the runner would
be lost with its owner).

Failures: runners are created with `max_restarts` and `max_task_retries=-1`, so Ray replays the calls in
flight on a crashed runner once it has restarted (on another node when its node is gone). When a runner is
dead for good (restarts used up, killed without restart, handed back) the group queues every episode it has
not collected from that runner again at once, ahead of new work, without waiting to learn which of them
had finished. The dead runner's calls stay watched, because one that finished before the death still holds
its result (the driver owns it). So an episode can have two results, the original and the replay: the first
collected is delivered, the other call is cancelled (or its queued replay withdrawn) or its result dropped,
and counted in `duplicates_dropped`. Every submitted episode id is delivered exactly once
(tests/test_exactly_once.py).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterator

from atommem.config import Config
from atommem.rollout.records import EpisodeRequest, TrajectorySummary
from atommem.rollout.env_runner import EnvRunner, PolicyFactory


@dataclass
class _Runner:
    index: int
    name: str
    handle: Any
    inflight: set[str] = field(default_factory=set)  # episode ids
    draining: bool = False


@dataclass
class _Call:
    request: EpisodeRequest
    runner: int
    summary_ref: Any
    traj_ref: Any
    attempts: int

    @property
    def episode_id(self) -> str:
        return self.request.episode_id


def take(results: Iterator[tuple[Any, Any]], n: int) -> list[tuple[Any, Any]]:
    """The first `n` items of a results iterator (fewer only if it ends)."""
    out: list[tuple[Any, Any]] = []
    if n <= 0:
        return out
    for item in results:
        out.append(item)
        if len(out) >= n:
            break
    return out


class EnvRunnerGroup:
    def __init__(
        self,
        cfg: Config,
        policy: str | PolicyFactory = "model",
        engines: list[Any] | None = None,
        model_path: str | None = None,
        *,
        num_runners: int | None = None,
        policy_kwargs: dict | None = None,
        temperature: float | None = None,
        max_replays: int = 3,
        poll_s: float = 1.0,
    ):
        """Start `num_runners` (default cfg.rollout.num_workers) runner actors on the current Ray."""
        import ray

        if not ray.is_initialized():
            raise RuntimeError("EnvRunnerGroup needs Ray: call atommem.runtime.init_ray(cfg.cluster) first")
        self.cfg = cfg
        self._runner_args = (cfg, policy, list(engines or []), model_path)
        self._runner_kwargs = {"policy_kwargs": policy_kwargs, "temperature": temperature}
        self.capacity = max(1, math.ceil(1.25 * cfg.rollout.envs_per_worker))
        self.max_replays = max_replays
        self.poll_s = poll_s
        self._runners: dict[int, _Runner] = {}
        self._next_index = 0
        self._queue: deque[EpisodeRequest] = deque()
        self._calls: dict[str, _Call] = {}  # episode id -> its call on a live runner
        self._watched: dict[Any, _Call] = {}  # summary ref -> call: those above, and a dead runner's uncollected ones
        self._attempts: dict[str, int] = {}
        self._requested: set[str] = set()
        self._delivered: set[str] = set()
        self.replayed = 0  # episodes queued again after their runner died
        self.duplicates_dropped = 0  # second results (a replay, or a dead runner's late original) not delivered
        self.runners_replaced = 0
        self.failed: list[str] = []  # episodes whose play raised (re-raised by results())
        for _ in range(cfg.rollout.num_workers if num_runners is None else num_runners):
            self.add_runner()

    # ------------------------------------------------------------------ runners
    @property
    def num_runners(self) -> int:
        """Runners that take new episodes (draining ones excluded)."""
        return sum(not r.draining for r in self._runners.values())

    def runner_indices(self) -> list[int]:
        return sorted(self._runners)

    def handle(self, index: int) -> Any:
        return self._runners[index].handle

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Block until every runner has started (its __init__ ran)."""
        import ray

        ray.get([r.handle.ping.remote() for r in self._runners.values()], timeout=timeout_s)

    def add_runner(self) -> int:
        import ray

        r = self.cfg.rollout
        index = self._next_index
        self._next_index += 1
        name = f"env-runner-{index}"
        options: dict[str, Any] = {
            "num_cpus": r.num_cpus_per_worker,
            "max_restarts": r.max_restarts,
            "max_task_retries": -1,
            "max_concurrency": self.capacity + 16,  # episodes plus stats/ping calls
            "name": None,
        }
        if r.worker_resource:
            options["resources"] = {r.worker_resource: 0.001}  # placement on rollout nodes only
        handle = ray.remote(EnvRunner).options(**options).remote(
            *self._runner_args, name=name, index=index, **self._runner_kwargs
        )
        self._runners[index] = _Runner(index, name, handle)
        self._dispatch()
        return index

    def remove_runner(self, index: int, wait: bool = True) -> None:
        """Stop giving `index` episodes. wait=True: it finishes its in-flight episodes (delivered by
        `results()`) and is then shut down; wait=False: it is shut down now and its in-flight episodes
        go back to the front of the queue."""
        runner = self._runners[index]
        runner.draining = True
        if not wait:
            self._requeue(runner, count_replay=False)
        self._reap()

    def _requeue(self, runner: _Runner, count_replay: bool) -> None:
        """Queue `runner`'s uncollected episodes again and stop it; their calls stay in `_watched`."""
        for eid in sorted(runner.inflight, reverse=True):
            self._queue.appendleft(self._calls.pop(eid).request)
            self.replayed += count_replay
        runner.inflight.clear()
        self._kill(runner)

    def _kill(self, runner: _Runner) -> None:
        import ray

        ray.kill(runner.handle, no_restart=True)
        self._runners.pop(runner.index, None)

    def _reap(self) -> None:
        for runner in list(self._runners.values()):
            if runner.draining and not runner.inflight:
                self._kill(runner)

    def _replace_dead(self, runner: _Runner) -> None:
        if runner.index not in self._runners:
            return
        draining = runner.draining
        self._requeue(runner, count_replay=True)
        if not draining:
            self.runners_replaced += 1
            self.add_runner()

    # ------------------------------------------------------------------ episodes
    def submit(self, requests: list[EpisodeRequest]) -> None:
        for req in requests:
            if req.episode_id in self._requested:
                raise ValueError(f"episode {req.episode_id!r} was already submitted; episode ids must be unique")
            self._requested.add(req.episode_id)
            self._queue.append(req)
        self._dispatch()

    def pending(self) -> int:
        """Episodes queued on the driver, not yet handed to a runner."""
        return len(self._queue)

    def in_flight(self) -> int:
        return len(self._calls)

    def in_flight_by_runner(self) -> dict[int, int]:
        return {i: len(r.inflight) for i, r in self._runners.items()}

    def in_flight_on(self, index: int) -> list[str]:
        """The episode ids runner `index` is playing or has finished but not yet delivered."""
        return sorted(self._runners[index].inflight)

    def idle_runners(self) -> list[int]:
        """Runners (not draining) with no episode in flight: candidates for scaling down."""
        return [i for i, r in sorted(self._runners.items()) if not r.draining and not r.inflight]

    def _dispatch(self) -> None:
        while self._queue:
            live = [r for r in self._runners.values() if not r.draining and len(r.inflight) < self.capacity]
            if not live:
                return
            runner = min(live, key=lambda r: (len(r.inflight), r.index))
            req = self._queue.popleft()
            attempts = self._attempts.get(req.episode_id, 0) + 1
            if attempts > self.max_replays + 1:
                raise RuntimeError(
                    f"episode {req.episode_id!r} lost its runner {attempts - 1} times; it may be crashing the "
                    "runner (see the runner logs)"
                )
            self._attempts[req.episode_id] = attempts
            traj_ref, summary_ref = runner.handle.play.options(num_returns=2).remote(req)
            call = _Call(req, runner.index, summary_ref, traj_ref, attempts)
            self._calls[req.episode_id] = self._watched[summary_ref] = call
            runner.inflight.add(req.episode_id)

    def _withdraw_replay(self, eid: str) -> None:
        """A dead runner's call delivered `eid`: its replay is not needed. A queued one leaves the queue; one
        on a runner is cancelled and counted as a dropped duplicate."""
        import ray

        for req in [r for r in self._queue if r.episode_id == eid]:
            self._queue.remove(req)
        replay = self._calls.pop(eid, None)
        if replay is None:
            return
        del self._watched[replay.summary_ref]
        if replay.runner in self._runners:
            self._runners[replay.runner].inflight.discard(eid)
        ray.cancel(replay.summary_ref, recursive=False)
        self.duplicates_dropped += 1

    def results(self, timeout_s: float | None = None) -> Iterator[tuple[Any, TrajectorySummary]]:
        """Yield (trajectory ref, summary) for every submitted episode, once each, until none is left.
        `timeout_s`: give up (TimeoutError) when nothing finishes for that long."""
        import ray
        from ray.exceptions import RayActorError

        from atommem.metrics import get_metrics

        metrics = get_metrics()
        idle_since = time.monotonic()
        while self._queue or self._calls:
            self._dispatch()
            metrics.queue_depth("rollout_pending", len(self._queue))
            metrics.queue_depth("rollout_in_flight", len(self._calls))
            metrics.rollout_workers(self.num_runners)
            if not self._calls:
                raise RuntimeError(
                    f"{len(self._queue)} episodes queued but no runner takes work; add_runner() before collecting"
                )
            refs = list(self._watched)
            ready, _ = ray.wait(refs, num_returns=1, timeout=self.poll_s)
            if ready:
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in ready:
                call = self._watched.pop(ref, None)
                if call is None:
                    continue  # a replay withdrawn while this batch was handled
                eid = call.episode_id
                live = self._calls.get(eid) is call  # else: a dead runner's call, its episode queued again
                runner = self._runners.get(call.runner)
                try:
                    summary: TrajectorySummary = ray.get(ref)
                except RayActorError as exc:
                    if exc.actor_init_failed:  # a replacement would fail the same way (bad model path, ...)
                        raise
                    # Ray already retried on restarts: this runner is gone for good.
                    if live and runner is not None:
                        self._replace_dead(runner)
                    continue
                except Exception:
                    if not live:
                        continue  # the replay decides
                    # the episode itself raised (env, policy or engine error): forget it, then fail loudly
                    del self._calls[eid]
                    if runner is not None:
                        runner.inflight.discard(eid)
                    self.failed.append(eid)
                    raise
                if eid in self._delivered:
                    self.duplicates_dropped += 1  # a dead runner's result that came after its replay's
                    continue
                self._delivered.add(eid)
                if live:
                    del self._calls[eid]
                    if runner is not None:
                        runner.inflight.discard(eid)
                else:
                    self._withdraw_replay(eid)
                idle_since = time.monotonic()
                yield call.traj_ref, summary
            self._reap()
            if timeout_s is not None and time.monotonic() - idle_since > timeout_s:
                raise TimeoutError(f"no episode finished in {timeout_s:.0f}s ({len(self._calls)} in flight)")

    def collect(self, n: int, timeout_s: float | None = None) -> list[tuple[Any, TrajectorySummary]]:
        """The next `n` finished episodes (fewer only if fewer remain)."""
        return take(self.results(timeout_s=timeout_s), n)

    def stats(self) -> list[dict]:
        import ray

        return ray.get([r.handle.stats.remote() for r in self._runners.values()])

    def shutdown(self) -> None:
        """Kill every runner (finished trajectories stay readable: the driver owns them)."""
        for runner in list(self._runners.values()):
            self._kill(runner)
        self._queue.clear()
        self._calls.clear()
        self._watched.clear()

    def __enter__(self) -> "EnvRunnerGroup":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
