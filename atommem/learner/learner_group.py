"""`LearnerGroup`: `num_learners` Ray actors training one policy together (RLlib's LearnerGroup role).

The driver hands over (ObjectRef[Trajectory], advantage) pairs; each actor fetches its own shard, so
token lists never pass through the driver. Weight sync streams the gathered ZeRO-3 parameters from
learner rank 0 to every engine over a dedicated group (see weight_sync/process_group.py); the engine
fleet (`engines/fleet.py`) builds that group once per set of engines and drives each sync.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from atommem.config import Config
from atommem.learner.learner_worker import LearnerWorker, check_cpu_op_build_lock


def _shards(items: Sequence[Any], n: int) -> list[list[Any]]:
    return [list(items[i::n]) for i in range(n)]


def _token_weighted(per_rank: list[dict[str, float]]) -> dict[str, float]:
    """Merge rank metrics: counts and losses add up, rates are weighted by each rank's tokens."""
    additive = {"loss", "tokens", "rows_produced", "rows_shipped", "rows_consumed", "trajectories", "rows", "micro_batches"}
    total_tokens = sum(m.get("tokens", 0.0) for m in per_rank)
    keys = list(dict.fromkeys(k for m in per_rank for k in m))  # a rank with no rows reports no rates
    out: dict[str, float] = {}
    for key in keys:
        present = [m for m in per_rank if key in m]
        values = [m[key] for m in present]
        if key in additive:
            out[key] = sum(values)
        elif key == "step_seconds":
            out[key] = max(values)
        elif key in ("grad_norm", "lr"):
            out[key] = values[0]  # global quantities, the same on every rank
        elif key == "ratio_max":
            out[key] = max(values)
        elif key == "ratio_min":
            out[key] = min(values)
        else:
            out[key] = sum(m[key] * m.get("tokens", 0.0) for m in present) / total_tokens if total_tokens else 0.0
    return out


