"""Learner forward+backward on one GRPO-sized micro-batch: logits for the responses' tail only vs every position.

The learner left-pads rows and asks the model for the last W+1 positions' logits (`token_logprobs`); the
baseline, measured in the same run, right-pads and takes logits and their log-softmax over every position, then
keeps the response targets. Both give the same response logprobs (checked here). Prints one JSON object.
Usage: python bench/learner_logprobs.py [--config configs/tiny_cpu.yaml] [--rows 60] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from atommem.config import load_config
from atommem.learner.batching import collate, token_logprobs
from atommem.learner.grpo import TurnRow
from atommem.models.tiny import count_parameters, ensure_model


def full_logprobs(model, rows: list[TurnRow]) -> torch.Tensor:
    """The baseline: right-padded rows, logits and log-softmax over every position, response targets summed."""
    length = max(r.num_tokens for r in rows)
    ids = torch.zeros((len(rows), length), dtype=torch.long)
    mask = torch.zeros_like(ids)
    target_mask = torch.zeros((len(rows), length - 1))
    for i, r in enumerate(rows):
        ids[i, : r.num_tokens] = torch.tensor(r.prompt_ids + r.response_ids)
        mask[i, : r.num_tokens] = 1
        target_mask[i, len(r.prompt_ids) - 1 : r.num_tokens - 1] = 1
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
    return (logp * target_mask).sum()


def tail_logprobs(model, rows: list[TurnRow]) -> torch.Tensor:
    mb = collate(rows)
    logp, _ = token_logprobs(model, mb)
    return (logp * mb.response_mask).sum()


def timed(fn, model, rows, repeats: int) -> tuple[float, float]:
    start = time.perf_counter()
    for _ in range(repeats):
        model.zero_grad()
        total = fn(model, rows)
        total.backward()
    return (time.perf_counter() - start) / repeats, float(total.detach())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/tiny_cpu.yaml", help="config whose model.tiny is built")
    parser.add_argument("--rows", type=int, default=60, help="rows per micro-batch (the demo packs ~60 of ~270 tokens)")
    parser.add_argument("--prompt", type=int, default=260, help="longest prompt; prompts span 0.8x to 1x of it")
    parser.add_argument("--response", type=int, default=12, help="longest response; responses span 2 to it")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    cfg.model.path = tempfile.mkdtemp() + "/tiny"
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(ensure_model(cfg.model, cfg.data.synth)), dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size

    def draw(lo: int, hi: int) -> list[int]:
        n = int(torch.randint(lo, hi + 1, (1,), generator=g))
        return torch.randint(5, vocab, (n,), generator=g).tolist()

    rows = []
    for i in range(args.rows):
        prompt, response = draw(int(0.8 * args.prompt), args.prompt), draw(2, args.response)
        rows.append(TurnRow(prompt, response, [0.0] * len(response), 0.0, str(i)))
    timed(tail_logprobs, model, rows[:4], 1)  # warm-up
    full_s, full_sum = timed(full_logprobs, model, rows, args.repeats)
    tail_s, tail_sum = timed(tail_logprobs, model, rows, args.repeats)
    print(json.dumps({
        "config": args.config,
        "parameters": count_parameters(model),
        "rows": args.rows,
        "tokens": sum(r.num_tokens for r in rows),
        "response_tokens": sum(len(r.response_ids) for r in rows),
        "torch_threads": torch.get_num_threads(),
        "full_logits_fwd_bwd_s": round(full_s, 3),
        "tail_logits_fwd_bwd_s": round(tail_s, 3),
        "speedup": round(full_s / tail_s, 2),
        "same_logprob_sum": abs(full_sum - tail_sum) <= 1e-3 * abs(full_sum),
    }))


if __name__ == "__main__":
    main()
