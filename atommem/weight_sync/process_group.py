"""Weight sync over a dedicated torch process group: gloo on CPU, NCCL on GPU.

The learner's rank 0 (the sender, rank 0 here) and every engine (ranks 1..E) form a standalone
group built directly from a `TCPStore` (`ProcessGroupGloo(store, rank, size)` on CPU,
`ProcessGroupNCCL(store, rank, size)` on GPU). It is independent of the default group DeepSpeed
uses inside the learner, and of whatever group an engine (vLLM) uses internally, so the two worlds
never have to be merged; it is created once and reused across syncs.

Per sync the sender broadcasts one pickled metadata object (the bucket plan: names, shapes, dtypes)
and then, bucket by bucket, one flat tensor per dtype of at most `bucket_bytes` (a tensor larger
than that travels alone). Receivers yield `(name, tensor)` as each bucket lands, so an engine can
load weights while later buckets are still in flight. `bucket_bytes=0` sends one tensor per bucket
(the per-tensor baseline of bench/weight_sync.py).
"""

from __future__ import annotations

import datetime
import pickle
from typing import Iterator, Sequence

import torch
import torch.distributed as dist

from atommem.weight_sync.base import BucketReceiver, BucketSender, TensorSpec, dtypes_in, plan_buckets


def _make_group(master_addr: str, master_port: int, rank: int, world_size: int, backend: str, timeout_s: float):
    timeout = datetime.timedelta(seconds=timeout_s)
    # The master (rank 0) hosts the store and waits for all ranks; every rank must construct concurrently.
    store = dist.TCPStore(master_addr, master_port, world_size, is_master=rank == 0, timeout=timeout)
    if backend == "gloo":
        return store, dist.ProcessGroupGloo(store, rank, world_size, timeout)
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise RuntimeError("weight sync backend 'nccl' needs a CUDA GPU; use backend='gloo' on CPU")
        return store, dist.ProcessGroupNCCL(store, rank, world_size)
    raise ValueError(f"unknown weight sync backend {backend!r} (use 'gloo' or 'nccl')")


class _Endpoint:
    def __init__(self, master_addr: str, master_port: int, rank: int, world_size: int, backend: str, timeout_s: float):
        if world_size < 2:
            raise ValueError(f"weight sync needs a sender and at least one receiver, got world_size={world_size}")
        self.rank, self.world_size, self.backend = rank, world_size, backend
        self.device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        self._store, self._pg = _make_group(master_addr, master_port, rank, world_size, backend, timeout_s)

    def _broadcast(self, tensor: torch.Tensor) -> None:
        opts = dist.BroadcastOptions()
        opts.rootRank = 0
        self._pg.broadcast([tensor], opts).wait()

    def _broadcast_object(self, obj=None):
        if self.rank == 0:
            payload = torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8).to(self.device)
            length = torch.tensor([payload.numel()], dtype=torch.int64, device=self.device)
        else:
            length = torch.zeros(1, dtype=torch.int64, device=self.device)
        self._broadcast(length)
        if self.rank != 0:
            payload = torch.empty(int(length.item()), dtype=torch.uint8, device=self.device)
        self._broadcast(payload)
        return obj if self.rank == 0 else pickle.loads(payload.cpu().numpy().tobytes())

    def close(self) -> None:
        self._pg = None
        self._store = None


class WeightSender(_Endpoint, BucketSender):
    """Rank 0 of the weight-sync group (the learner's rank 0)."""

    def __init__(self, master_addr: str, master_port: int, world_size: int, backend: str = "gloo", timeout_s: float = 300.0):
        super().__init__(master_addr, master_port, 0, world_size, backend, timeout_s)
        self.bytes_sent = 0
        # One staging buffer per dtype, reused across buckets and syncs: a fresh multi-MB allocation per
        # bucket costs more in page faults than the copy itself.
        self._staging: dict[torch.dtype, torch.Tensor] = {}

    def _stage(self, parts: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        n = sum(p.numel() for p in parts)
        buf = self._staging.get(dtype)
        if buf is None or buf.numel() < n:
            buf = self._staging[dtype] = torch.empty(n, dtype=dtype, device=self.device)
        return torch.cat(parts, out=buf[:n])

    def send_plan(self, specs: Sequence[TensorSpec], bucket_bytes: int) -> list[list[TensorSpec]]:
        """Broadcast the metadata of one sync and return its buckets (send each with `send_bucket`)."""
        buckets = plan_buckets(specs, bucket_bytes)
        self._broadcast_object(buckets)
        return buckets

    def send_bucket(self, bucket: Sequence[TensorSpec], tensors: Sequence[torch.Tensor]) -> int:
        """Broadcast one bucket's tensors (in plan order) as one flat tensor per dtype."""
        sent = 0
        for dtype in dtypes_in(bucket):
            parts = [t.detach().reshape(-1).to(device=self.device, dtype=dtype) for s, t in zip(bucket, tensors) if s.dtype == dtype]
            flat = self._stage(parts, dtype) if len(parts) > 1 else parts[0].contiguous()
            self._broadcast(flat)
            sent += flat.numel() * flat.element_size()
        self.bytes_sent += sent
        return sent


class WeightReceiver(_Endpoint, BucketReceiver):
    """Ranks 1..E of the weight-sync group (one per engine)."""

    def __init__(
        self, master_addr: str, master_port: int, rank: int, world_size: int, backend: str = "gloo", timeout_s: float = 300.0
    ):
        if rank < 1:
            raise ValueError(f"receivers have ranks 1..world_size-1 (rank 0 is the learner), got {rank}")
        super().__init__(master_addr, master_port, rank, world_size, backend, timeout_s)

    def receive(self) -> Iterator[tuple[str, torch.Tensor]]:
        """One sync: yields (name, tensor) for every weight, bucket by bucket as each arrives.

        Exhaust the iterator (the sender waits for every rank in every broadcast). Yielded tensors
        are views into the bucket's flat buffer; copy them into the model.
        """
        buckets: list[list[TensorSpec]] = self._broadcast_object()
        for bucket in buckets:
            views: dict[str, torch.Tensor] = {}
            for dtype in dtypes_in(bucket):
                members = [s for s in bucket if s.dtype == dtype]
                flat = torch.empty(sum(s.numel for s in members), dtype=dtype, device=self.device)
                self._broadcast(flat)
                offset = 0
                for s in members:
                    views[s.name] = flat[offset : offset + s.numel].view(s.shape)
                    offset += s.numel
            for s in bucket:  # plan order, whatever the dtype grouping
                yield s.name, views[s.name]
