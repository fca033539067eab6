"""`atommem serve` on SIGTERM (what `ray job stop` and Kubernetes send): the request in flight is answered,
then the process exits 0 (Ray's own handler used to abort the driver: "Aborted", status -6)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from helpers_models import make_tiny_model_dir

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_answers_the_request_in_flight_then_exits_0(tmp_path):
    model = make_tiny_model_dir(tmp_path)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "atommem.cli", "serve", "--checkpoint", str(model), "--port", str(port),
           "--set", "cluster.num_cpus=2", "--set", "engine.num_cpus=0.5", "--set", "sampling.max_tokens=8",
           "--set", "env.chunk_tokens=16", "--set", "env.chunk_overlap=0", "--set", "engine.max_batch_size=1"]
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
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
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=60)
