"""`atommem serve` as a user runs it: a subprocess on a free port whose flags and `--set` overrides shape the
served app, answering from each request's memory (the scripted agent of tests/serve_support.py behind a
completions server) and serving until SIGTERM, then exiting 0. Stopping mid-request: tests/test_serve_stop.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from atommem.cli import main as cli_main
from tests.helpers_models import make_tiny_model_dir
from tests.serve_support import free_port, scripted_completions

ROOT = Path(__file__).resolve().parents[1]


def test_serve_without_a_model_is_a_user_error(capsys):
    assert cli_main(["serve"]) == 2
    assert "--checkpoint" in capsys.readouterr().err


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_atommem_serve_answers_from_memory_until_sigterm(tmp_path):
    model = make_tiny_model_dir(tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    with scripted_completions(model) as completions:
        sets = ["cluster.num_cpus=2", "engine.num_cpus=0.5", "engine.kind=openai", f"engine.base_url={completions}",
                "sampling.max_tokens=64", "env.chunk_tokens=64", "serve.max_inflight=3"]
        cmd = [sys.executable, "-m", "atommem.cli", "serve", "--checkpoint", str(model), "--port", str(port),
               *[arg for s in sets for arg in ("--set", s)]]
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            # Ready = the command says it serves (the replica may answer while serve.run still waits) and /healthz is up.
            deadline = time.monotonic() + 240
            while True:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                try:
                    health = httpx.get(f"{url}/healthz", timeout=2)
                    if health.status_code == 200 and "serving " in log.read_text():
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            assert health.json()["max_inflight"] == 3 and health.json()["engine"]["kind"] == "openai"
            for value in ("lima", "owl"):
                body = {"documents": [{"title": "notes", "text": f" zorp city {value} ."}], "questions": ["city of zorp ?"]}
                r = httpx.post(f"{url}/v1/answer", json=body, timeout=120)
                assert r.status_code == 200, r.text
                assert r.json()["answers"] == [{"question": "city of zorp ?", "answer": value}]
            assert proc.poll() is None  # still serving: only a signal ends it
            os.kill(proc.pid, signal.SIGTERM)
            assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
            assert "serve: stopped after the requests in flight" in log.read_text()
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=60)
