"""OpenAIEngine against a fake vLLM-style completions server on 127.0.0.1 (started in a thread)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from atommem.errors import EngineError
from atommem.engines.base import SamplingParams
from atommem.engines.openai import OpenAIEngine

EOS = 1
BODIES: list[dict] = []


def fake_tokens(prompt: list[int], max_tokens: int, stops: set[int]) -> tuple[list[int], str]:
    """Deterministic 'generation': counts up from the prompt's last id, EOS once it reaches 20."""
    out: list[int] = []
    token = prompt[-1]
    while len(out) < max_tokens:
        token = EOS if token >= 20 else token + 1
        out.append(token)
        if token in stops or token == EOS:
            return out, "stop"
    return out, "length"


def build_app() -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    async def models():
        return {"data": [{"id": "tiny"}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        BODIES.append(body)
        mode = body["model"]
        if mode == "broken":
            return JSONResponse({"error": "model exploded"}, status_code=500)
        ids, finish = fake_tokens(body["prompt"], body["max_tokens"], set(body.get("stop_token_ids") or []))
        tokens = [f"token_id:{i}" for i in ids] if body.get("return_tokens_as_token_ids") else [f"t{i}" for i in ids]
        if mode == "plain-openai":  # a server without vLLM's extensions
            tokens = [f"t{i}" for i in ids]
        logprobs = {"tokens": tokens, "token_logprobs": [-0.25 * (k + 1) for k in range(len(ids))]}
        if mode == "no-logprobs":
            logprobs = None
        return {"choices": [{"index": 0, "text": "", "logprobs": logprobs, "finish_reason": finish}]}

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url():
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline:
            raise RuntimeError("fake server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


def run(coro):
    return asyncio.run(coro)


def test_token_ids_logprobs_and_request_fields(server_url):
    engine = OpenAIEngine(server_url, "tiny", api_key="k", timeout=10, weight_version=4)
    gen = run(engine.generate([5, 7, 15], SamplingParams(temperature=0.7, top_p=0.9, max_tokens=10, seed=3)))
    assert gen.token_ids == [16, 17, 18, 19, 20, EOS] and gen.finish_reason == "stop"
    assert gen.logprobs == [-0.25, -0.5, -0.75, -1.0, -1.25, -1.5] and gen.weight_version == 4
    body = BODIES[-1]
    assert body["prompt"] == [5, 7, 15] and body["logprobs"] == 1 and body["max_tokens"] == 10
    assert body["temperature"] == 0.7 and body["top_p"] == 0.9 and body["seed"] == 3
    assert body["return_tokens_as_token_ids"] and body["include_stop_str_in_output"] and not body["skip_special_tokens"]


def test_stop_ids_and_length(server_url):
    engine = OpenAIEngine(server_url, "tiny", timeout=10)
    gen = run(engine.generate([2], SamplingParams(max_tokens=10, stop_token_ids=[5])))
    assert gen.token_ids == [3, 4, 5] and gen.finish_reason == "stop"
    assert BODIES[-1]["stop_token_ids"] == [5]
    gen = run(engine.generate([2], SamplingParams(max_tokens=2)))
    assert gen.token_ids == [3, 4] and gen.finish_reason == "length"


def test_concurrent_requests_and_health(server_url):
    engine = OpenAIEngine(server_url, "tiny", timeout=10)

    async def many():
        gens = await asyncio.gather(*(engine.generate([i], SamplingParams(max_tokens=3)) for i in range(2, 12)))
        return gens, await engine.health()

    gens, health = run(many())
    assert [g.token_ids[0] for g in gens] == list(range(3, 13))
    assert health["ready"] and health["requests"] == 10 and health["generated_tokens"] == 30


def test_servers_without_token_ids_or_logprobs_are_refused(server_url):
    with pytest.raises(EngineError, match="vLLM-compatible"):
        run(OpenAIEngine(server_url, "plain-openai", timeout=10).generate([3], SamplingParams(max_tokens=2)))
    with pytest.raises(EngineError, match="vLLM-compatible"):
        run(OpenAIEngine(server_url, "no-logprobs", timeout=10).generate([3], SamplingParams(max_tokens=2)))


def test_http_errors_name_the_url(server_url):
    with pytest.raises(EngineError, match=r"completions server .*/v1/completions answered 500: .*model exploded"):
        run(OpenAIEngine(server_url, "broken", timeout=10).generate([3], SamplingParams(max_tokens=2)))
    dead = f"http://127.0.0.1:{free_port()}/v1"
    engine = OpenAIEngine(dead, "tiny", timeout=5)
    with pytest.raises(EngineError, match=f"cannot reach the completions server at {dead}/completions"):
        run(engine.generate([3], SamplingParams(max_tokens=2)))
    assert run(engine.health())["ready"] is False
    with pytest.raises(EngineError, match="owns its weights"):
        run(engine.init_weight_sync("127.0.0.1", free_port(), rank=1, world_size=2, backend="gloo"))
    with pytest.raises(EngineError, match="owns its weights"):
        run(engine.receive_weights(version=1))
