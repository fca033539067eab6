"""The FastAPI app in-process (httpx ASGI transport) with a scripted engine: schema, errors, isolation, overload."""

import asyncio

import httpx
import pytest

from atommem.config import Config
from atommem.errors import EngineError
from atommem.engines.base import Generation
from atommem.serve.app import AnswerService, create_app
from tests.env_support import build_tokenizer
from tests.serve_support import scripted_reply

DOC = {"title": "notes", "text": "zorp city lima . kabo pet owl ."}


class ScriptedEngine:
    """`scripted_reply` as an engine: stores the chunk's facts, answers with the value memory retrieves."""

    def __init__(self, tokenizer, gate: asyncio.Event | None = None, fail: Exception | None = None):
        self.tok, self.gate, self.fail, self.calls = tokenizer, gate, fail, 0
        self.prompts: list[str] = []

    async def generate(self, prompt_ids, params):
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0)
        prompt = self.tok.decode(prompt_ids)
        self.prompts.append(prompt)
        ids = list(self.tok.encode(scripted_reply(prompt), add_special_tokens=False)) + [self.tok.eos_token_id]
        return Generation(ids, [0.0] * len(ids), "stop", 0)

    async def health(self):
        return {"ready": True, "kind": "scripted"}


def _cfg(**serve):
    cfg = Config()
    cfg.env.chunk_tokens = 64
    cfg.env.chunk_overlap = 0
    cfg.sampling.max_tokens = 32
    cfg.serve.max_document_bytes = 10_000
    for k, v in serve.items():
        setattr(cfg.serve, k, v)
    return cfg


def _client(engine=None, **serve):
    tok = build_tokenizer()
    service = AnswerService(_cfg(**serve), engine or ScriptedEngine(tok), tok)
    app = create_app(service)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test"), service


def run(coro):
    return asyncio.run(coro)


def test_answer_in_question_order_with_trace_and_memory():
    async def go():
        client, _ = _client()
        async with client:
            r = await client.post("/v1/answer", json={"documents": [DOC], "questions": ["city of zorp ?", "pet of kabo ?"]})
        return r

    r = run(go())
    assert r.status_code == 200, r.text
    body = r.json()
    assert [a["question"] for a in body["answers"]] == ["city of zorp ?", "pet of kabo ?"]
    # the values exist only in the document: the engine finds them in the retrieval block of the episode's memory
    assert [a["answer"] for a in body["answers"]] == ["lima", "owl"]
    assert body["memory"] == [{"id": 1, "text": "zorp city lima"}, {"id": 2, "text": "kabo pet owl"}]
    assert [t["phase"] for t in body["trace"]] == ["read"] + ["answer"] * 4
    assert body["trace"][0]["actions"] == [{"kind": "create", "text": "<add_memory> zorp city lima </add_memory>"},
                                           {"kind": "create", "text": "<add_memory> kabo pet owl </add_memory>"}]
    assert body["trace"][1]["actions"] == [{"kind": "read", "text": "<update_query> zorp city </update_query>"}]
    assert body["usage"]["turns"] == len(body["trace"]) and body["usage"]["completion_tokens"] > 0


def test_document_text_reaches_the_model_as_sent():
    # Leading spaces are part of how the first word tokenizes (" zorp" is one token of the tiny tokenizer).
    async def go():
        client, service = _client()
        async with client:
            r = await client.post("/v1/answer", json={"documents": [{"title": "notes", "text": " zorp city lima ."}],
                                                      "questions": ["city of zorp ?"]})
        return r, service.engine.prompts

    r, prompts = run(go())
    assert r.status_code == 200, r.text
    assert "notes\n zorp city lima ." in prompts[0]


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"questions": ["q ?"]}, "documents"),
        ({"documents": [DOC]}, "questions"),
        ({"documents": [], "questions": ["q ?"]}, "documents"),
        ({"documents": [DOC], "questions": []}, "questions"),
        ({"documents": [DOC], "questions": ["   "]}, "questions"),
        ({"documents": [{"title": "t"}], "questions": ["q ?"]}, "text"),
        ({"documents": [{"title": "t", "text": ""}], "questions": ["q ?"]}, "text"),
        ({"documents": [{"title": "t", "text": " \n "}], "questions": ["q ?"]}, "text"),
        ({"documents": "text", "questions": ["q ?"]}, "documents"),
        ({"documents": [DOC], "questions": [3]}, "questions"),
        ({"documents": [DOC], "questions": ["q ?"], "options": {"temperature": "hot"}}, "temperature"),
        ({"documents": [DOC], "questions": ["q ?"], "options": {"max_turns": 0}}, "max_turns"),
        ({"documents": [DOC], "questions": ["q ?"], "options": {"top_k": -1}}, "top_k"),
        ({"documents": [DOC], "questions": ["q ?"], "extra": 1}, "extra"),
        ({"documents": [DOC], "questions": ["q ?"] * 40}, "questions"),
    ],
)
def test_bad_fields_are_422_naming_the_field_and_never_reach_the_engine(payload, field):
    async def go():
        client, service = _client()
        async with client:
            r = await client.post("/v1/answer", json=payload)
        return r, service.engine.calls

    r, calls = run(go())
    assert r.status_code == 422, r.text
    assert any(field in [str(x) for x in e["loc"]] for e in r.json()["detail"]), r.json()
    assert calls == 0


