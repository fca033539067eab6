"""Shared by the real-vLLM tests: a tiny model vLLM's CPU kernels accept, learner-side weight syncs, HF references."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Callable

import torch

from atommem.engines.base import Generation
from atommem.weight_sync.base import free_port
from atommem.weight_sync.process_group import WeightSender
from helpers_models import make_tiny_model_dir

# vLLM's CPU attention needs heads of 32+ dims: hidden 128 over 4 heads
VLLM_HIDDEN = 128


def vllm_model_dir(tmp_path: Path, scramble_seed: int | None = None) -> Path:
    """A tiny model dir; with `scramble_seed`, its weights on disk are `scrambled` ones (diverse greedy outputs)."""
    path = make_tiny_model_dir(tmp_path, hidden=VLLM_HIDDEN, layers=2)
    if scramble_seed is not None:
        from atommem.models.loading import load_model

        model = load_model(path)
        with_weights(model, scrambled(model, scramble_seed)).save_pretrained(path)
    return path


def scrambled(model: torch.nn.Module, seed: int, scale: float = 0.3) -> list[tuple[str, torch.Tensor]]:
    """Large random weights (norms kept): a fresh tiny model repeats one token, which would make 'same
    output' comparisons vacuous."""
    g = torch.Generator().manual_seed(seed)
    return [(n, torch.randn(t.shape, generator=g) * scale) for n, t in model.named_parameters() if "norm" not in n]


def with_weights(model: torch.nn.Module, named: list[tuple[str, torch.Tensor]]) -> torch.nn.Module:
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, tensor in named:
            params[name].copy_(tensor)
    return model


def forward_check(model: torch.nn.Module, prompt: list[int], gen: Generation, greedy: bool, atol: float = 1e-4) -> float:
    """The engine's logprobs are an HF forward pass's over prompt + generation (within `atol`, fp32); with
    `greedy`, each token is also the forward pass's most likely one (up to `atol`: kernels that differ in
    the last bits may break near-ties either way). Returns the largest logprob difference."""
    ids = torch.tensor([prompt + list(gen.token_ids)])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].float()
    logp = torch.log_softmax(logits, -1)
    expected = logp.gather(-1, torch.tensor(gen.token_ids).unsqueeze(1)).squeeze(1)
    worst = float((torch.tensor(gen.logprobs) - expected).abs().max())
    assert worst <= atol, f"engine logprobs differ from the HF forward by up to {worst:.2e}"
    if greedy:
        assert bool((expected >= logp.max(-1).values - atol).all()), "a greedy token is not the forward pass's argmax"
    return worst


class Learner:
    """The learner's end of weight sync as training drives it: one gloo group per set of engines (built
    once), then one bucketed broadcast per sync. `join(i, ...)` / `receive(i, version)` reach engine i
    (a local engine's coroutine or an actor's ObjectRef)."""

    def __init__(self, num_engines: int, join: Callable[..., Any], bucket_bytes: int = 1 << 16, backend: str = "gloo"):
        self.port = free_port()
        self.bucket_bytes = bucket_bytes
        world = num_engines + 1
        holder: dict = {}
        thread = threading.Thread(
            target=lambda: holder.setdefault("sender", WeightSender("127.0.0.1", self.port, world, backend, timeout_s=120))
        )
        thread.start()
        pending = [join(i, "127.0.0.1", self.port, i + 1, world, backend) for i in range(num_engines)]
        for p in pending:  # actors join concurrently; a local engine's coroutine runs here
            _wait(p)
        thread.join(timeout=120)
        self.sender: WeightSender = holder["sender"]

    def sync(self, named: list[tuple[str, torch.Tensor]], receives: list[Any]) -> list[dict]:
        """Broadcast `named` while every engine receives (`receives`: not yet awaited)."""
        errors: list[BaseException] = []

        def send():
            try:
                self.sender.send(named, self.bucket_bytes)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        thread = threading.Thread(target=send)
        thread.start()
        reports = [_wait(r) for r in receives]
        thread.join(timeout=120)
        assert not errors, errors
        return reports


def _wait(pending: Any) -> Any:
    if asyncio.iscoroutine(pending):
        return asyncio.run(pending)
    import ray

    return ray.get(pending, timeout=300)
