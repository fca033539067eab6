"""vLLM worker extension: the hook that puts our weight-transfer backend into every vLLM worker process.

`VLLMEngine` builds its `AsyncLLM` with `worker_extension_cls="atommem.engines.vllm_ext.WeightSyncExtension"`;
vLLM imports this module in each worker process (engine core workers, spawned or forked, inside Ray
actors too) before the model loads, which registers the `atommem_buckets` backend
(`weight_sync/vllm_transfer.py`) with vLLM's weight-transfer factory there. The weight updates
themselves go through vLLM's API (`AsyncLLM.start_weight_update` / `update_weights` /
`finish_weight_update`), not through methods of this class. Inside a method `self` is the worker.
"""

from __future__ import annotations

from atommem.weight_sync.vllm_transfer import register

register()


class WeightSyncExtension:
    """Methods added to each vLLM worker (reached with `collective_rpc`)."""

    def atommem_last_update_tensors(self) -> int:
        """Tensors this worker loaded in its last weight update (a report for the caller, not a control path)."""
        return int(self.weight_transfer_engine.last_update_tensors)
