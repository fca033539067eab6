"""`OpenAIEngine`: token-in / token-out generation from an OpenAI-compatible `/v1/completions` server.

The prompt is sent as a list of token ids and the response must come back as token ids with their
logprobs. Plain OpenAI servers cannot do that; vLLM can, through its extensions
`return_tokens_as_token_ids` (tokens come back as "token_id:123"), `stop_token_ids`,
`include_stop_str_in_output` and `skip_special_tokens`. vLLM's logprobs are raw (before temperature
and top-p) by default, the definition the learner uses. The engine cannot receive weights: the
server owns them, so its `weight_version` is whatever the caller says it serves.
"""

from __future__ import annotations

import re

import httpx

from atommem.errors import EngineError
from atommem.engines.base import Generation, SamplingParams

_TOKEN_ID = re.compile(r"token_id:(-?\d+)")


class OpenAIEngine:
    """An `Engine` over HTTP; one pooled `httpx.AsyncClient` per event loop."""

    def __init__(
        self, base_url: str, model: str, api_key: str | None = None, timeout: float = 600.0, weight_version: int = 0
    ):
        if not base_url:
            raise EngineError("OpenAIEngine needs a base_url such as http://host:8000/v1")
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/completions"
        self.model = model
        self.timeout = timeout
        self.weight_version = weight_version
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client: httpx.AsyncClient | None = None
        self._client_loop = None
        self.stats = {"requests": 0, "generated_tokens": 0, "errors": 0}

    def _http(self) -> httpx.AsyncClient:
        import asyncio

        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = httpx.AsyncClient(timeout=self.timeout, headers=self._headers)
            self._client_loop = loop
        return self._client

    def request_body(self, prompt_ids: list[int], params: SamplingParams) -> dict:
        body = {
            "model": self.model,
            "prompt": list(prompt_ids),
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "logprobs": 1,
            "echo": False,
            "stop_token_ids": list(params.stop_token_ids),
            "include_stop_str_in_output": True,
            "return_tokens_as_token_ids": True,
            "skip_special_tokens": False,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        return body

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        if not prompt_ids:
            raise EngineError("generate needs a non-empty prompt")
        try:
            response = await self._http().post(self.url, json=self.request_body(prompt_ids, params))
        except httpx.HTTPError as exc:
            self.stats["errors"] += 1
            raise EngineError(f"cannot reach the completions server at {self.url}: {type(exc).__name__}: {exc}") from None
        if response.status_code // 100 != 2:
            self.stats["errors"] += 1
            raise EngineError(f"completions server {self.url} answered {response.status_code}: {response.text[:500]}")
        gen = self.parse_response(response)
        self.stats["requests"] += 1
        self.stats["generated_tokens"] += len(gen.token_ids)
        return gen

    def parse_response(self, response: httpx.Response) -> Generation:
        try:
            choice = response.json()["choices"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            raise EngineError(f"completions server {self.url} sent no choices: {response.text[:300]}") from None
        logprobs = choice.get("logprobs") or {}
        tokens, values = logprobs.get("tokens"), logprobs.get("token_logprobs")
        if tokens is None or values is None:
            raise EngineError(
                f"completions server {self.url} returned no per-token logprobs; training needs a vLLM-compatible "
                "server (vllm serve) that honours logprobs=1"
            )
        ids = []
        for token in tokens:
            match = _TOKEN_ID.fullmatch(token) if isinstance(token, str) else None
            if match is None:
                raise EngineError(
                    f"completions server {self.url} returned token text {token!r} instead of 'token_id:N'; "
                    "token-in/token-out needs a vLLM-compatible server (return_tokens_as_token_ids)"
                )
            ids.append(int(match.group(1)))
        if len(values) != len(ids) or any(v is None for v in values):
            raise EngineError(f"completions server {self.url} returned {len(values)} logprobs for {len(ids)} tokens")
        finish = choice.get("finish_reason")
        if finish not in ("stop", "length"):
            raise EngineError(f"completions server {self.url} finished with {finish!r} (expected 'stop' or 'length')")
        return Generation(
            token_ids=ids,
            logprobs=[float(v) for v in values],
            finish_reason=finish,
            weight_version=self.weight_version,
            text=choice.get("text"),
        )

    def _owns_its_weights(self) -> EngineError:
        return EngineError(
            f"the OpenAI-compatible server at {self.base_url} owns its weights; use engine.kind=vllm to train with weight sync"
        )

    async def init_weight_sync(self, master_addr: str, master_port: int, rank: int, world_size: int, backend: str = "gloo") -> None:
        raise self._owns_its_weights()

    async def receive_weights(self, version: int) -> dict:
        raise self._owns_its_weights()

    async def health(self) -> dict:
        try:
            response = await self._http().get(f"{self.base_url}/models")
            ready = response.status_code // 100 == 2
        except httpx.HTTPError:
            ready = False
        return {"kind": "openai", "ready": ready, "url": self.base_url, "weight_version": self.weight_version, **self.stats}

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
