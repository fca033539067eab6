"""HFEngine throughput on the default tiny model: coalesced batches vs one request at a time.

Prints one JSON object: generated tokens/s for batch sizes 16 and 64 (prompt ~300 tokens, greedy,
fixed max_tokens so every run generates the same count), the unbatched baseline measured in the
same run, and their ratios. Usage: python bench/hf_engine.py [--model DIR] [--prompt 300] [--new 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time

import torch

from atommem.config import ModelConfig, SynthConfig, TinyModelConfig
from atommem.engines.base import SamplingParams
from atommem.engines.hf import HFEngine
from atommem.models.tiny import count_parameters, ensure_model


def run(engine: HFEngine, prompts: list[list[int]], params: SamplingParams, concurrent: bool) -> tuple[float, int]:
    async def go():
        if concurrent:
            return await asyncio.gather(*(engine.generate(p, params) for p in prompts))
        return [await engine.generate(p, params) for p in prompts]

    start = time.perf_counter()
    gens = asyncio.run(go())
    return time.perf_counter() - start, sum(len(g.token_ids) for g in gens)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="HF model dir (default: build the default tiny model in a temp dir)")
    parser.add_argument("--prompt", type=int, default=300, help="prompt tokens")
    parser.add_argument("--new", type=int, default=64, help="generated tokens per request")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    path = args.model or str(ensure_model(ModelConfig(path=tempfile.mkdtemp() + "/tiny", tiny=TinyModelConfig()), SynthConfig()))
    engine = HFEngine(path, max_batch_size=64, batch_wait_ms=5.0, num_threads=args.threads)
    vocab = engine.vocab_size
    g = torch.Generator().manual_seed(0)
    # no stop ids reachable: eos excluded from prompts and max_tokens fixes the generated count
    params = SamplingParams(temperature=0.0, max_tokens=args.new)
    engine.eos_token_id = -1
    prompts = [torch.randint(20, vocab, (args.prompt,), generator=g).tolist() for _ in range(64)]
    run(engine, prompts[:4], params, concurrent=True)  # warm-up
    result = {
        "model": path,
        "parameters": count_parameters(engine.model),
        "prompt_tokens": args.prompt,
        "new_tokens": args.new,
        "torch_threads": torch.get_num_threads(),
    }
    secs, toks = run(engine, prompts[:8], params, concurrent=False)
    result["unbatched_tokens_per_s"] = round(toks / secs, 1)
    for batch in (16, 64):
        secs, toks = run(engine, prompts[:batch], params, concurrent=True)
        result[f"batch{batch}_tokens_per_s"] = round(toks / secs, 1)
        result[f"batch{batch}_seconds"] = round(secs, 2)
        result[f"batch{batch}_speedup_vs_unbatched"] = round(toks / secs / result["unbatched_tokens_per_s"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
