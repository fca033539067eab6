"""One learner rank: DeepSpeed ZeRO-3 training of the policy (GRPO or SFT), checkpoints, weight streaming.

`LearnerWorker` is a plain class; `learner/learner_group.py` runs one per GPU (or CPU process) as a Ray actor.

What runs where (checked on this CPU-only machine with deepspeed 0.19.8, torch 2.13 CPU):
- CPU: `DS_ACCELERATOR=cpu` must be in the environment before deepspeed is imported (the group sets
  it in the actor's runtime env), `deepspeed.init_distributed("gloo")`, ZeRO stage 3, fp32, and
  DeepSpeed's AdamW with `torch_adam: true` (its fused CPU Adam op is not needed). Two ranks train
  with ZeRO-3 on gloo: parameters identical on both ranks after a step, the gradient equal to a
  single-process full-batch gradient (tests/test_learner_group.py). A step of the 32x2 test model
  (16 rows, 3 micro-batches per rank) takes about 1 s on a loaded 2-core machine.
- The first `init_distributed` on a machine JIT-builds DeepSpeed's `deepspeed_shm_comm` op with gcc
  (50-120 s here; cached under ~/.cache/torch_extensions afterwards; `make` builds it when it sets up the
  venv, so no test or job pays for it or can be killed in the middle of it; every build uses the venv's
  ninja, see `prefer_own_ninja`). A process killed DURING that
  build leaves `~/.cache/torch_extensions/<py>_cpu/deepspeed_shm_comm/lock` behind and every later start
  would wait on it forever: `LearnerGroup` refuses a lock older than any build with an error naming the file.
- Model construction: every rank loads the full HF model on CPU once and `deepspeed.initialize`
  partitions it. Building it under `zero.Init` instead does not work here: transformers' ZeRO-3
  loading (`HfDeepSpeedConfig`) needs `accelerate` (not a dependency), and a plain model
  constructor inside `zero.Init` fails in transformers' weight init (it indexes the partitioned,
  empty embedding's padding row). For models too large for CPU RAM per rank this is the thing to change.
- GPU: nccl, bf16, the same ZeRO-3 config (not exercised here: no GPU on this machine).
ZeRO-3 works on CPU too, so there is no second (plain torch) code path to keep correct.

A step: each rank fetches its shard of trajectory refs itself (`ray.get` inside the actor; the driver
never touches token lists), expands them into turn rows with the advantages computed by the driver,
packs rows into length-sorted micro-batches of at most `micro_batch_tokens` padded tokens, and
accumulates gradients over them with one optimizer step at the end. ZeRO-3 gathers parameters
collectively in every forward/backward, so all ranks run the same number of micro-batches (a rank
with fewer pads with an empty one). The loss of every micro-batch is its token sum divided by the
response-token count of the WHOLE batch (all ranks), times the world size because DeepSpeed
averages gradients over ranks: the gradient is exactly the token mean over the batch.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from atommem.config import Config
from atommem.errors import UserError
from atommem.learner.batching import MicroBatch, collate, pack_micro_batches, teacher_forced, token_logprobs
from atommem.learner.grpo import TurnRow, count_rows, expand_to_rows, grpo_loss
from atommem.learner.sft import RowScore, SFTRow, sft_loss, sft_rows
from atommem.weight_sync.base import TensorSpec, free_port, node_ip, plan_buckets
from atommem.weight_sync.process_group import WeightSender

STAGES = ("grpo", "sft", "base")  # what the learner trains: GRPO, SFT, or the base stage (trained as SFT rows)
_PAD_ROW = SFTRow([0], [0])  # the empty micro-batch a rank runs when others have more (loss x 0)
_STALE_BUILD_LOCK_S = 600.0  # the shm op builds in 75-120 s here: a lock this old has no builder left


def shm_buffer(master_addr: str, master_port: int, rank: int) -> Path:
    """The /dev/shm file of a rank's buffer in DeepSpeed's CPU comm op (its shm.cpp names it so)."""
    return Path(f"/dev/shm/deepspeed_allreduce_buffer_{os.getuid()}_{master_addr}_{master_port}_{rank}")


def check_cpu_op_build_lock(max_age_s: float = _STALE_BUILD_LOCK_S) -> None:
    """Raise, naming the file, when a killed build left DeepSpeed's CPU comm op locked (torch waits forever)."""
    from torch.utils.cpp_extension import get_default_build_root

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()  # as torch resolves it
    lock = Path(root) / f"py{sys.version_info.major}{sys.version_info.minor}_cpu" / "deepspeed_shm_comm" / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age > max_age_s:
        raise UserError(
            f"{lock} is {age:.0f} s old: a process killed while building DeepSpeed's CPU comm op left it, and every "
            f"learner would wait on it forever. Delete that file (the op is rebuilt on the next start)."
        )


