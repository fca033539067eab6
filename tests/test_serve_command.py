"""`atommem serve` as a user runs it: a subprocess on a free port whose flags and `--set` overrides shape the
served app, answering from each request's memory (the scripted agent of tests/serve_support.py behind a
completions server) and serving until SIGTERM, then exiting 0. Stopping mid-request: tests/test_serve_stop.py."""

from __future__ import annotations

import os
import signal

import httpx
import pytest

from atommem.cli import main as cli_main
from tests.helpers_models import make_tiny_model_dir
from tests.serve_support import scripted_completions, serve_command


def test_serve_without_a_model_is_a_user_error(capsys):
    assert cli_main(["serve"]) == 2
    assert "--checkpoint" in capsys.readouterr().err


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_atommem_serve_answers_from_memory_until_sigterm(tmp_path):
    model = make_tiny_model_dir(tmp_path)
    log = tmp_path / "serve.log"
    with scripted_completions(model) as completions:
        sets = ["cluster.num_cpus=2", "engine.num_cpus=0.5", "engine.kind=openai", f"engine.base_url={completions}",
                "sampling.max_tokens=64", "env.chunk_tokens=64", "serve.max_inflight=3"]
        with serve_command(model, sets, log) as (proc, url):
            health = httpx.get(f"{url}/healthz", timeout=5)
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
