"""`HFEngine`: a transformers model on CPU (or one GPU) behind the async `Engine` interface.

Concurrent `generate` calls from many coroutines (many envs) are coalesced into one batch: the first
request waits `batch_wait_ms` for company, then up to `max_batch_size` prompts are left-padded and
decoded together in a worker thread with a KV cache (attention mask + explicit position ids, so a
padded row computes exactly what it would alone). Rows that finish are dropped from the (preallocated) cache. The
batch is static: requests arriving meanwhile form the next batch.

Logprobs: for each sampled id, `log_softmax(raw logits)[id]` in float32 - the model's distribution
BEFORE temperature and top-p. The learner recomputes logprobs with the same definition, so the
ratio of the two is exactly the policy ratio PPO needs.

Weight updates run on the same single worker thread as generation, so they wait for the in-flight
batch and no batch ever sees half-loaded weights; later generations carry the new `weight_version`.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable

import torch

from atommem.engines.base import EngineError, Generation, SamplingParams


@dataclass
class _Request:
    prompt_ids: list[int]
    params: SamplingParams
    future: asyncio.Future


class HFEngine:
    """Batched incremental decoding with a Hugging Face causal LM; implements `Engine`."""

    def __init__(
        self,
        model_path: str,
        max_batch_size: int = 64,
        batch_wait_ms: float = 5.0,
        dtype: str = "float32",
        seed: int = 0,
        device: str = "cpu",
        num_threads: int | None = None,
    ):
        from atommem.errors import UserError
        from atommem.models.tiny import load_model, load_tokenizer

        if max_batch_size < 1:
            raise EngineError(f"engine.max_batch_size must be >= 1, got {max_batch_size}")
        if num_threads is not None:
            # process-wide; on shared/oversubscribed CPUs 2 intra-op threads ran ~8x slower than 1 (bench/hf_engine.py)
            torch.set_num_threads(num_threads)
        try:
            self.tokenizer = load_tokenizer(model_path)
            self.model = load_model(model_path, dtype).to(device)
        except UserError as exc:
            raise EngineError(f"HF engine cannot load its model: {exc}") from None
        self.model_path = str(model_path)
        self.device = torch.device(device)
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_ms / 1000.0
        self.eos_token_id = self.tokenizer.eos_token_id
        if self.eos_token_id is None:
            raise EngineError(f"the tokenizer of {model_path} has no eos token; the engine needs one to stop")
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.eos_token_id
        self.vocab_size = self.model.get_input_embeddings().weight.shape[0]
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None)
        # transformers 5.x renamed the forward's cache argument; older releases only know the old name
        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self.weight_version = 0
        self._rng = torch.Generator().manual_seed(seed)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf-engine")
        self._lock = threading.Lock()  # generation vs weight loading, also for direct (non-async) callers
        self._pending: list[_Request] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batcher: asyncio.Task | None = None
        self._in_flight = 0
        self._receiver: Any = None
        self.stats = {"requests": 0, "batches": 0, "generated_tokens": 0, "prompt_tokens": 0}

    # ------------------------------------------------------------------ Engine interface
    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        self._validate(prompt_ids, params)
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first call, or a new event loop (the old one's futures are gone)
            self._loop, self._pending, self._batcher = loop, [], None
        request = _Request(list(prompt_ids), params, loop.create_future())
        self._pending.append(request)
        if self._batcher is None or self._batcher.done():
            self._batcher = loop.create_task(self._batch_loop())
        return await request.future

    async def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self.load_weights, named_tensors, version)

    async def health(self) -> dict:
        return {
            "kind": "hf",
            "ready": True,
            "model_path": self.model_path,
            "weight_version": self.weight_version,
            "queue_depth": len(self._pending),
            "in_flight": self._in_flight,
            **self.stats,
        }

    # ------------------------------------------------------------------ weight sync (INTERFACES §9)
    async def init_weight_sync(
        self, master_addr: str, master_port: int, rank: int, world_size: int, backend: str = "gloo"
    ) -> None:
        """Join the learner's weight-sync group as `rank` (blocks until every rank has joined)."""
        from atommem.learner.weight_sync import WeightReceiver

        self._receiver = await asyncio.to_thread(WeightReceiver, master_addr, master_port, rank, world_size, backend)

    async def receive_weights(self, version: int) -> dict:
        """Receive one broadcast from the learner and load it; returns {"version", "tensors", "seconds"}."""
        if self._receiver is None:
            raise EngineError("receive_weights called before init_weight_sync")
        start = time.perf_counter()
        receiver = self._receiver
        n = await asyncio.get_running_loop().run_in_executor(
            self._executor, lambda: self.load_weights(receiver.receive(), version)
        )
        return {"version": version, "tensors": n, "seconds": time.perf_counter() - start}

    # ------------------------------------------------------------------ synchronous core
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> int:
        """Copy tensors into the model in place (names as in `model.state_dict()`); returns how many.

        Consumes the whole iterable even when a name or shape is wrong (a broadcast must be drained
        by every receiver), then raises EngineError listing the problems; valid tensors are loaded.
        """
        with self._lock, torch.no_grad():
            state = self.model.state_dict()
            problems: list[str] = []
            count = 0
            for name, tensor in named_tensors:
                target = state.get(name)
                if target is None:
                    problems.append(f"unknown weight {name!r}")
                elif tuple(target.shape) != tuple(tensor.shape):
                    problems.append(f"{name}: shape {tuple(tensor.shape)} != model's {tuple(target.shape)}")
                else:
                    target.copy_(tensor.to(device=target.device, dtype=target.dtype))
                    count += 1
            if problems:
                raise EngineError(f"weight update v{version} for {self.model_path}: " + "; ".join(problems[:5]))
            self.weight_version = version
            return count

    def generate_batch(self, requests: list[tuple[list[int], SamplingParams]]) -> list[Generation]:
        """Decode a batch of (prompt ids, params) together; the worker thread's unit of work."""
        with self._lock, torch.inference_mode():
            return self._decode(requests)

    # ------------------------------------------------------------------ internals
    def _validate(self, prompt_ids: list[int], params: SamplingParams) -> None:
        if not prompt_ids:
            raise EngineError("generate needs a non-empty prompt")
        if params.max_tokens < 1:
            raise EngineError(f"max_tokens must be >= 1, got {params.max_tokens}")
        if params.temperature < 0 or not 0 < params.top_p <= 1:
            raise EngineError(f"need temperature >= 0 and 0 < top_p <= 1, got {params.temperature}, {params.top_p}")
        bad = [t for t in prompt_ids if not 0 <= t < self.vocab_size]
        if bad:
            raise EngineError(f"prompt token id {bad[0]} is outside the model's vocabulary of {self.vocab_size}")
        if self.max_positions is not None and len(prompt_ids) >= self.max_positions:
            raise EngineError(
                f"prompt of {len(prompt_ids)} tokens does not fit the model's {self.max_positions} positions; "
                "shorten the chunks (env.chunk_tokens) or the retrieval budget"
            )

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            if len(self._pending) < self.max_batch_size and self.batch_wait_s > 0:
                await asyncio.sleep(self.batch_wait_s)
            batch = [r for r in self._pending[: self.max_batch_size] if not r.future.cancelled()]
            del self._pending[: self.max_batch_size]
            if not batch:
                continue
            self._in_flight = len(batch)
            try:
                results = await loop.run_in_executor(
                    self._executor, self.generate_batch, [(r.prompt_ids, r.params) for r in batch]
                )
            except Exception as exc:  # delivered to every waiting caller, none is left hanging
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(exc)
                continue
            finally:
                self._in_flight = 0
            for r, result in zip(batch, results):
                if not r.future.done():
                    r.future.set_result(result)

    def _decode(self, requests: list[tuple[list[int], SamplingParams]]) -> list[Generation]:
        from transformers import StaticCache

        n = len(requests)
        version = self.weight_version
        lengths = [len(p) for p, _ in requests]
        width = max(lengths)
        ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, (prompt, _) in enumerate(requests):
            ids[i, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[i, width - len(prompt) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        budgets = [
            p.max_tokens if self.max_positions is None else min(p.max_tokens, self.max_positions - length)
            for (_, p), length in zip(requests, lengths)
        ]
        stops = [set(p.stop_token_ids) | {self.eos_token_id} for _, p in requests]
        generators = [torch.Generator().manual_seed(p.seed) if p.seed is not None else None for _, p in requests]
        out_ids: list[list[int]] = [[] for _ in range(n)]
        out_logps: list[list[float]] = [[] for _ in range(n)]
        finish = ["length"] * n

        # preallocated KV: a DynamicCache re-concatenates every layer's keys/values each step, which
        # was ~70% of a batch-64 decode step on CPU; the static one writes in place (same outputs)
        cache = StaticCache(config=self.model.config, max_cache_len=width + max(budgets))
        dev = self.device
        mask, positions = mask.to(dev), positions.to(dev)
        logits = self.model(
            input_ids=ids.to(dev), attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
            **{self._cache_kw: cache},
        ).logits[:, -1, :]
        active = list(range(n))  # request index of each cache row
        last_pos = positions[:, -1]
        while True:
            tokens, logps = self._sample(logits.float(), [requests[i][1] for i in active], [generators[i] for i in active])
            keep: list[int] = []
            for row, i in enumerate(active):
                token = int(tokens[row])
                out_ids[i].append(token)
                out_logps[i].append(float(logps[row]))
                if token in stops[i]:
                    finish[i] = "stop"
                elif len(out_ids[i]) < budgets[i]:
                    keep.append(row)
            if not keep:
                break
            if len(keep) < len(active):
                rows = torch.tensor(keep, device=dev)
                _keep_cache_rows(cache, rows)
                mask, last_pos, tokens = mask[rows], last_pos[rows], tokens[rows]
                active = [active[r] for r in keep]
            mask = torch.cat([mask, torch.ones((len(active), 1), dtype=mask.dtype, device=dev)], dim=1)
            last_pos = last_pos + 1
            logits = self.model(
                input_ids=tokens.view(-1, 1), attention_mask=mask, position_ids=last_pos.view(-1, 1), use_cache=True,
                **{self._cache_kw: cache},
            ).logits[:, -1, :]

        generated = sum(len(o) for o in out_ids)
        self.stats["requests"] += n
        self.stats["batches"] += 1
        self.stats["generated_tokens"] += generated
        self.stats["prompt_tokens"] += sum(lengths)
        return [
            Generation(token_ids=out_ids[i], logprobs=out_logps[i], finish_reason=finish[i], weight_version=version)
            for i in range(n)
        ]

    def _sample(
        self, logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Next token per row (greedy at temperature 0, else temperature + top-p) and its raw logprob."""
        logprobs = torch.log_softmax(logits, dim=-1)
        tokens = logits.argmax(dim=-1)
        sampled = [r for r, p in enumerate(params) if p.temperature > 0]
        if sampled:
            rows = torch.tensor(sampled, device=logits.device)
            temps = torch.tensor([params[r].temperature for r in sampled], device=logits.device).unsqueeze(1)
            probs = torch.softmax(logits[rows] / temps, dim=-1)
            top_p = torch.tensor([params[r].top_p for r in sampled], device=logits.device).unsqueeze(1)
            if (top_p < 1).any():
                sorted_probs, order = probs.sort(dim=-1, descending=True)
                before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass strictly above each token
                sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)  # the top token always stays
                probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
            shared = [k for k, r in enumerate(sampled) if generators[r] is None]
            if shared:
                picks = torch.multinomial(probs[shared].cpu(), 1, generator=self._rng).squeeze(1)
                tokens[rows[shared]] = picks.to(tokens.device)
            for k, r in enumerate(sampled):
                if generators[r] is not None:
                    tokens[r] = int(torch.multinomial(probs[k].cpu(), 1, generator=generators[r]))
        return tokens, logprobs.gather(-1, tokens.unsqueeze(1)).squeeze(1)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def _keep_cache_rows(cache, rows: torch.Tensor) -> None:
    """Keep only `rows` of a StaticCache's batch (it has no batch_select_indices of its own)."""
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(0, rows)
        layer.values = layer.values.index_select(0, rows)
        layer.batch_size = len(rows)
