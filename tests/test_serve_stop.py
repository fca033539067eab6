"""`atommem serve` on SIGTERM (what `ray job stop` and Kubernetes send): the request in flight is answered,
then the process exits 0 (Ray's own handler used to abort the driver: "Aborted", status -6)."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest

from tests.helpers_models import make_tiny_model_dir
from tests.serve_support import serve_command

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def test_sigterm_answers_the_request_in_flight_then_exits_0(tmp_path):
    model = make_tiny_model_dir(tmp_path)
    log = tmp_path / "serve.log"
    sets = ["cluster.num_cpus=2", "engine.num_cpus=0.5", "sampling.max_tokens=8", "env.chunk_tokens=16",
            "env.chunk_overlap=0", "engine.max_batch_size=1"]
    with serve_command(model, sets, log) as (proc, url):
        answered: dict = {}
        # many chunks: dozens of engine calls, so the request is still in flight when the signal lands
        body = {"documents": [{"title": f"d{i}", "text": f" p{i} city lima . " * 4} for i in range(12)],
                "questions": ["city of p3 ?"]}
        client = threading.Thread(target=lambda: answered.update(
            r=httpx.post(f"{url}/v1/answer", json=body, timeout=180)))
        client.start()
        while httpx.get(f"{url}/healthz", timeout=5).json()["in_flight"] < 1:
            assert client.is_alive(), "the request finished before it could be seen in flight"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGTERM)
        client.join(timeout=180)
        assert answered["r"].status_code == 200, answered["r"].text
        assert [a["question"] for a in answered["r"].json()["answers"]] == ["city of p3 ?"]
        assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
        text = log.read_text()
        assert "SIGTERM received" in text and "serve: stopped after the requests in flight" in text
        assert "Aborted" not in text
