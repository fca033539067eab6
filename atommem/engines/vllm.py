"""`VLLMEngine`: vLLM's asynchronous engine (`AsyncLLM`, the V1 AsyncLLMEngine) behind the `Engine` interface.

Prompts go in as token ids (`TokensPrompt`), responses come back as sampled ids with the logprob of
each (`logprobs=0`: only the sampled token; `logprobs_mode="raw_logprobs"`: before temperature and
top-p, the learner's definition). vLLM batches concurrent requests itself (continuous batching) and
keeps a prefix cache, which is why the rollout pool sends one trajectory's turns to one engine.

Weights: the learner broadcasts over a dedicated NCCL group that every vLLM worker joins through the
worker extension `atommem.engines.vllm_ext.WeightSyncExtension` (`collective_rpc`). During a sync,
generation is paused (in-flight requests finish first where vLLM supports `pause_generation`), the
prefix cache is dropped (its KV came from old weights), then generation resumes under the new
`weight_version`. An engine with tensor parallelism occupies `tensor_parallel_size` consecutive
ranks of the weight-sync group, starting at the `rank` it is given.

vLLM is imported lazily: this module imports on machines without it.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import time
from typing import Any, Iterable

import torch

from atommem.errors import EngineError
from atommem.engines.base import Generation, SamplingParams

EXTENSION = "atommem.engines.vllm_ext.WeightSyncExtension"
_NEEDS_GPU = (
    "vLLM engine needs a CUDA GPU and the `gpu` extra (pip install atommem[gpu]); "
    "on CPU use engine.kind=hf, or engine.kind=openai against a vLLM server elsewhere"
)


def _import_vllm() -> Any:
    if not torch.cuda.is_available():
        raise EngineError(_NEEDS_GPU + " (no CUDA device visible)")
    try:
        import vllm
    except ImportError:
        raise EngineError(_NEEDS_GPU + " (vllm is not installed)") from None
    return vllm


class VLLMEngine:
    """An `Engine` backed by one in-process vLLM AsyncLLM."""

    def __init__(
        self,
        model_path: str,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.6,
        enable_sleep_mode: bool = False,
        enable_prefix_caching: bool = True,
        dtype: str = "bfloat16",
        seed: int = 0,
        max_model_len: int | None = None,
    ):
        vllm = _import_vllm()
        from atommem.errors import UserError
        from atommem.models.loading import check_model_dir

        try:
            check_model_dir(str(model_path))
        except UserError as exc:
            raise EngineError(f"vLLM engine cannot load its model: {exc}") from None
        try:
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError:  # releases before V1 was the default
            from vllm import AsyncLLMEngine as AsyncLLM

        fields = {f.name for f in dataclasses.fields(vllm.AsyncEngineArgs)}
        kwargs: dict[str, Any] = dict(
            model=str(model_path),
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            enable_sleep_mode=enable_sleep_mode,
            enable_prefix_caching=enable_prefix_caching,
            dtype=dtype,
            seed=seed,
            worker_extension_cls=EXTENSION,
            max_model_len=max_model_len,
        )
        if "logprobs_mode" in fields:
            kwargs["logprobs_mode"] = "raw_logprobs"
        if "disable_log_stats" in fields:
            kwargs["disable_log_stats"] = True
        self._vllm = vllm
        self.model_path = str(model_path)
        self.enable_sleep_mode = enable_sleep_mode
        self.tensor_parallel_size = tensor_parallel_size
        self.engine = AsyncLLM.from_engine_args(vllm.AsyncEngineArgs(**kwargs))
        self.weight_version = 0
        self._ids = itertools.count()
        self._in_flight = 0
        self._sleeping = False
        self.stats = {"requests": 0, "generated_tokens": 0, "prompt_tokens": 0}

    def _sampling(self, params: SamplingParams) -> Any:
        return self._vllm.SamplingParams(
            n=1,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            stop_token_ids=list(params.stop_token_ids),
            seed=params.seed,
            logprobs=0,
            skip_special_tokens=False,
            detokenize=False,
        )

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        from vllm.inputs import TokensPrompt

        if not prompt_ids:
            raise EngineError("generate needs a non-empty prompt")
        if self._sleeping:
            raise EngineError(f"vLLM engine for {self.model_path} is asleep; call wake_up() first")
        version = self.weight_version
        final = None
        self._in_flight += 1
        try:
            stream = self.engine.generate(TokensPrompt(prompt_token_ids=list(prompt_ids)), self._sampling(params), f"atommem-{next(self._ids)}")
            async for output in stream:
                final = output
        finally:
            self._in_flight -= 1
        if final is None or not final.outputs:
            raise EngineError(f"vLLM returned no output for a request to {self.model_path}")
        out = final.outputs[0]
        ids = list(out.token_ids)
        if out.logprobs is None or len(out.logprobs) != len(ids):
            raise EngineError("vLLM returned no logprob for some sampled tokens (logprobs=0 was requested)")
        logprobs = [float(step[token].logprob) for step, token in zip(out.logprobs, ids)]
        if out.finish_reason not in ("stop", "length"):
            raise EngineError(f"vLLM request finished with {out.finish_reason!r} (aborted?)")
        self.stats["requests"] += 1
        self.stats["generated_tokens"] += len(ids)
        self.stats["prompt_tokens"] += len(prompt_ids)
        return Generation(token_ids=ids, logprobs=logprobs, finish_reason=out.finish_reason, weight_version=version)

    # ------------------------------------------------------------------ weights
    async def _swap(self, load, version: int) -> Any:
        """Run `load()` (a collective_rpc coroutine) with generation paused, then drop the stale prefix cache."""
        pause = getattr(self.engine, "pause_generation", None)
        paused = pause is not None
        if paused:  # in-flight requests finish on the old weights; new ones wait
            if "mode" in inspect.signature(pause).parameters:
                await pause(mode="wait", clear_cache=True)
            else:
                await pause(wait_for_inflight_requests=True)
        try:
            result = await load()
            await self.engine.reset_prefix_cache()
            self.weight_version = version
            return result
        finally:
            if paused:
                await self.engine.resume_generation()

    async def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> None:
        tensors = [(n, t.detach().cpu()) for n, t in named_tensors]
        await self._swap(lambda: self.engine.collective_rpc("load_named_tensors", args=(tensors,)), version)

    async def init_weight_sync(
        self, master_addr: str, master_port: int, rank: int, world_size: int, backend: str = "nccl"
    ) -> None:
        """Join the learner's weight-sync group; this engine's workers take ranks rank..rank+tp-1."""
        await self.engine.collective_rpc("init_weight_sync", args=(master_addr, master_port, rank, world_size, backend))

    async def receive_weights(self, version: int) -> dict:
        start = time.perf_counter()
        counts = await self._swap(lambda: self.engine.collective_rpc("receive_weights"), version)
        return {"version": version, "tensors": int(counts[0]), "seconds": time.perf_counter() - start}

    # ------------------------------------------------------------------ memory
    async def sleep(self, level: int = 1) -> None:
        """Free GPU memory (level 1: offload weights, drop KV cache) while a colocated learner steps."""
        if not self.enable_sleep_mode:
            raise EngineError("sleep needs engine.enable_sleep_mode: true")
        await self.engine.sleep(level)
        self._sleeping = True

    async def wake_up(self) -> None:
        if not self.enable_sleep_mode:
            raise EngineError("wake_up needs engine.enable_sleep_mode: true")
        await self.engine.wake_up()
        self._sleeping = False

    async def health(self) -> dict:
        return {
            "kind": "vllm",
            "ready": not self.engine.errored and not self._sleeping,
            "sleeping": self._sleeping,
            "model_path": self.model_path,
            "weight_version": self.weight_version,
            "in_flight": self._in_flight,
            **self.stats,
        }

    def close(self) -> None:
        self.engine.shutdown()