class LearnerGroup:
    """`learner.num_learners` Ray actors training one policy with DeepSpeed (ZeRO-3 by default): GRPO and SFT
    steps on trajectories passed as object refs, checkpoints, and the sending side of the weight sync."""

    def __init__(self, cfg: Config, model_path: str | Path, stage: str = "grpo", start_timeout_s: float = 600.0):
        """Start `cfg.learner.num_learners` actors and build the ZeRO-3 policy on them.

        `stage` picks the learning rate and schedule length: "grpo" (grpo.lr, trainer.steps),
        "sft" (sft.lr, sft.steps) or "base" (pretrain.lr, pretrain.steps; the base stage, trained as SFT rows).
        """
        import ray

        from atommem.errors import UserError

        lc = cfg.learner
        if lc.num_learners < 1:
            raise UserError(f"learner.num_learners must be >= 1, got {lc.num_learners}")
        if not (Path(model_path) / "config.json").is_file():
            raise UserError(f"learner model path {model_path} has no config.json; build it first (atommem model tiny --out DIR) or fix model.path")
        self.cfg = cfg
        env_vars = {"TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(max(1, int(lc.num_cpus)))}
        if lc.num_gpus == 0:
            env_vars["DS_ACCELERATOR"] = "cpu"  # must be set before deepspeed is imported in the actor
            check_cpu_op_build_lock()
        actor_cls = ray.remote(LearnerWorker).options(
            num_cpus=lc.num_cpus, num_gpus=lc.num_gpus, runtime_env={"env_vars": env_vars}
        )
        n = lc.num_learners
        self.workers = [actor_cls.remote(cfg, str(model_path), rank, n, stage) for rank in range(n)]
        try:
            addresses = ray.get([w.address.remote() for w in self.workers], timeout=start_timeout_s)
        except ray.exceptions.GetTimeoutError:
            for w in self.workers:
                ray.kill(w)
            raise UserError(
                f"{n} learner actors (num_cpus={lc.num_cpus}, num_gpus={lc.num_gpus} each) could not start within "
                f"{start_timeout_s:.0f} s; the cluster has {ray.cluster_resources()}. Lower learner.num_learners / "
                "learner.num_gpus (0 on CPU) or add nodes."
            ) from None
        master_addr, master_port = addresses[0]
        per_node = Counter(ip for ip, _ in addresses)
        seen: Counter = Counter()
        setups = []
        for w, (ip, _) in zip(self.workers, addresses):
            setups.append(w.setup.remote(master_addr, master_port, seen[ip], per_node[ip]))
            seen[ip] += 1
        ray.get(setups)

    def _run(self, method: str, *per_rank_args: list) -> list:
        import ray

        return ray.get([getattr(w, method).remote(*(a[i] for a in per_rank_args)) for i, w in enumerate(self.workers)])

    def update_grpo(self, batch: Sequence[tuple[Any, float]]) -> dict[str, float]:
        """One optimizer step on (ObjectRef[Trajectory], advantage) pairs; merged metrics."""
        start = time.perf_counter()
        per_rank = self._run("update_grpo", _shards(list(batch), len(self.workers)))
        merged = _token_weighted(per_rank)
        if not merged["rows_produced"] == merged["rows_shipped"] == merged["rows_consumed"]:
            raise RuntimeError(f"GRPO rows lost between ranks: {per_rank}")
        merged["step_seconds"] = time.perf_counter() - start
        return merged

    def update_sft(self, batch_refs: Sequence[Any]) -> dict[str, float]:
        """One optimizer step on ObjectRef[Trajectory]s (their turns as SFT rows)."""
        start = time.perf_counter()
        merged = _token_weighted(self._run("update_sft", _shards(list(batch_refs), len(self.workers))))
        merged["step_seconds"] = time.perf_counter() - start
        return merged

    def score_sft(self, refs: Sequence[Any]) -> list:
        """Teacher-forced `RowScore`s of ObjectRef[Trajectory]s' turns (no update): SFT validation."""
        return [s for part in self._run("score_sft", _shards(list(refs), len(self.workers))) for s in part]

    # -- the learner side of a weight sync (`engines/fleet.py` drives both sides)
    def weight_sync_address(self) -> tuple[str, int]:
        """Where the weight-sync group's store will listen: rank 0's node and a free port there."""
        import ray

        return ray.get(self.workers[0].address.remote())

    def init_weight_sender(self, master_addr: str, master_port: int, world_size: int, backend: str) -> Any:
        """Rank 0 joins the weight-sync group as its sender. Returns the ObjectRef: the engines must join
        concurrently, so the caller waits on it together with theirs."""
        return self.workers[0].init_weight_sender.remote(master_addr, master_port, world_size, backend)

    def broadcast_weights(self) -> list:
        """Every rank gathers its ZeRO-3 shards bucket by bucket; rank 0 broadcasts them. Returns the ranks'
        ObjectRefs (rank 0's result is the bytes sent), to be awaited together with the receivers."""
        return [w.broadcast_weights.remote() for w in self.workers]

    def state_dict(self) -> dict:
        """Full weights gathered to the driver (tests and small models only)."""
        return self._run("state_dict_rank0")[0]

    def param_digests(self) -> list[list[float]]:
        """Per-rank float64 sums of every full parameter (ranks must agree; tests and debugging)."""
        return self._run("param_digest")

    def weights_digest(self) -> str:
        """sha256 of the full weights (`checkpoints.weights_digest`), computed on rank 0."""
        return self._run("weights_digest")[0]

    def save_checkpoint(self, directory: str | Path, extra_state: dict | None = None, meta: dict | None = None) -> Path:
        """Every rank's DeepSpeed shards and RNG state (+ `extra_state` in rank 0's client state), written
        into a staging directory beside `directory`, fsynced, and published as `directory` by one rename
        with a manifest (`meta` added to it) written last: see atommem/checkpoints.py."""
        from atommem.checkpoints import atomic_dir

        with atomic_dir(directory, meta) as staging:
            self._run("save_checkpoint", [str(staging)] * len(self.workers), [dict(extra_state or {})] * len(self.workers))
        return Path(directory)

    def load_checkpoint(self, directory: str | Path) -> dict:
        """Restore a checkpoint written by save_checkpoint; an incomplete one is refused before any rank reads it."""
        from atommem.checkpoints import verify

        verify(directory)
        return self._run("load_checkpoint", [str(directory)] * len(self.workers))[0]

    def save_hf(self, directory: str | Path) -> Path:
        """Write the full policy as an HF model directory (what engines, `eval` and `serve` load)."""
        self._run("save_hf", [str(directory)] * len(self.workers))
        return Path(directory)

    def shutdown(self) -> None:
        import ray

        if not self.workers:
            return
        try:
            ray.get([w.shutdown.remote() for w in self.workers], timeout=60)
        finally:
            for w in self.workers:
                ray.kill(w)
            self.workers = []
