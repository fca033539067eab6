"""A scripted agent for the serving tests whose answers come only from the episode's memory.

Reading, it stores every `subject attribute value .` fact of the chunk. Answering `attribute of subject ?`,
it first queries memory, then boxes the value of the retrieved entry for that subject and attribute, or
`unknown` when the retrieval block has none: an app that dropped, shared or hid memory answers differently.
`scripted_completions(model_dir)` serves it as a vLLM-style completions server for `engine.kind: openai`;
`serve_command(...)` runs `atommem serve` as a user does, in a subprocess of its own (and its own Ray).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import uvicorn
from fastapi import FastAPI, Request

_QUESTION = re.compile(r"Question \d+ of \d+:\n(\w+) of (\w+) \?\n")
_QUERY = re.compile(r"Current query: (.*)\n")
_ENTRY = re.compile(r"^Memory \d+: (\w+) (\w+) (\w+)$", re.M)
_FACT = re.compile(r"\b(\w+ \w+ \w+) \.")


def _retrieved(prompt: str) -> str:
    return prompt.split("Retrieved memory:\n", 1)[1].split("\n\n", 1)[0]


def scripted_reply(prompt: str) -> str:
    """The response to one full-style prompt (see atommem/env/prompts.py)."""
    question = _QUESTION.search(prompt)
    if question is None:
        chunk = prompt.rsplit("Chunk ", 1)[-1]
        return " ".join(f"<add_memory> {fact} </add_memory>" for fact in _FACT.findall(chunk))
    attribute, subject = question.groups()
    values = [v for s, a, v in _ENTRY.findall(_retrieved(prompt)) if (s, a) == (subject, attribute)]
    if not values and _QUERY.search(prompt).group(1) == "(none)":
        return f"<update_query> {subject} {attribute} </update_query>"
    return f"<final_answer> \\boxed{{{values[0] if values else 'unknown'}}} </final_answer>"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def scripted_completions(model_dir) -> Iterator[str]:
    """A /v1/completions server on 127.0.0.1 (token ids in and out, as vLLM's) replying `scripted_reply`'s
    text in `model_dir`'s tokens; yields its base URL."""
    from atommem.models.loading import load_tokenizer

    tok = load_tokenizer(str(model_dir))
    app = FastAPI()

    @app.get("/v1/models")
    async def models():
        return {"data": [{"id": "scripted"}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        prompt = tok.decode((await request.json())["prompt"])
        ids = tok.encode(scripted_reply(prompt), add_special_tokens=False) + [tok.eos_token_id]
        logprobs = {"tokens": [f"token_id:{i}" for i in ids], "token_logprobs": [0.0] * len(ids)}
        return {"choices": [{"index": 0, "text": "", "logprobs": logprobs, "finish_reason": "stop"}]}

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "scripted completions server did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{server.config.port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def serve_command(model_dir, sets: list[str], log: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """`atommem serve --checkpoint model_dir --set ...` on a free port, in its own session (its own local Ray),
    output in `log`; yields (process, base URL) once it says it serves and /healthz answers 200, and kills
    everything it started at the end."""
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "atommem.cli", "serve", "--checkpoint", str(model_dir), "--port", str(port),
           *[arg for s in sets for arg in ("--set", s)]]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env)
    try:
        # Ready = the command says it serves (the replica may answer while serve.run still waits) and /healthz is up.
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200 and "serving " in log.read_text():
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield proc, url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=60)
