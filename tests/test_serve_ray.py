"""The Ray Serve application over real HTTP on 127.0.0.1 (one replica per app): a tiny random model on the
HF engine, and the scripted agent of tests/serve_support.py behind a vLLM-style completions server."""

import asyncio

import httpx
import pytest

from atommem.config import Config
from tests.helpers_models import make_tiny_model_dir
from tests.serve_support import free_port, scripted_completions

pytestmark = pytest.mark.timeout(300)


def _cfg(max_inflight: int) -> Config:
    cfg = Config()
    cfg.env.chunk_tokens = 48
    cfg.env.chunk_overlap = 0
    cfg.env.max_answer_steps = 2
    cfg.sampling.max_tokens = 6
    cfg.engine.num_cpus = 0.5
    cfg.serve.max_inflight = max_inflight
    cfg.serve.max_document_bytes = 20_000
    return cfg


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def completions_url(model):
    with scripted_completions(model) as url:
        yield url


@pytest.fixture(scope="module")
def served(ray_local, model, completions_url):
    from ray import serve

    from atommem.serve.app import build_app, wait_ready

    scripted = _cfg(16)
    scripted.engine.kind, scripted.engine.base_url = "openai", completions_url
    scripted.sampling.max_tokens = 64
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(_cfg(16), str(model)), name="main", route_prefix="/", blocking=False)
    serve.run(build_app(_cfg(1), str(model)), name="tight", route_prefix="/tight", blocking=False)
    serve.run(build_app(scripted, str(model)), name="scripted", route_prefix="/scripted", blocking=False)
    url = f"http://127.0.0.1:{port}"
    for prefix in ("", "/tight", "/scripted"):
        wait_ready(url + prefix)
    yield url
    serve.shutdown()


DOC = {"title": "notes", "text": " zorp city lima . kabo pet owl . " * 3}


def test_valid_request_over_http(served):
    r = httpx.post(f"{served}/v1/answer", json={"documents": [DOC], "questions": ["city of zorp ?", "pet of kabo ?"]}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [a["question"] for a in body["answers"]] == ["city of zorp ?", "pet of kabo ?"]
    assert body["trace"] and body["trace"][0]["phase"] == "read"
    assert body["usage"]["turns"] == len(body["trace"]) and body["usage"]["prompt_tokens"] > 0


def test_bad_requests_over_http(served):
    ok = {"documents": [DOC], "questions": ["q ?"]}
    assert httpx.post(f"{served}/v1/answer", json={"questions": ["q ?"]}).status_code == 422
    assert httpx.post(f"{served}/v1/answer", json={**ok, "questions": [1]}).status_code == 422
    assert httpx.post(f"{served}/v1/answer", content=b"nope", headers={"content-type": "application/json"}).status_code in (400, 422)
    big = {"documents": [{"title": "t", "text": "x " * 15_000}], "questions": ["q ?"]}
    assert httpx.post(f"{served}/v1/answer", json=big).status_code == 413
    assert httpx.get(f"{served}/nope").status_code == 404
    assert httpx.get(f"{served}/v1/answer").status_code == 405
    spec = httpx.get(f"{served}/openapi.json").json()
    assert {"/v1/answer", "/healthz"} <= set(spec["paths"])
    assert httpx.get(f"{served}/healthz").json()["status"] == "ok"


def _fire(url: str, bodies: list[dict]) -> list[httpx.Response]:
    async def go():
        async with httpx.AsyncClient(timeout=180) as client:
            return await asyncio.gather(*(client.post(f"{url}/v1/answer", json=b) for b in bodies))

    return asyncio.run(go())


def test_eight_concurrent_requests_all_answered(served):
    bodies = [{"documents": [{"title": f"doc {i}", "text": f" p{i} city lima . " * (i + 1)}], "questions": [f"city of p{i} ?"] * (1 + i % 3)}
              for i in range(8)]
    rs = _fire(served, bodies)
    assert [r.status_code for r in rs] == [200] * 8
    for b, r in zip(bodies, rs):
        assert [a["question"] for a in r.json()["answers"]] == b["questions"]


def test_concurrent_requests_keep_their_own_memory(served):
    # The scripted agent stores what it reads and answers only from what memory retrieves; every request
    # states the same keys with its own values, so memory shared or leaked between requests shows up as
    # foreign entries and wrong answers.
    bodies = [{"documents": [{"title": f"doc {i}", "text": f" zorp city c{i} . kabo pet p{i} ."}],
               "questions": ["city of zorp ?", "pet of kabo ?"]} for i in range(8)]
    rs = _fire(served + "/scripted", bodies)
    for i, r in enumerate(rs):
        assert r.status_code == 200, r.text
        assert r.json()["memory"] == [{"id": 1, "text": f"zorp city c{i}"}, {"id": 2, "text": f"kabo pet p{i}"}]
        assert [a["answer"] for a in r.json()["answers"]] == [f"c{i}", f"p{i}"]


def test_overload_gives_503_with_retry_after(served):
    rs = _fire(served + "/tight", [{"documents": [DOC], "questions": ["city of zorp ?"] * 3}] * 6)
    codes = sorted(r.status_code for r in rs)
    assert 200 in codes and 503 in codes, codes
    assert all(r.headers.get("retry-after") == "1" for r in rs if r.status_code == 503)
