"""What every weight-sync transport shares: tensor records, the bucket plan, sender/receiver interfaces.

A sync moves the learner's full weights (gathered from ZeRO-3 shards) to every inference engine. The
sender describes them as `TensorSpec`s, groups consecutive specs into buckets (`plan_buckets`) and
ships bucket by bucket, so a receiver can load early buckets while later ones are in flight. Each
transport is one file built on these records: `process_group.py` (the wire: a torch process group,
gloo or NCCL) and `vllm_transfer.py` (that wire behind vLLM's weight-transfer API, inside vLLM's workers).
"""


from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

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


class BucketSender(ABC):
    """The learner's end of a sync: the plan first, then its buckets in plan order."""

    @abstractmethod
    def send_plan(self, specs: Sequence[TensorSpec], bucket_bytes: int) -> list[list[TensorSpec]]:
        """Announce one sync's tensors and return its buckets (send each with `send_bucket`)."""

    @abstractmethod
    def send_bucket(self, bucket: Sequence[TensorSpec], tensors: Sequence[torch.Tensor]) -> int:
        """Ship one bucket's tensors (in plan order); returns the bytes sent."""

    def send(self, named_tensors: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int) -> int:
        """One whole sync from tensors at hand; returns the bytes sent."""
        tensors = dict(named_tensors)
        specs = [TensorSpec(n, tuple(t.shape), t.dtype) for n, t in tensors.items()]
        return sum(self.send_bucket(b, [tensors[s.name] for s in b]) for b in self.send_plan(specs, bucket_bytes))

    @abstractmethod
    def close(self) -> None: ...


class BucketReceiver(ABC):
    """An engine's end of a sync."""

    @abstractmethod
    def receive(self) -> Iterator[tuple[str, torch.Tensor]]:
        """One sync: `(name, tensor)` for every weight in plan order, bucket by bucket as each lands.
        Exhaust it: the sender waits for every receiver in every bucket."""

    @abstractmethod
    def close(self) -> None: ...
