"""Weight sync: bucketed flat broadcasts vs one broadcast per tensor, over gloo (or NCCL) between two processes.

A Llama built from config (default hidden 1024, 8 layers, fp32, ~0.4 GB) lives in a sender process
and a receiver process (torch.multiprocessing, no Ray). Both modes use the same WeightSender /
WeightReceiver group and send metadata once per sync; only the bucket size differs
(`--bucket-mb` vs 0 = per tensor). Each mode runs `--repeats` times after a warm-up and the best
time is kept; the receiver checks every tensor arrived bit-exact.

Usage: python bench/weight_sync.py [--hidden 1024 --layers 8 --vocab 8192 --bucket-mb 64 --repeats 2] [--backend nccl]
`--backend nccl` puts the sender on GPU 0 and the receiver on GPU 1: NCCL refuses two ranks on one GPU
("Duplicate GPU detected"), so it needs two GPUs.
A second, latency-bound model (hidden 128, 64 layers: ~580 small tensors) shows where bucketing pays
on its own; on the large model the broadcast is bandwidth-bound, its big tensors travel unpacked
(see plan_buckets) and the two modes should tie.
Prints one JSON object: per model, seconds per mode, speed-up ratio, GB/s, model bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.multiprocessing as mp

from atommem.weight_sync.base import free_port
from atommem.weight_sync.process_group import WeightReceiver, WeightSender


def build_state(args) -> dict[str, torch.Tensor]:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=2 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=max(1, args.hidden // 64),
        num_key_value_heads=max(1, args.hidden // 64),
        tie_word_embeddings=False,
    )
    return {n: t.detach().contiguous() for n, t in LlamaForCausalLM(cfg).state_dict().items()}


def schedule(args) -> list[tuple[str, int]]:
    bucket = int(args.bucket_mb * 2**20)
    modes = [("warmup", bucket)]
    for _ in range(args.repeats):
        modes += [("bucketed", bucket), ("per_tensor", 0)]
    return modes


def device(args, rank: int) -> torch.device:
    if args.backend == "nccl":
        torch.cuda.set_device(rank)
        return torch.device("cuda", rank)
    return torch.device("cpu")


def receiver(port: int, args, queue) -> None:
    torch.set_num_threads(1)
    on = device(args, 1)
    expected = {n: t.to(on) for n, t in build_state(args).items()}
    rx = WeightReceiver("127.0.0.1", port, 1, 2, args.backend, timeout_s=600)
    for _mode, _ in schedule(args):
        mismatched = [n for n, t in rx.receive() if not torch.equal(t, expected[n])]
        queue.put(mismatched)


def run(args) -> dict:
    port = free_port()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=receiver, args=(port, args, queue))
    proc.start()
    on = device(args, 0)
    state = {n: t.to(on) for n, t in build_state(args).items()}
    total_bytes = sum(t.numel() * t.element_size() for t in state.values())
    tx = WeightSender("127.0.0.1", port, 2, args.backend, timeout_s=600)
    times: dict[str, list[float]] = {"bucketed": [], "per_tensor": []}
    for mode, bucket_bytes in schedule(args):
        start = time.perf_counter()
        tx.send(state.items(), bucket_bytes)
        mismatched = queue.get(timeout=600)  # the receiver has every tensor once it reports
        elapsed = time.perf_counter() - start
        if mismatched:
            raise SystemExit(f"{mode}: {len(mismatched)} tensors differ after sync, e.g. {mismatched[0]}")
        if mode != "warmup":
            times[mode].append(elapsed)
    proc.join(timeout=60)
    best = {m: min(v) for m, v in times.items()}
    return {
        "model": f"llama hidden={args.hidden} layers={args.layers} vocab={args.vocab} fp32",
        "backend": args.backend,
        "model_bytes": total_bytes,
        "num_tensors": len(state),
        "bucket_mb": args.bucket_mb,
        "bucketed_s": round(best["bucketed"], 4),
        "per_tensor_s": round(best["per_tensor"], 4),
        "ratio": round(best["per_tensor"] / best["bucketed"], 2),
        "bucketed_gb_s": round(total_bytes / best["bucketed"] / 1e9, 3),
        "per_tensor_gb_s": round(total_bytes / best["per_tensor"] / 1e9, 3),
        "all_times_s": {m: [round(x, 4) for x in v] for m, v in times.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--bucket-mb", type=float, default=64.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-many-tensors", action="store_true", help="skip the latency-bound second model")
    ap.add_argument("--backend", choices=["gloo", "nccl"], default="gloo", help="nccl: GPU 0 sends to GPU 1")
    args = ap.parse_args()
    if args.backend == "nccl" and torch.cuda.device_count() < 2:
        raise SystemExit(f"--backend nccl needs 2 GPUs (NCCL refuses two ranks on one GPU); {torch.cuda.device_count()} here")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    result = {"large_tensors": run(args)}
    if not args.no_many_tensors:
        # Same code, a model of many small tensors: per-broadcast latency instead of bandwidth dominates.
        many = argparse.Namespace(**{**vars(args), "hidden": 128, "layers": 64, "vocab": 1024})
        result["many_tensors"] = run(many)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
