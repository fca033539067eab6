"""vLLM worker extension: weight sync from the learner inside every vLLM worker process.

vLLM mixes this class into its GPU worker when the engine is built with
`worker_extension_cls="atommem.engines.vllm_ext.WeightSyncExtension"`; the engine reaches the methods
through `collective_rpc(name, args=...)`, once per worker (one per tensor-parallel rank). Inside a
method `self` is the worker: `self.rank` is its tensor-parallel rank, `self.model_runner.model` the
vLLM model, whose `load_weights` accepts Hugging Face parameter names and shards them itself.
Nothing here imports vLLM, so this module imports anywhere.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import torch


def _counted(pairs: Iterable[tuple[str, torch.Tensor]], counter: list[int]) -> Iterator[tuple[str, torch.Tensor]]:
    for pair in pairs:
        counter[0] += 1
        yield pair


class WeightSyncExtension:
    """Methods added to each vLLM worker."""

    def init_weight_sync(self, master_addr: str, master_port: int, first_rank: int, world_size: int, backend: str = "nccl") -> int:
        """Join the learner's weight-sync group as rank `first_rank + tensor-parallel rank`; returns that rank."""
        from atommem.weight_sync.process_group import WeightReceiver

        rank = first_rank + int(getattr(self, "rank", 0))
        self._atommem_receiver = WeightReceiver(master_addr, master_port, rank, world_size, backend)
        return rank

    def receive_weights(self) -> int:
        """Receive one broadcast and stream it into the model as buckets arrive; returns the tensor count."""
        receiver = getattr(self, "_atommem_receiver", None)
        if receiver is None:
            raise RuntimeError("receive_weights called before init_weight_sync on this vLLM worker")
        count = [0]
        self.model_runner.model.load_weights(weights=_counted(receiver.receive(), count))
        torch.cuda.synchronize()
        return count[0]

    def load_named_tensors(self, named_tensors: list[tuple[str, torch.Tensor]]) -> int:
        """Load tensors shipped through collective_rpc itself (small models and tests; training uses receive_weights)."""
        device = next(self.model_runner.model.parameters()).device
        self.model_runner.model.load_weights(weights=[(n, t.to(device)) for n, t in named_tensors])
        return len(named_tensors)
