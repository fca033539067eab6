"""`HFEngine`: a transformers model on CPU (or one GPU) behind the async `Engine` interface.

Continuous batching: one running batch of at most `max_batch_size` rows decodes one token per step
on a single worker thread. Between two steps, requests that arrived meanwhile are admitted (their
prompts are prefilled as their own left-padded mini-batch, then its KV cache is merged into the
running one, both left-padded to a common length) and rows that finished are dropped at once, so a
request never waits for another one to finish. When the engine is idle the first request waits
`batch_wait_ms` for company. Rows of different ages share one preallocated KV cache (a
`StaticCache`, written in place) and one write column; each row has its own attention mask over the
cache columns and its own position ids, so every row computes what it would compute alone.

Logprobs: for each sampled id, `log_softmax(raw logits)[id]` in float32 - the model's distribution
BEFORE temperature and top-p. The learner recomputes logprobs with the same definition, so the
ratio of the two is exactly the policy ratio PPO needs.

Weight updates run on the same worker thread as the decode steps, so they wait for the step in
flight (never for the whole batch) and no step ever sees half-loaded weights. A generation is
stamped with the `weight_version` current at its first token (its prefill); when an update lands
while it decodes, its later tokens (and their logprobs) come from the new weights over a KV cache
computed by the old ones, as with vLLM's in-flight weight updates.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch

from atommem.errors import EngineError
from atommem.engines.base import Generation, SamplingParams


@dataclass
class _Request:
    prompt_ids: list[int]
    params: SamplingParams
    future: asyncio.Future | None = None  # None for direct (generate_batch) callers


@dataclass
class _Row:
    """One request while it decodes: a row of the running batch and of its KV cache."""

    request: _Request
    budget: int  # tokens it may generate (max_tokens, capped by the model's positions)
    stops: set[int]
    generator: torch.Generator | None
    version: int  # weight version at its first token
    cached: int  # its tokens held in the KV cache = position id of the next token fed
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish: str | None = None

    def generation(self) -> Generation:
        return Generation(self.token_ids, self.logprobs, self.finish or "length", weight_version=self.version)


class _Batch:
    """The running batch: rows that share one StaticCache whose next write column is `width`.

    Row i holds its tokens in the last `rows[i].cached` columns before `width` (left padding before);
    the last sampled token of each row is not yet in the cache, the next decode step feeds it."""

    def __init__(self) -> None:
        self.rows: list[_Row] = []
        self.cache: Any = None
        self.width = 0

    def __len__(self) -> int:
        return len(self.rows)


class HFEngine:
    """Continuously batched incremental decoding with a Hugging Face causal LM; implements `Engine`."""

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
        from atommem.models.loading import load_model, load_tokenizer

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
        self._lock = threading.Lock()  # decode steps vs weight loading, also for direct (non-async) callers
        self._pending: list[_Request] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._driver: asyncio.Task | None = None
        self._batch = _Batch()
        self._receiver: Any = None
        # batches = prefilled admissions (one per group of requests joining), decode_steps = one token for every row
        # joined_running = requests admitted while other rows were decoding (continuous batching at work)
        self.stats = {
            "requests": 0, "batches": 0, "joined_running": 0, "decode_steps": 0, "generated_tokens": 0, "prompt_tokens": 0,
        }

    # ------------------------------------------------------------------ Engine interface
    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        self._validate(prompt_ids, params)
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first call, or a new event loop (the old one's futures are gone)
            self._loop, self._pending, self._driver, self._batch = loop, [], None, _Batch()
        request = _Request(list(prompt_ids), params, loop.create_future())
        self._pending.append(request)
        if self._driver is None or self._driver.done():
            self._driver = loop.create_task(self._drive())
        return await request.future

    async def health(self) -> dict:
        return {
            "kind": "hf",
            "ready": True,
            "model_path": self.model_path,
            "weight_version": self.weight_version,
            "queue_depth": len(self._pending),
            "in_flight": len(self._batch),
            **self.stats,
        }

    # ------------------------------------------------------------------ weight sync (weight_sync/process_group.py)
    async def init_weight_sync(
        self, master_addr: str, master_port: int, rank: int, world_size: int, backend: str = "gloo"
    ) -> None:
        """Join the learner's weight-sync group as `rank` (blocks until every rank has joined)."""
        from atommem.weight_sync.process_group import WeightReceiver

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

    async def weights_digest(self) -> str:
        """`checkpoints.weights_digest` of the parameters it generates with (a tied lm_head once, under the
        embedding's name, as the learner names it), taken between two decode steps."""
        from atommem.checkpoints import weights_digest

        return await asyncio.get_running_loop().run_in_executor(
            self._executor, lambda: weights_digest(self.model.named_parameters())
        )

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
        """Decode (prompt ids, params) pairs to completion, synchronously (no event loop), continuously batched."""
        for prompt, params in requests:
            self._validate(prompt, params)
        waiting = [_Request(list(p), sp) for p, sp in requests]
        order = {id(r): i for i, r in enumerate(waiting)}
        results: list[Generation | None] = [None] * len(waiting)
        batch = _Batch()
        while waiting or batch.rows:
            free = self.max_batch_size - len(batch)
            admit, waiting = waiting[:free], waiting[free:]
            for row in self.step(batch, admit):
                results[order[id(row.request)]] = row.generation()
        return results

    def step(self, batch: _Batch, admit: list[_Request]) -> list[_Row]:
        """One scheduling step on the worker thread: decode one token for every running row, then prefill
        and merge `admit` (their first token); returns the rows that finished, already removed."""
        with self._lock, torch.inference_mode():
            finished: list[_Row] = []
            if batch.rows:
                self._decode_step(batch)
                finished += self._retire(batch)
            if admit:
                self._admit(batch, admit)
                finished += self._retire(batch)
            return finished

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

    async def _drive(self) -> None:
        """Feeds the worker thread one step at a time, admitting waiting requests between steps."""
        loop = asyncio.get_running_loop()
        batch = self._batch
        while self._pending or batch.rows:
            if not batch.rows and len(self._pending) < self.max_batch_size and self.batch_wait_s > 0:
                await asyncio.sleep(self.batch_wait_s)  # idle engine: let a burst of requests share one prefill
            free = self.max_batch_size - len(batch)
            admit = [r for r in self._pending[:free] if not r.future.cancelled()]
            del self._pending[:free]
            try:
                finished = await loop.run_in_executor(self._executor, self.step, batch, admit)
            except Exception as exc:  # delivered to every caller in the batch, none is left hanging
                for request in admit + [row.request for row in batch.rows]:
                    if not request.future.done():
                        request.future.set_exception(exc)
                batch = self._batch = _Batch()
                continue
            for row in finished:
                if not row.request.future.done():
                    row.request.future.set_result(row.generation())

    def _admit(self, batch: _Batch, requests: list[_Request]) -> None:
        """Prefill `requests` as one left-padded mini-batch, sample their first tokens, merge them into `batch`."""
        from transformers import StaticCache

        n, dev = len(requests), self.device
        lengths = [len(r.prompt_ids) for r in requests]
        width = max(lengths)
        ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, r in enumerate(requests):
            ids[i, width - lengths[i] :] = torch.tensor(r.prompt_ids, dtype=torch.long)
            mask[i, width - lengths[i] :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        rows = [
            _Row(
                request=r,
                budget=r.params.max_tokens if self.max_positions is None else min(r.params.max_tokens, self.max_positions - length),
                stops=set(r.params.stop_token_ids) | {self.eos_token_id},
                generator=torch.Generator().manual_seed(r.params.seed) if r.params.seed is not None else None,
                version=self.weight_version,
                cached=length,
            )
            for r, length in zip(requests, lengths)
        ]
        # alone, the new rows' cache is sized for their whole decode; merged, it is copied into a bigger one
        room = max(row.budget for row in rows) if not batch.rows else 0
        cache = StaticCache(config=self.model.config, max_cache_len=width + room)
        logits = self.model(
            input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=positions.to(dev), use_cache=True,
            logits_to_keep=1, **{self._cache_kw: cache},
        ).logits[:, -1, :]
        self._take_tokens(rows, logits)
        if batch.rows:
            _merge_caches(batch, cache, width, rows)
            self.stats["joined_running"] += n
        else:
            batch.cache, batch.width = cache, width
        batch.rows += rows
        self.stats["requests"] += n
        self.stats["batches"] += 1
        self.stats["prompt_tokens"] += sum(lengths)

    def _decode_step(self, batch: _Batch) -> None:
        """Feed every row its last sampled token (one new cache column for all) and sample the next."""
        dev = self.device
        cached = torch.tensor([row.cached for row in batch.rows], device=dev)
        # row i attends to its own `cached` columns before `width` and to the column written now
        mask = (torch.arange(batch.width + 1, device=dev) >= (batch.width - cached).unsqueeze(1)).long()
        tokens = torch.tensor([[row.token_ids[-1]] for row in batch.rows], device=dev)
        logits = self.model(
            input_ids=tokens, attention_mask=mask, position_ids=cached.unsqueeze(1), use_cache=True,
            **{self._cache_kw: batch.cache},
        ).logits[:, -1, :]
        batch.width += 1
        for row in batch.rows:
            row.cached += 1
        self._take_tokens(batch.rows, logits)
        self.stats["decode_steps"] += 1

    def _take_tokens(self, rows: list[_Row], logits: torch.Tensor) -> None:
        tokens, logps = self._sample(logits.float(), [r.request.params for r in rows], [r.generator for r in rows])
        for row, token, logp in zip(rows, tokens.tolist(), logps.tolist()):
            row.token_ids.append(token)
            row.logprobs.append(logp)
            if token in row.stops:
                row.finish = "stop"
            elif len(row.token_ids) >= row.budget:
                row.finish = "length"
        self.stats["generated_tokens"] += len(rows)

    def _retire(self, batch: _Batch) -> list[_Row]:
        """Drop finished rows from the batch and its cache at once; returns them."""
        keep = [i for i, row in enumerate(batch.rows) if row.finish is None]
        if len(keep) == len(batch.rows):
            return []
        finished = [row for row in batch.rows if row.finish is not None]
        if keep:
            _keep_cache_rows(batch.cache, torch.tensor(keep, device=self.device))
            batch.rows = [batch.rows[i] for i in keep]
        else:
            batch.rows, batch.cache, batch.width = [], None, 0
        return finished

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


def _merge_caches(batch: _Batch, new_cache, new_width: int, new_rows: list[_Row]) -> None:
    """Append the prefilled rows of `new_cache` (tokens in its first `new_width` columns) to `batch`.

    Both are left-aligned on a common write column, the narrowest that holds every row's tokens (columns
    no running row still uses are dropped), in a fresh cache sized for every row's remaining tokens."""
    old_rows = batch.rows
    span = max(row.cached for row in old_rows)  # columns the running rows still use, ending at batch.width
    width = max(span, new_width)
    room = max(row.budget - len(row.token_ids) for row in old_rows + new_rows)
    n_old = len(old_rows)
    for layer, new_layer in zip(batch.cache.layers, new_cache.layers):
        for name in ("keys", "values"):
            old, new = getattr(layer, name), getattr(new_layer, name)
            merged = old.new_zeros((n_old + new.shape[0], old.shape[1], width + room, old.shape[3]))
            merged[:n_old, :, width - span : width] = old[:, :, batch.width - span : batch.width]
            merged[n_old:, :, width - new_width : width] = new[:, :, :new_width]
            setattr(layer, name, merged)
        layer.batch_size = merged.shape[0]
        layer.max_cache_len = width + room
        layer.cumulative_length = torch.tensor(width, device=merged.device)
    batch.width = width
