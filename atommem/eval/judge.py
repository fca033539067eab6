"""Optional LLM judge over an OpenAI-compatible chat endpoint (`POST {base_url}/chat/completions`).

The prompt and the verdict parsing live here and nowhere else. A verdict is the first word of the
reply: CORRECT or INCORRECT. Anything else, an HTTP error or a timeout is a judge failure: the verdict is
None and it is counted, never silently scored as right or wrong. An empty prediction is INCORRECT without
asking the judge.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass, field

import httpx

from atommem.config import EvalConfig
from atommem.errors import UserError

JUDGE_SYSTEM = (
    "You grade answers to questions. Given a question, the gold answers (any of them is right) and a "
    "predicted answer, reply with exactly one word: CORRECT if the prediction means the same as a gold "
    "answer, INCORRECT otherwise."
)
_VERDICT = re.compile(r"^\W*(CORRECT|INCORRECT)\b", re.IGNORECASE)


def judge_messages(question: str, golds: list[str], prediction: str) -> list[dict]:
    gold = " | ".join(golds) if golds else "(none)"
    user = f"Question: {question}\nGold answers: {gold}\nPredicted answer: {prediction}\nVerdict:"
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def parse_verdict(reply: str) -> bool | None:
    """True for CORRECT, False for INCORRECT, None when the reply starts with neither."""
    m = _VERDICT.match(reply or "")
    if m is None:
        return None
    return m.group(1).upper() == "CORRECT"


@dataclass
class JudgeItem:
    question: str
    golds: list[str]
    prediction: str


@dataclass
class JudgeResult:
    verdicts: list[bool | None]  # per item; None = the judge failed on it
    failures: int = 0
    errors: list[str] = field(default_factory=list)  # one message per failure


class LLMJudge:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_concurrency: int = 8,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise UserError(f"eval.judge_base_url must be an http(s) URL like http://host:8000/v1, got {base_url!r}")
        if not model:
            raise UserError("eval.judge_model must name the judge model served at eval.judge_base_url")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout_s = timeout_s
        self.max_concurrency = max_concurrency

    async def _one(self, client: httpx.AsyncClient, gate: asyncio.Semaphore, item: JudgeItem) -> tuple[bool | None, str]:
        if not item.prediction.strip():
            return False, ""
        body = {"model": self.model, "messages": judge_messages(item.question, item.golds, item.prediction),
                "temperature": 0.0, "max_tokens": 8}
        async with gate:
            try:
                resp = await client.post(self.url, json=body)
                resp.raise_for_status()
                reply = resp.json()["choices"][0]["message"]["content"]
            except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
                return None, f"judge request failed for {item.question!r}: {type(exc).__name__}: {exc}"
        verdict = parse_verdict(reply)
        if verdict is None:
            return None, f"judge reply for {item.question!r} is not CORRECT/INCORRECT: {reply[:80]!r}"
        return verdict, ""

    async def ajudge(self, items: list[JudgeItem]) -> JudgeResult:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        gate = asyncio.Semaphore(self.max_concurrency)
        async with httpx.AsyncClient(timeout=self.timeout_s, headers=headers) as client:
            pairs = await asyncio.gather(*(self._one(client, gate, it) for it in items))
        errors = [e for _, e in pairs if e]
        return JudgeResult(verdicts=[v for v, _ in pairs], failures=len(errors), errors=errors)

    def judge(self, items: list[JudgeItem]) -> JudgeResult:
        return asyncio.run(self.ajudge(items))


def make_judge(cfg: EvalConfig) -> LLMJudge | None:
    """The configured judge, or None when eval.judge_base_url is unset."""
    if cfg.judge_base_url is None:
        return None
    return LLMJudge(cfg.judge_base_url, cfg.judge_model or "", cfg.judge_api_key)
