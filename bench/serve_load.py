"""Serving load: how many concurrent /v1/answer requests the CPU Ray Serve app holds, and at what latency.

Starts local Ray + Serve with a tiny random model (max_inflight 16), fires N requests at once for
N in 1, 4, 8, 16 and 32 (32 > max_inflight: the extra ones must get 503 + Retry-After), and prints one
JSON object: per level p50/p95 latency, requests/s, status counts, and the throughput ratio vs N=1.
    python bench/serve_load.py
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import tempfile
import time

import httpx


def main() -> None:
    import ray
    from ray import serve

    from atommem.config import Config, SynthConfig, TinyModelConfig
    from atommem.data.synthetic import synthetic_vocabulary
    from atommem.models.tiny import build_tiny_model, synthetic_corpus
    from atommem.serve.app import build_app, wait_ready

    synth = SynthConfig(name_vocab=60)
    model = build_tiny_model(TinyModelConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, vocab_size=1000),
                             tempfile.mkdtemp(prefix="serve-bench-"), synthetic_corpus(synth, episodes=16), synthetic_vocabulary(synth))
    cfg = Config()
    cfg.env.chunk_tokens, cfg.env.chunk_overlap, cfg.env.max_answer_steps = 64, 0, 2
    cfg.sampling.max_tokens = 16
    cfg.serve.max_inflight = 16
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(cfg, str(model)), name="bench", route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url)
    body = {"documents": [{"title": "notes", "text": " zorp city lima . kabo pet owl . " * 8}], "questions": ["city of zorp ?", "pet of kabo ?"]}

    async def fire(n: int) -> dict:
        async with httpx.AsyncClient(timeout=600) as client:
            async def one():
                t = time.perf_counter()
                r = await client.post(f"{url}/v1/answer", json=body)
                return r.status_code, time.perf_counter() - t, r.json().get("usage", {}).get("turns", 0) if r.status_code == 200 else 0
            start = time.perf_counter()
            res = await asyncio.gather(*(one() for _ in range(n)))
            wall = time.perf_counter() - start
        ok = sorted(lat for code, lat, _ in res if code == 200)
        return {
            "concurrent": n,
            "status": {str(c): sum(1 for code, _, _ in res if code == c) for c in sorted({c for c, _, _ in res})},
            "p50_s": round(statistics.median(ok), 3) if ok else None,
            "p95_s": round(ok[min(len(ok) - 1, int(0.95 * len(ok)))], 3) if ok else None,
            "ok_per_s": round(len(ok) / wall, 3),
            "turns_per_request": res[0][2],
        }

    asyncio.run(fire(2))  # warm-up
    levels = [asyncio.run(fire(n)) for n in (1, 4, 8, 16, 32)]
    base = levels[0]["ok_per_s"]
    for lv in levels:
        lv["throughput_vs_1"] = round(lv["ok_per_s"] / base, 2)
    serve.shutdown()
    ray.shutdown()
    print(json.dumps({"bench": "serve_load", "max_inflight": cfg.serve.max_inflight, "levels": levels}))


if __name__ == "__main__":
    main()