def prefer_own_ninja() -> None:
    """Put this interpreter's bin directory first on PATH when pip's `ninja` is there, for torch's JIT build.

    ninja 1.11 (the system's) and 1.13 (pip's) hash build commands differently, so a learner started with the
    venv on PATH (a `ray job submit` from it) and one started without rebuilt the CPU comm op for each other:
    50 s of gcc at every switch here, twice in each run of the test suite."""
    bindir = Path(sys.executable).parent
    path = os.environ.get("PATH", "")
    if (bindir / "ninja").is_file() and not path.startswith(f"{bindir}{os.pathsep}"):
        os.environ["PATH"] = f"{bindir}{os.pathsep}{path}"


def lr_lambda(warmup_steps: int, total_steps: int, schedule: str, min_ratio: float = 0.0, hold_steps: int = 0):
    """Multiplier of the base lr at step s: linear warmup, then constant, or `hold_steps` at the full lr and a
    cosine decay to `min_ratio` at `total_steps`."""

    def f(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        start = warmup_steps + hold_steps
        if schedule == "constant" or step < start:
            return 1.0
        progress = min(1.0, (step - start) / max(1, total_steps - start))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def deepspeed_config(cfg: Config, on_gpu: bool, lr: float) -> dict:
    return {
        "train_micro_batch_size_per_gpu": 1,  # nominal: micro-batches are packed by tokens here
        "gradient_accumulation_steps": 1,  # accumulation boundaries are set explicitly per micro-batch
        "gradient_clipping": cfg.learner.grad_clip,
        "zero_optimization": {"stage": cfg.learner.zero_stage},
        "bf16": {"enabled": on_gpu},
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": lr, "betas": list(cfg.learner.adam_betas), "eps": cfg.learner.adam_eps,
                       "weight_decay": cfg.learner.weight_decay, "torch_adam": not on_gpu},
        },
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


