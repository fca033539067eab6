"""What every weight-sync transport shares: tensor records and the bucket plan.

A sync moves the learner's full weights (gathered from ZeRO-3 shards) to every inference engine. The
sender describes them as `TensorSpec`s, groups consecutive specs into buckets (`plan_buckets`) and
ships bucket by bucket, so a receiver can load early buckets while later ones are in flight. Each
transport (`weight_sync/process_group.py`, ...) is one file built on these records.
"""


from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * torch.tensor([], dtype=self.dtype).element_size()


def plan_buckets(specs: Sequence[TensorSpec], bucket_bytes: int) -> list[list[TensorSpec]]:
    """Consecutive specs grouped into buckets of at most `bucket_bytes` (0: one tensor per bucket).

    A tensor of at least bucket_bytes/16 travels alone: packing it would cost a copy as large as
    itself to save one broadcast call, and only small tensors are latency-bound.
    """
    alone = bucket_bytes // 16
    buckets: list[list[TensorSpec]] = []
    current: list[TensorSpec] = []
    size = 0
    for spec in specs:
        if bucket_bytes > 0 and spec.nbytes >= alone:
            if current:
                buckets.append(current)
                current, size = [], 0
            buckets.append([spec])
            continue
        if current and (bucket_bytes <= 0 or size + spec.nbytes > bucket_bytes):
            buckets.append(current)
            current, size = [], 0
        current.append(spec)
        size += spec.nbytes
    if current:
        buckets.append(current)
    return buckets


def dtypes_in(bucket: Sequence[TensorSpec]) -> list[torch.dtype]:
    seen: list[torch.dtype] = []
    for s in bucket:
        if s.dtype not in seen:
            seen.append(s.dtype)
    return seen


def free_port(host: str = "") -> int:
    """A TCP port free on this host right now (the store binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def node_ip() -> str:
    """This node's address as other nodes reach it (Ray's view when Ray runs, else loopback)."""
    try:
        import ray

        if ray.is_initialized():
            return ray.util.get_node_ip_address()
    except ImportError:
        pass
    return "127.0.0.1"