def test_non_json_oversize_unknown_route_and_wrong_method():
    async def go():
        client, service = _client()
        async with client:
            bad_json = await client.post("/v1/answer", content=b"{not json", headers={"content-type": "application/json"})
            big = {"documents": [{"title": "t", "text": "x " * 6000}], "questions": ["q ?"]}
            too_big = await client.post("/v1/answer", json=big)
            huge = await client.post("/v1/answer", content=b"x" * 100_000, headers={"content-type": "application/json"})
            missing = await client.get("/v2/nothing")
            wrong = await client.get("/v1/answer")
        return bad_json, too_big, huge, missing, wrong, service.engine.calls

    bad_json, too_big, huge, missing, wrong, calls = run(go())
    assert bad_json.status_code in (400, 422)
    assert too_big.status_code == 413 and "limit" in too_big.json()["detail"]
    assert huge.status_code == 413
    assert missing.status_code == 404
    assert wrong.status_code == 405
    assert calls == 0


def test_engine_failure_is_503_with_message():
    async def go(exc):
        tok = build_tokenizer()
        client, _ = _client(ScriptedEngine(tok, fail=exc))
        async with client:
            return await client.post("/v1/answer", json={"documents": [DOC], "questions": ["q ?"]})

    for exc in (EngineError("model server down"), RuntimeError("CUDA out of memory")):
        r = run(go(exc))
        assert r.status_code == 503 and str(exc) in r.json()["detail"]


def test_concurrent_requests_have_isolated_memory():
    # Every request states the same key with its own value: a memory shared or leaked between requests
    # would show another request's entry, and its answer would come from the wrong fact.
    async def go():
        client, _ = _client()
        async with client:
            docs = [{"title": "t", "text": f"zorp city c{i} ."} for i in range(8)]
            return await asyncio.gather(
                *(client.post("/v1/answer", json={"documents": [d], "questions": ["city of zorp ?"]}) for d in docs)
            )

    rs = run(go())
    assert all(r.status_code == 200 for r in rs)
    for i, r in enumerate(rs):
        assert r.json()["memory"] == [{"id": 1, "text": f"zorp city c{i}"}]
        assert r.json()["answers"] == [{"question": "city of zorp ?", "answer": f"c{i}"}]


def test_overload_is_503_with_retry_after_and_recovers():
    async def go():
        tok = build_tokenizer()
        gate = asyncio.Event()
        client, service = _client(ScriptedEngine(tok, gate=gate), max_inflight=1)
        async with client:
            body = {"documents": [DOC], "questions": ["city of zorp ?"]}
            first = asyncio.create_task(client.post("/v1/answer", json=body))
            while service.in_flight == 0:
                await asyncio.sleep(0.01)
            rejected = await asyncio.gather(*(client.post("/v1/answer", json=body) for _ in range(3)))
            gate.set()
            ok = await first
            after = await client.post("/v1/answer", json=body)
        return rejected, ok, after

    rejected, ok, after = run(go())
    assert all(r.status_code == 503 and r.headers["retry-after"] == "1" for r in rejected)
    assert ok.status_code == 200 and after.status_code == 200


def test_healthz_index_and_openapi():
    async def go():
        client, _ = _client()
        async with client:
            return await client.get("/healthz"), await client.get("/"), await client.get("/openapi.json")

    health, index, spec = run(go())
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert index.status_code == 200 and "/v1/answer" in index.text
    paths = spec.json()["paths"]
    assert {"/v1/answer", "/healthz"} <= set(paths)
    schemas = spec.json()["components"]["schemas"]
    assert {"documents", "questions", "options"} <= set(schemas["AnswerRequest"]["properties"])
    assert {"answers", "memory", "scratchpad", "trace", "usage"} <= set(schemas["AnswerResponse"]["properties"])
    assert {"turn", "phase", "response", "actions", "errors"} <= set(schemas["TraceTurn"]["properties"])
