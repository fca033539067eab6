"""Serving: answer questions over long documents with a trained agent (Ray Serve + FastAPI ingress).

`POST /v1/answer` plays one MemoryEnv episode per request (its own memory: requests never share one) with
the model policy and returns the answers in question order, the final memory, the turn-by-turn trace and
token usage. All requests of a replica share one engine, whose async batching puts concurrent requests'
generations into the same forward passes. `GET /healthz`, `GET /` (a static page), `/openapi.json`.

Bad input never reaches the model: wrong or missing fields -> 422 naming the field, non-JSON -> 422,
documents over `serve.max_document_bytes` -> 413, more than `serve.max_inflight` requests at once ->
503 with Retry-After, engine failures -> 503 with the reason; nothing a client sends gives a 500.
`AnswerService` + `create_app` are plain asyncio/FastAPI (tested in-process); `build_app` wraps them in a
Ray Serve deployment.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Optional

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from atommem.actions import action_kind, parse_actions, render_action
from atommem.config import Config, from_dict, to_dict
from atommem.data.schema import Document, Question, Sample

logger = logging.getLogger("atommem.serve")
STATIC = Path(__file__).parent / "static"
RETRY_AFTER_S = 1
NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must contain non-whitespace text")
    return text


# Document text is checked but kept as sent: stripping it would change how its first word tokenizes.
DocumentText = Annotated[str, AfterValidator(_not_blank)]


# ----------------------------------------------------------------------------- API schema
class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field("", description="document title (may be empty)")
    text: DocumentText = Field(description="document text (kept as sent, leading spaces included)")


class AnswerOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: Optional[float] = Field(None, ge=0.0, le=2.0, description="sampling temperature; default greedy")
    max_turns: Optional[int] = Field(None, ge=1, le=10_000, description="stop the episode after this many turns")
    top_k: Optional[int] = Field(None, ge=1, le=100, description="memory entries retrieved per query")


class AnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    documents: list[DocumentIn] = Field(min_length=1, description="the long context, read chunk by chunk")
    questions: list[NonEmpty] = Field(min_length=1, description="questions, answered in order")
    options: AnswerOptions = Field(default_factory=AnswerOptions)


class AnswerOut(BaseModel):
    question: str
    answer: str = Field(description='the boxed final answer; "" when the agent gave none')


class MemoryOut(BaseModel):
    id: int
    text: str


class ActionOut(BaseModel):
    kind: str = Field(description="read | create | update | delete | scratchpad | answer")
    text: str = Field(description="the action in canonical tag form")


class TraceTurn(BaseModel):
    turn: int
    phase: str = Field(description="read | answer")
    response: str = Field(description="the model's raw response")
    actions: list[ActionOut]
    errors: list[str] = Field(description="actions that had no effect, and why")


class Usage(BaseModel):
    turns: int
    prompt_tokens: int
    completion_tokens: int


class AnswerResponse(BaseModel):
    answers: list[AnswerOut]
    memory: list[MemoryOut]
    scratchpad: str
    trace: list[TraceTurn]
    usage: Usage


class Health(BaseModel):
    status: str
    in_flight: int
    max_inflight: int
    engine: dict


class Overloaded(Exception):
    pass


class EngineUnavailable(Exception):
    pass


# ----------------------------------------------------------------------------- the service
class AnswerService:
    """Plays one episode per request against a shared engine; bounds requests in flight."""

    def __init__(self, cfg: Config, engine: Any, tokenizer: Any, embedder: Any = None):
        from atommem.memory.embedders import BatchingEmbedder, make_embedder

        self.cfg = cfg
        self.engine = engine
        self.tokenizer = tokenizer
        self.embedder = embedder if embedder is not None else make_embedder(cfg.embedder)
        self._batching: Any = None  # created on the serving event loop
        self._batching_cls = BatchingEmbedder
        self.in_flight = 0
        self.served = 0

    @classmethod
    def from_checkpoint(cls, cfg: Config, checkpoint: str) -> "AnswerService":
        from atommem.engines.actor import make_engine
        from atommem.models.loading import load_tokenizer

        return cls(cfg, make_engine(cfg.engine, checkpoint, seed=cfg.trainer.seed, dtype=cfg.model.dtype), load_tokenizer(checkpoint))

    def document_bytes(self, req: AnswerRequest) -> int:
        return sum(len(d.title.encode()) + len(d.text.encode()) for d in req.documents)

    async def health(self) -> dict:
        return await self.engine.health()

    async def answer(self, req: AnswerRequest) -> AnswerResponse:
        if self.in_flight >= self.cfg.serve.max_inflight:
            raise Overloaded()
        self.in_flight += 1
        try:
            return await self._play(req)
        finally:
            self.in_flight -= 1
            self.served += 1

    async def _play(self, req: AnswerRequest) -> AnswerResponse:
        from atommem.errors import EngineError
        from atommem.env.episode import play_episode
        from atommem.env.memory_env import MemoryEnv
        from atommem.policies.model import ModelPolicy
        from atommem.rollout.env_runner import sampling_params

        cfg, opts = self.cfg, req.options
        if self._batching is None:
            self._batching = self._batching_cls(self.embedder, max_batch_texts=max(cfg.embedder.batch_size, 1))
        memory_cfg = replace(cfg.memory, top_k=opts.top_k) if opts.top_k is not None else cfg.memory
        temperature = opts.temperature if opts.temperature is not None else cfg.sampling.eval_temperature
        policy = ModelPolicy(self.engine, self.tokenizer, sampling_params(cfg, self.tokenizer, temperature))
        sample = Sample(
            id=f"request-{uuid.uuid4().hex[:12]}",
            source="request",
            documents=[Document(d.title, d.text) for d in req.documents],
            questions=[Question(q, []) for q in req.questions],
        )
        env = MemoryEnv(cfg.env, memory_cfg, self.embedder, tokenizer=self.tokenizer)
        env.reset(options={"sample": sample})
        try:
            played = await play_episode(env, policy, embedder=self._batching, max_turns=opts.max_turns)
        except EngineError as exc:
            raise EngineUnavailable(str(exc)) from exc
        trace = [
            TraceTurn(
                turn=i,
                phase=turn.phase,
                response=turn.response_text,
                actions=[ActionOut(kind=action_kind(a), text=render_action(a))
                         for a in parse_actions(turn.response_text, strict=cfg.env.strict_format).actions],
                errors=list(info["errors"]),
            )
            for i, (turn, info) in enumerate(zip(played.turns, played.infos))
        ]
        prompt_tokens = sum(len(t.prompt_ids) for t in played.turns)
        completion_tokens = sum(len(t.response_ids) for t in played.turns)
        res = played.result
        return AnswerResponse(
            answers=[AnswerOut(question=q, answer=a) for q, a in zip(req.questions, res.answers)],
            memory=[MemoryOut(id=e.id, text=e.text) for e in res.memory],
            scratchpad=res.scratchpad,
            trace=trace,
            usage=Usage(turns=len(trace), prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
        )


# ----------------------------------------------------------------------------- the HTTP app
def _field_error(field: str, msg: str, kind: str) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": [{"loc": ["body", field], "msg": msg, "type": kind}]})


def create_app(service: AnswerService) -> FastAPI:
    """The FastAPI app over `service` (used in-process by tests and inside the Ray Serve replica)."""
    serve_cfg = service.cfg.serve
    app = FastAPI(
        title="AtomMem",
        version="0.1",
        description="Answer questions over long documents with an agent that manages its own memory.",
    )
    index_html = (STATIC / "index.html").read_text()
    # a body this much over the document limit cannot be a valid request: refuse it before parsing
    body_limit = 2 * serve_cfg.max_document_bytes + 65536

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > body_limit:
            return JSONResponse(status_code=413, content={"detail": f"request body over {body_limit} bytes"})
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": errors})

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        return JSONResponse(
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
            content={"detail": f"server busy: {serve_cfg.max_inflight} requests in flight; retry after {RETRY_AFTER_S}s"},
        )

    @app.exception_handler(EngineUnavailable)
    async def engine_down(request: Request, exc: EngineUnavailable) -> JSONResponse:
        return JSONResponse(status_code=503, headers={"Retry-After": "5"}, content={"detail": f"engine unavailable: {exc}"})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(index_html)

    @app.get("/healthz", response_model=Health, responses={503: {"description": "engine not ready"}})
    async def healthz() -> Any:
        try:
            engine = await service.health()
        except Exception as exc:  # any failure to answer a health probe means "not ready", with the reason
            logger.warning("health check failed: %s", exc)
            return JSONResponse(status_code=503, content={"detail": f"engine not ready: {exc}"})
        status = 200 if engine.get("ready", True) else 503
        body = Health(status="ok" if status == 200 else "not ready", in_flight=service.in_flight,
                      max_inflight=serve_cfg.max_inflight, engine=engine)
        return JSONResponse(status_code=status, content=body.model_dump())

    @app.post(
        "/v1/answer",
        response_model=AnswerResponse,
        responses={413: {"description": "documents too large"}, 422: {"description": "invalid request field"},
                   503: {"description": "overloaded (Retry-After) or engine unavailable"}},
    )
    async def answer(req: AnswerRequest) -> Any:
        if len(req.questions) > serve_cfg.max_questions:
            return _field_error("questions", f"at most {serve_cfg.max_questions} questions per request", "too_long")
        size = service.document_bytes(req)
        if size > serve_cfg.max_document_bytes:
            raise HTTPException(413, f"documents are {size} bytes; the limit is {serve_cfg.max_document_bytes}")
        try:
            return await service.answer(req)
        except (Overloaded, EngineUnavailable):
            raise
        except Exception as exc:  # the episode failed inside the engine stack: 503 with the reason, logged
            logger.exception("answer failed")
            raise EngineUnavailable(f"{type(exc).__name__}: {exc}") from exc

    return app


# ----------------------------------------------------------------------------- Ray Serve
class AtomMemIngress:
    """Ray Serve replica body: one engine + service per replica, the FastAPI app built on the replica."""

    def __init__(self, cfg_dict: dict, checkpoint: str):
        self.service = AnswerService.from_checkpoint(from_dict(Config, cfg_dict), checkpoint)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self.service)


def build_app(cfg: Config, checkpoint: str):
    """The Ray Serve application (bind it with `serve.run(build_app(cfg, ckpt))`)."""
    from ray import serve

    from atommem.models.loading import load_tokenizer

    load_tokenizer(checkpoint)  # fail here, with a clear message, rather than in a replica
    ingress = serve.ingress()(AtomMemIngress)
    deployment = serve.deployment(
        ingress,
        name="atommem",
        num_replicas=cfg.serve.num_replicas,
        # let the app see the overload itself (503 + Retry-After) instead of Serve queueing silently
        max_ongoing_requests=2 * cfg.serve.max_inflight + 4,
        graceful_shutdown_timeout_s=cfg.serve.drain_timeout_s,  # `atommem serve` on SIGTERM: requests in flight finish
        ray_actor_options={"num_cpus": cfg.engine.num_cpus, "num_gpus": cfg.engine.num_gpus},
    )
    return deployment.bind(to_dict(cfg), str(checkpoint))


def wait_ready(url: str, timeout_s: float = 120.0) -> None:
    """Poll `{url}/healthz` until it answers 200."""
    import httpx

    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url}/healthz", timeout=5.0)
            if r.status_code == 200:
                return
            last = f"{r.status_code} {r.text[:200]}"
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise TimeoutError(f"{url}/healthz not ready after {timeout_s}s: {last}")