class LearnerWorker:
    def __init__(self, cfg: Config, model_path: str, rank: int, world_size: int, stage: str = "grpo"):
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
        self.cfg, self.model_path, self.rank, self.world_size, self.stage = cfg, str(model_path), rank, world_size, stage
        self.on_gpu = torch.cuda.is_available() and cfg.learner.num_gpus > 0
        if not self.on_gpu:
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
            prefer_own_ninja()
            torch.set_num_threads(max(1, int(cfg.learner.num_cpus)))
        self.engine = None
        self.ref_engine = None
        self.sender: WeightSender | None = None

    # ------------------------------------------------------------------ setup
    def address(self) -> tuple[str, int]:
        """This node's IP and a free port on it (rank 0 hosts the rendezvous)."""
        return node_ip(), free_port()

    def setup(self, master_addr: str, master_port: int, local_rank: int, local_size: int) -> None:
        """Join the default process group and build the ZeRO-3 policy (+ frozen reference when KL is on)."""
        os.environ.update(
            MASTER_ADDR=master_addr,
            MASTER_PORT=str(master_port),
            RANK=str(self.rank),
            WORLD_SIZE=str(self.world_size),
            LOCAL_RANK=str(0 if self.on_gpu else local_rank),  # Ray gives each GPU actor one visible device
            LOCAL_SIZE=str(local_size),
        )
        import deepspeed
        from transformers import AutoConfig, AutoModelForCausalLM

        deepspeed.init_distributed("nccl" if self.on_gpu else "gloo")
        if not self.on_gpu:
            # DeepSpeed's CPU comm op maps each local rank's 69 MB /dev/shm buffer at init and never unlinks
            # them: every learner start leaked one per rank (17 GB after a day of runs here, then the OOM killer).
            # Once all ranks have mapped them (the barrier) the names can go; the memory goes at exit.
            torch.distributed.barrier()
            shm_buffer(master_addr, master_port, self.rank).unlink(missing_ok=True)
        torch.manual_seed(self.cfg.trainer.seed)
        random.seed(self.cfg.trainer.seed)
        lr, total = {"grpo": (self.cfg.grpo.lr, self.cfg.trainer.steps), "sft": (self.cfg.sft.lr, self.cfg.sft.steps),
                     "base": (self.cfg.pretrain.lr, self.cfg.pretrain.steps)}[self.stage]
        learner = self.cfg.learner
        ds_cfg = deepspeed_config(self.cfg, self.on_gpu, lr)
        dtype = torch.bfloat16 if self.on_gpu else torch.float32
        self.hf_config = AutoConfig.from_pretrained(self.model_path)
        # Each rank loads the full model on CPU once and deepspeed.initialize partitions it. Building it
        # under zero.Init instead fails here: transformers' ZeRO-3 loading needs `accelerate` (not a
        # dependency) and its weight init indexes partitioned (empty) embeddings.
        model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=dtype)
        if self.cfg.learner.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self.engine, _, _, _ = deepspeed.initialize(
            model=model,
            model_parameters=[p for p in model.parameters() if p.requires_grad],
            config=ds_cfg,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(
                opt, lr_lambda(learner.warmup_steps, total, learner.lr_schedule, learner.min_lr_ratio,
                                learner.hold_steps)
            ),
        )
        if self.stage == "grpo" and self.cfg.grpo.kl_coef != 0.0:
            ref_cfg = {k: v for k, v in ds_cfg.items() if k not in ("optimizer", "gradient_clipping")}
            ref = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=dtype)
            self.ref_engine, *_ = deepspeed.initialize(model=ref, config=ref_cfg)
            self.ref_engine.eval()
        self.device = self.engine.device

    # ------------------------------------------------------------------ helpers
    def _all_reduce(self, values: Sequence[float], op: str = "sum") -> list[float]:
        import torch.distributed as dist

        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        return t.tolist()

    def _to_device(self, mb: MicroBatch) -> MicroBatch:
        return MicroBatch(*(None if (x := getattr(mb, f.name)) is None else x.to(self.device) for f in dataclasses.fields(mb)))

    def _micro_batches(self, rows: Sequence[Any]) -> tuple[list[MicroBatch], list[list[Any]]]:
        """Packed micro-batches, padded with empty ones to the count of the rank that has the most, and the
        rows of each real one (the first len(packs) micro-batches)."""
        packs = pack_micro_batches(rows, self.cfg.learner.micro_batch_tokens) if rows else []
        (most,) = self._all_reduce([len(packs)], op="max")
        batches = [collate(p) for p in packs]
        while len(batches) < int(most):
            batches.append(collate([_PAD_ROW]))
        return batches, packs

    def _fetch(self, refs: Sequence[Any]) -> list[Any]:
        import ray

        return ray.get(list(refs)) if refs else []

    def _full_grad_norm(self) -> float | None:
        """L2 norm of the whole (already all-reduced, unclipped) gradient when every rank holds it in
        `p.grad`, as without ZeRO. DeepSpeed reports no norm there in fp32 (its ZeRO optimizers do, and
        keep `p.grad` empty), so it is computed here before the step clips and clears it."""
        if self.engine.zero_optimization_stage() != 0:
            return None
        grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
        if not grads:
            return None
        return math.sqrt(sum(float(g.detach().double().pow(2).sum()) for g in grads))

    def _optimizer_step(self, micro_batches: list[MicroBatch], real: int, loss_fn) -> dict[str, float]:
        """Accumulate gradients over every micro-batch, then one optimizer step; metrics token-weighted."""
        sums: dict[str, float] = {}
        tokens = 0.0
        rows = 0
        loss_total = 0.0
        self.engine.train()
        for i, mb in enumerate(micro_batches):
            self.engine.set_gradient_accumulation_boundary(i == len(micro_batches) - 1)
            mb = self._to_device(mb)
            loss, metrics = loss_fn(i, mb)
            if i >= real:
                loss = loss * 0.0  # keeps the collectives of a padding micro-batch, adds nothing
            # DeepSpeed averages gradients over ranks; the world size turns that average back into the sum.
            self.engine.backward(loss * self.world_size, scale_wrt_gas=False)
            if i < real:
                loss_total += float(loss.detach())
                rows += mb.num_rows
                n = float(mb.response_mask.sum())
                tokens += n
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v * n
        own_norm = self._full_grad_norm()
        self.engine.step()
        out = {k: v / tokens for k, v in sums.items()} if tokens else {}
        out.pop("response_tokens", None)
        grad_norm = self.engine.get_global_grad_norm()
        if grad_norm is None:
            grad_norm = own_norm if own_norm is not None else float("nan")
        out.update(
            loss=loss_total,  # this rank's share: the batch loss is the sum over ranks
            tokens=tokens,
            grad_norm=float(grad_norm),
            lr=float(self.engine.get_lr()[0]),
            micro_batches=float(real),
            rows_consumed=float(rows),
        )
        return out

    # ------------------------------------------------------------------ updates
    def update_grpo(self, shard: Sequence[tuple[Any, float]]) -> dict[str, float]:
        """One GRPO step on this rank's shard of (ObjectRef[Trajectory], advantage) pairs."""
        start = time.perf_counter()
        trajectories = self._fetch([ref for ref, _ in shard])
        rows: list[TurnRow] = expand_to_rows(trajectories, [float(a) for _, a in shard])
        produced = count_rows(trajectories)
        micro_batches, packs = self._micro_batches(rows)
        real = len(packs)
        shipped = sum(mb.num_rows for mb in micro_batches[:real])
        local_tokens = sum(mb.response_tokens for mb in micro_batches[:real])
        (total_tokens,) = self._all_reduce([local_tokens])
        g = self.cfg.grpo
        old_cache: dict[int, torch.Tensor] = {}
        if g.epochs_per_batch > 1:
            # Several passes over one batch: the "old" policy is the one before the first update.
            with torch.no_grad():
                for i, mb in enumerate(micro_batches):
                    old_cache[i] = token_logprobs(self.engine, self._to_device(mb))[0]
        consumed = 0.0
        metrics: dict[str, float] = {}

        def loss_fn(i: int, mb: MicroBatch):
            logp, entropy = token_logprobs(self.engine, mb, with_entropy=True, entropy_grad=g.entropy_coef != 0.0)
            # One pass per batch: the old policy IS the current one (ratio 1, gradient of the surrogate).
            old = old_cache[i] if i in old_cache else logp.detach()
            ref = None
            if self.ref_engine is not None:
                with torch.no_grad():
                    ref = token_logprobs(self.ref_engine, mb)[0]
            return grpo_loss(
                logp, old, ref, mb.advantages, mb.response_mask, g,
                behaviour_logprobs=mb.behaviour_logprobs, entropy=entropy, num_tokens=max(total_tokens, 1.0),
            )

        for epoch in range(g.epochs_per_batch):
            metrics = self._optimizer_step(micro_batches, real, loss_fn)
            if epoch == 0:
                consumed = metrics["rows_consumed"]
        if not produced == len(rows) == shipped == consumed:
            raise RuntimeError(f"rank {self.rank}: rows produced {produced}, expanded {len(rows)}, shipped {shipped}, consumed {consumed}")
        metrics.update(
            rows_produced=float(produced), rows_shipped=float(shipped), rows_consumed=consumed,
            trajectories=float(len(trajectories)), step_seconds=time.perf_counter() - start,
        )
        return metrics

    def update_sft(self, refs: Sequence[Any]) -> dict[str, float]:
        """One SFT step on this rank's refs, each to a Trajectory or a list of them (rows of reward >=
        sft.min_reward, response-only loss) or a list of ready rows (the base stage's sequences)."""
        start = time.perf_counter()
        rows = self._sft_rows(refs)
        micro_batches, packs = self._micro_batches(rows)
        real = len(packs)
        (total_weight,) = self._all_reduce([sum(float(mb.loss_weights.sum()) for mb in micro_batches[:real])])

        def loss_fn(i: int, mb: MicroBatch):
            logp, _ = token_logprobs(self.engine, mb)
            loss = sft_loss(logp, mb.loss_weights, num_tokens=max(total_weight, 1.0))
            return loss, {"nll": float(-(logp.detach() * mb.response_mask).sum() / mb.response_mask.sum().clamp(min=1))}

        metrics = self._optimizer_step(micro_batches, real, loss_fn)
        if metrics["rows_consumed"] != len(rows):
            raise RuntimeError(f"rank {self.rank}: {len(rows)} SFT rows produced but {metrics['rows_consumed']:.0f} consumed")
        metrics.update(rows=float(len(rows)), step_seconds=time.perf_counter() - start)
        return metrics

    def _sft_rows(self, refs: Sequence[Any]) -> list[SFTRow]:
        items = [x for obj in self._fetch(refs) for x in (obj if isinstance(obj, list) else [obj])]
        ready = [x for x in items if isinstance(x, SFTRow)]
        trajectories = [x for x in items if not isinstance(x, SFTRow)]
        return sft_rows(trajectories, self.cfg.sft.min_reward, self.cfg.sft.first_token_weight) + ready

    def score_sft(self, refs: Sequence[Any]) -> list[RowScore]:
        """Teacher-forced scores of this rank's validation refs (as in update_sft), without an update."""
        rows = self._sft_rows(refs)
        micro_batches, packs = self._micro_batches(rows)
        scores = []
        self.engine.eval()
        with torch.no_grad():
            for i, mb in enumerate(micro_batches):
                mb = self._to_device(mb)
                logp, hit = teacher_forced(self.engine, mb)  # padding batches too: ZeRO-3 gathers
                if i >= len(packs):
                    continue
                for j, row in enumerate(packs[i]):
                    on = mb.response_mask[j].bool()
                    right = hit[j][on]
                    scores.append(RowScore(row.label, bool(right[0]), bool(right.all()), float(-logp[j][on].sum()), int(on.sum())))
        return scores

    # ------------------------------------------------------------------ weights out
    def _named_params(self) -> list[tuple[str, torch.nn.Parameter]]:
        return list(self.engine.module.named_parameters())

    def _gathered_buckets(self, bucket_bytes: int) -> Iterator[tuple[list[TensorSpec], list[torch.Tensor] | None]]:
        """Full parameters bucket by bucket (a ZeRO-3 all-gather per bucket, on every rank); tensors on rank 0."""
        import deepspeed

        params = dict(self._named_params())
        specs = [TensorSpec(n, tuple(getattr(p, "ds_shape", p.shape)), p.dtype) for n, p in params.items()]
        for bucket in plan_buckets(specs, bucket_bytes):
            members = [params[s.name] for s in bucket]
            with deepspeed.zero.GatheredParameters(members, modifier_rank=None):
                yield bucket, ([p.data for p in members] if self.rank == 0 else None)

    def state_dict_rank0(self) -> dict[str, torch.Tensor] | None:
        """The full parameters as CPU tensors on rank 0 (None elsewhere); every rank must call it."""
        out: dict[str, torch.Tensor] = {}
        for bucket, tensors in self._gathered_buckets(int(self.cfg.learner.sync_bucket_mb * 2**20)):
            if tensors is not None:
                for s, t in zip(bucket, tensors):
                    out[s.name] = t.detach().to("cpu", copy=True)
        return out if self.rank == 0 else None

    def param_digest(self) -> list[float]:
        """Per-parameter float64 sums of the full (gathered) weights, computed on this rank."""
        import deepspeed

        out = []
        for _, p in self._named_params():
            with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
                out.append(float(p.data.double().sum()))
        return out

    def weights_digest(self) -> str | None:
        """`checkpoints.weights_digest` of the full (gathered) parameters on rank 0, None elsewhere; every
        rank must call it (ZeRO-3 gathers)."""
        from atommem.checkpoints import weights_digest

        def gathered() -> Iterator[tuple[str, torch.Tensor]]:
            for bucket, tensors in self._gathered_buckets(int(self.cfg.learner.sync_bucket_mb * 2**20)):
                if tensors is not None:
                    yield from ((s.name, t) for s, t in zip(bucket, tensors))

        digest = weights_digest(gathered())
        return digest if self.rank == 0 else None

    def init_weight_sender(self, master_addr: str, master_port: int, world_size: int, backend: str) -> None:
        """Rank 0 becomes rank 0 of the weight-sync group (blocks until every engine joins)."""
        if self.rank != 0:
            raise RuntimeError("only learner rank 0 sends weights")
        if self.sender is not None:
            self.sender.close()
        self.sender = WeightSender(master_addr, master_port, world_size, backend)

    def broadcast_weights(self) -> int:
        """Every rank gathers parameters bucket by bucket; rank 0 streams each bucket to the engines."""
        bucket_bytes = int(self.cfg.learner.sync_bucket_mb * 2**20)
        sent = 0
        if self.rank == 0:
            if self.sender is None:
                raise RuntimeError("broadcast_weights before init_weight_sender")
            specs = [TensorSpec(n, tuple(getattr(p, "ds_shape", p.shape)), p.dtype) for n, p in self._named_params()]
            self.sender.send_plan(specs, bucket_bytes)
        for bucket, tensors in self._gathered_buckets(bucket_bytes):
            if tensors is not None:
                sent += self.sender.send_bucket(bucket, tensors)
        return sent

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, directory: str, extra_state: dict) -> None:
        """DeepSpeed checkpoint (weights, optimizer, lr scheduler shards) + this rank's RNG state."""
        from atommem.checkpoints import fsync_tree

        path = Path(directory)
        self.engine.save_checkpoint(str(path), tag="state", client_state={"extra_state": extra_state})
        rng = {"python": random.getstate(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state()
        torch.save(rng, path / "state" / f"rng_rank{self.rank}.pt")
        fsync_tree(path)  # on this rank's node: its files are on disk before the driver publishes them

    def load_checkpoint(self, directory: str) -> dict:
        path = Path(directory)
        if not (path / "state").is_dir():
            raise FileNotFoundError(f"no learner checkpoint at {path} (expected {path / 'state'}); pass a directory written by save_checkpoint")
        _, client = self.engine.load_checkpoint(str(path), tag="state", load_optimizer_states=True, load_lr_scheduler_states=True)
        rng = torch.load(path / "state" / f"rng_rank{self.rank}.pt", weights_only=False)
        random.setstate(rng["python"])
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
        return dict((client or {}).get("extra_state", {}))

    def save_hf(self, directory: str) -> str | None:
        """A plain HF directory (full weights + config + tokenizer) engines can load; written by rank 0."""
        state = self.state_dict_rank0()
        if self.rank != 0:
            return None
        from safetensors.torch import save_file
        from transformers import AutoTokenizer

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        # Parameters only (a tied lm_head is one parameter; from_pretrained re-ties it from the config).
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
        self.hf_config.save_pretrained(str(out))
        AutoTokenizer.from_pretrained(self.model_path).save_pretrained(str(out))
        for extra in ("generation_config.json",):
            if (Path(self.model_path) / extra).is_file() and not (out / extra).exists():
                shutil.copy(Path(self.model_path) / extra, out / extra)
        return str(out)

    def shutdown(self) -> None:
        import torch.distributed as dist

        if self.sender is not None:
            self.sender.close()
            self.sender = None
        if dist.is_initialized():
            dist.destroy_process_group()
