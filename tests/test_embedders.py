"""Embedders: deterministic hashing, offline MiniLM, OpenAI-compatible HTTP, async batching."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from atommem.config import ConfigError, EmbedderConfig
from atommem.errors import UserError
from atommem.memory import (
    BatchingEmbedder,
    EmbedderError,
    HashEmbedder,
    MemoryStore,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
    make_embedder,
)

FACTS = ["blix city paris", "zorp city lima", "mork color red", "quux age 12"]


def top1(embedder, query: str, facts=FACTS) -> str:
    s = MemoryStore(dim=embedder.dim)
    for f, v in zip(facts, embedder.embed(facts)):
        s.add(f, v)
    return s.search(embedder.embed([query], query=True)[0], k=1)[0][0].text


def test_hash_embedder_shape_norm_and_retrieval():
    e = HashEmbedder(dim=64)
    v = e.embed(["zorp city lima", "", "ZORP, city! lima"])
    assert v.shape == (3, 64) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v[[0, 2]], axis=1), 1.0, rtol=1e-5)
    assert not v[1].any()  # empty text: zero vector, no NaN
    np.testing.assert_array_equal(v[0], v[2])  # lowercased word tokens
    assert top1(HashEmbedder(256), "zorp city") == "zorp city lima"
    assert top1(HashEmbedder(256), "what is the age of quux ?") == "quux age 12"
    assert e.embed([]).shape == (0, 64)
    clone = pickle.loads(pickle.dumps(e))  # Ray ships embedders to actors
    np.testing.assert_array_equal(clone.embed(["zorp city lima"]), e.embed(["zorp city lima"]))


def test_hash_embedder_is_deterministic_across_processes():
    code = "from atommem.memory import HashEmbedder; print(HashEmbedder(32).embed(['zorp city lima'])[0].tolist())"
    outs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1
    np.testing.assert_allclose(json.loads(outs.pop()), HashEmbedder(32).embed(["zorp city lima"])[0], rtol=1e-6)


@pytest.fixture(scope="module")
def minilm():
    return SentenceTransformerEmbedder()


def test_bundled_minilm_offline_retrieval(minilm):
    assert minilm.dim == 384
    v = minilm.embed(FACTS)
    assert v.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-4)
    facts = ["Paris is the capital of France.", "Lima is the capital of Peru.", "Bananas are yellow fruit."]
    assert top1(minilm, "What is the capital city of Peru?", facts) == "Lima is the capital of Peru."
    assert top1(minilm, "what colour is a banana", facts) == "Bananas are yellow fruit."


def test_sentence_transformer_missing_path_is_user_error(tmp_path):
    with pytest.raises(UserError, match=str(tmp_path / "nope")):
        SentenceTransformerEmbedder(tmp_path / "nope")


class _EmbeddingHandler(BaseHTTPRequestHandler):
    requests: list[dict] = []
    fail_status: int | None = None

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        if type(self).fail_status:
            self.send_response(type(self).fail_status)
            self.end_headers()
            self.wfile.write(b"model overloaded")
            return
        # Embedding = (len(text), 1, count of 'q') so the test can see prefixes; data sent in reverse order.
        data = [
            {"index": i, "embedding": [float(len(t)), 1.0, float(t.count("q"))], "object": "embedding"}
            for i, t in enumerate(body["input"])
        ][::-1]
        payload = json.dumps({"data": data, "model": body["model"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _EmbeddingHandler.requests = []
    _EmbeddingHandler.fail_status = None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _EmbeddingHandler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_openai_embedder_batches_prefixes_queries_only_and_normalises(server):
    e = OpenAIEmbedder(server, "qwen3-emb", api_key="sk-test", query_instruction="qq: ", batch_size=2)
    docs = e.embed(["abc", "abcdefg", "x"])
    reqs = _EmbeddingHandler.requests
    assert [r["body"]["input"] for r in reqs] == [["abc", "abcdefg"], ["x"]]
    assert all(r["path"] == "/v1/embeddings" and r["body"]["model"] == "qwen3-emb" for r in reqs)
    assert reqs[0]["auth"] == "Bearer sk-test"
    expected = np.array([[3, 1, 0], [7, 1, 0], [1, 1, 0]], np.float32)
    np.testing.assert_allclose(docs, expected / np.linalg.norm(expected, axis=1, keepdims=True), rtol=1e-6)
    assert e.dim == 3
    q = e.embed(["abc"], query=True)
    assert reqs[-1]["body"]["input"] == ["qq: abc"]
    raw = np.array([7, 1, 2], np.float32)
    np.testing.assert_allclose(q[0], raw / np.linalg.norm(raw), rtol=1e-6)


def test_openai_embedder_error_status_names_url(server):
    _EmbeddingHandler.fail_status = 503
    e = OpenAIEmbedder(server, "m", dim=3)
    with pytest.raises(EmbedderError, match=r"127\.0\.0\.1.*/v1/embeddings.*HTTP 503.*overloaded"):
        e.embed(["a"])
    assert isinstance(EmbedderError("x"), UserError)


def test_openai_embedder_unreachable_and_bad_url():
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    e = OpenAIEmbedder(f"http://127.0.0.1:{port}/v1", "m", dim=3, timeout_s=2)
    with pytest.raises(EmbedderError, match=f"127.0.0.1:{port}/v1/embeddings unreachable"):
        e.embed(["a"])
    with pytest.raises(UserError, match="base_url"):
        OpenAIEmbedder("localhost:8000", "m")


def test_make_embedder(server):
    assert isinstance(make_embedder(EmbedderConfig(kind="hash", dim=32)), HashEmbedder)
    assert make_embedder(EmbedderConfig(kind="hash", dim=32)).dim == 32
    e = make_embedder(EmbedderConfig(kind="openai", base_url=server, model="m", query_instruction="q"))
    assert isinstance(e, OpenAIEmbedder) and e.dim == 3
    with pytest.raises(ConfigError, match="base_url"):
        make_embedder(EmbedderConfig(kind="openai", model="m"))
    with pytest.raises(UserError, match="not found"):
        make_embedder(EmbedderConfig(kind="sentence_transformers", model_path="/nonexistent/minilm"))
    with pytest.raises(ConfigError, match="kind"):
        make_embedder(EmbedderConfig(kind="bogus"))  # type: ignore[arg-type]


class _CountingEmbedder:
    """Records every underlying call; embedding row = (len(text), query flag)."""

    dim = 2

    def __init__(self, delay_s: float = 0.0, fail: bool = False):
        self.calls: list[tuple[list[str], bool]] = []
        self.delay_s = delay_s
        self.fail = fail

    def embed(self, texts, *, query=False):
        self.calls.append((list(texts), query))
        time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("backend down")
        return np.array([[len(t), float(query)] for t in texts], np.float32)


def test_batching_embedder_coalesces_concurrent_calls():
    inner = _CountingEmbedder(delay_s=0.01)
    b = BatchingEmbedder(inner)

    async def caller(i: int):
        await asyncio.sleep(0.001 * (i % 5))  # callers arrive spread over time, not all at once
        texts = ["x" * (i + j) for j in range(i % 3 + 1)]
        return texts, await b.aembed(texts, query=(i % 7 == 0))

    async def main():
        return await asyncio.gather(*(caller(i) for i in range(50)))

    results = asyncio.run(main())
    for i, (texts, rows) in enumerate(results):
        np.testing.assert_array_equal(rows, [[len(t), float(i % 7 == 0)] for t in texts])
    assert len(inner.calls) <= 10  # 50 callers, two query flags, a few arrival waves
    assert b.num_calls == len(inner.calls)
    assert sum(len(t) for t, _ in inner.calls) == sum(i % 3 + 1 for i in range(50))


def test_batching_embedder_single_wave_is_one_call_per_query_flag():
    inner = _CountingEmbedder()
    b = BatchingEmbedder(inner)

    async def main():
        return await asyncio.gather(*(b.aembed([f"t{i}"], query=i % 2 == 1) for i in range(50)))

    rows = asyncio.run(main())
    assert sorted(q for _, q in inner.calls) == [False, True]
    assert [r.shape for r in rows] == [(1, 2)] * 50
    assert b.dim == 2 and b.embed(["abc"]).tolist() == [[3.0, 0.0]]


def test_batching_embedder_respects_max_batch_and_propagates_errors():
    inner = _CountingEmbedder()
    b = BatchingEmbedder(inner, max_batch_texts=10)

    async def many():
        return await asyncio.gather(*(b.aembed(["a", "b", "c"]) for _ in range(10)))

    asyncio.run(many())
    assert all(len(t) <= 10 for t, _ in inner.calls) and len(inner.calls) == 4

    failing = BatchingEmbedder(_CountingEmbedder(fail=True))

    async def failing_calls():
        return await asyncio.gather(*(failing.aembed(["a"]) for _ in range(3)), return_exceptions=True)

    errs = asyncio.run(failing_calls())
    assert all(isinstance(e, RuntimeError) and "backend down" in str(e) for e in errs)
    assert asyncio.run(failing.aembed([])).shape == (0, 2)
