"""Memory operations: per-episode MemoryStores vs the reference's shared flat index.

256 concurrent episodes grow to ~200 entries each through one interleaved operation sequence
(60% add, 15% modify, 5% delete, 20% query + render). Embeddings are computed once up front with
HashEmbedder, so both designs are timed on the store work only:
  (a) per_episode: one MemoryStore per episode, update/delete by id, top-k over that episode only;
  (b) shared (the reference design): one flat matrix holding every episode's entries; a query scores
      ALL entries then masks to its episode; update/delete find the entry by text match in the list.
Both run the SAME sequence; a sample of query results is compared to check they agree.
Also measures the mean per-step overhead of the env (parse + memory ops + embedding + prompt build)
with scripted oracle responses on synthetic samples.

Usage: python bench/memory_ops.py [--episodes 256 --entries 200 --seed 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import time
from typing import Any

import numpy as np

from atommem.memory import HashEmbedder, MemoryStore

MIX = (("add", 0.60), ("modify", 0.15), ("delete", 0.05), ("query", 0.20))
TOP_K = 6
WORDS = "city color age job pet car team food lives works plays owns likes near with from".split()


def make_ops(episodes: int, entries: int, rng: random.Random) -> tuple[list[tuple], list[str], list[str]]:
    """Interleaved ops; each op names both what (a) needs (ids) and what (b) needs (texts).

    Returns (ops, write_texts, query_texts); ops reference texts by index (= embedding row).
    """
    live_fraction = MIX[0][1] - MIX[2][1]  # adds minus deletes
    steps = math.ceil(entries / live_fraction)
    write_texts: list[str] = []
    query_texts: list[str] = []
    ops: list[tuple] = []
    live: list[dict[int, int]] = [{} for _ in range(episodes)]  # per episode: id -> index of its current text
    next_id = [1] * episodes
    kinds, weights = zip(*MIX)
    for _ in range(steps):
        for e in range(episodes):
            kind = rng.choices(kinds, weights)[0]
            if kind != "add" and not live[e]:
                kind = "add"
            if kind in ("add", "modify"):
                ent = f"e{e}n{rng.randrange(10**6)}"
                write_texts.append(f"{ent} {rng.choice(WORDS)} {rng.choice(WORDS)} v{rng.randrange(1000)}")
                t = len(write_texts) - 1
            if kind == "add":
                ops.append(("add", e, t))
                live[e][next_id[e]] = t
                next_id[e] += 1
            elif kind == "modify":
                i = rng.choice(list(live[e]))
                ops.append(("modify", e, i, t, live[e][i]))
                live[e][i] = t
            elif kind == "delete":
                i = rng.choice(list(live[e]))
                ops.append(("delete", e, i, live[e].pop(i)))
            else:
                query_texts.append(f"{rng.choice(WORDS)} {rng.choice(WORDS)} e{e}n{rng.randrange(10**6)}")
                ops.append(("query", e, len(query_texts) - 1))
    return ops, write_texts, query_texts


def run_per_episode(ops, episodes, dim, W, Q, texts, check_every):
    """Every op runs and is timed; the results of every `check_every`-th query are kept for comparison."""
    stores = [MemoryStore(dim=dim, top_k=TOP_K) for _ in range(episodes)]
    checks: list[list[str]] = []
    n_queries = 0
    t0 = time.perf_counter()
    for op in ops:
        kind, e = op[0], op[1]
        if kind == "add":
            stores[e].add(texts[op[2]], W[op[2]])
        elif kind == "modify":
            stores[e].modify(op[2], texts[op[3]], W[op[3]])
        elif kind == "delete":
            stores[e].delete(op[2])
        else:
            hits = stores[e].search(Q[op[2]])
            stores[e].render([entry for entry, _ in hits])
            if n_queries % check_every == 0:
                checks.append([(entry.text, score) for entry, score in hits])
            n_queries += 1
    elapsed = time.perf_counter() - t0
    return elapsed, checks, sum(len(s) for s in stores)


def run_shared(ops, episodes, dim, W, Q, texts, query_stride):
    """The reference design: one flat index over all episodes, text-matched updates.

    Every add/modify/delete runs. Queries do not change state and each one scores every entry of every
    episode, so only every `query_stride`-th query runs (a uniform sample over the whole sequence) and
    the time of the others is extrapolated from the sampled mean. Returns (estimated seconds, checks, live).
    """
    cap = 1024
    matrix = np.zeros((cap, dim), np.float32)
    owner = np.zeros(cap, np.int64)
    alive = np.zeros(cap, bool)
    entry_texts: list[str | None] = []
    checks: list[list[str]] = []
    n_queries = 0
    query_s = 0.0
    t0 = time.perf_counter()
    for op in ops:
        kind, e = op[0], op[1]
        if kind == "add":
            n = len(entry_texts)
            if n == cap:
                cap *= 2
                matrix = np.concatenate([matrix, np.zeros_like(matrix)])
                owner = np.concatenate([owner, np.zeros_like(owner)])
                alive = np.concatenate([alive, np.zeros_like(alive)])
            matrix[n], owner[n], alive[n] = W[op[2]], e, True
            entry_texts.append(texts[op[2]])
        elif kind == "modify":
            row = entry_texts.index(texts[op[4]])  # located by its old text, over every episode's entries
            matrix[row] = W[op[3]]
            entry_texts[row] = texts[op[3]]
        elif kind == "delete":
            row = entry_texts.index(texts[op[3]])
            alive[row] = False
            entry_texts[row] = None
        else:
            n_queries += 1
            if (n_queries - 1) % query_stride:
                continue
            tq = time.perf_counter()
            n = len(entry_texts)
            scores = matrix[:n] @ Q[op[2]]
            scores[(owner[:n] != e) | ~alive[:n]] = -np.inf  # filter to this trajectory after scoring all
            k = min(TOP_K, int(np.count_nonzero(np.isfinite(scores))))
            top = np.argpartition(-scores, k - 1)[:k] if k else np.array([], np.int64)
            top = top[np.argsort(-scores[top], kind="stable")]
            "\n".join(f"Memory {r}: {entry_texts[r]}" for r in top)
            query_s += time.perf_counter() - tq
            checks.append([(entry_texts[r], float(scores[r])) for r in top])
    elapsed = time.perf_counter() - t0
    sampled = len(checks)
    estimated = elapsed + (n_queries - sampled) * (query_s / max(1, sampled))
    return estimated, checks, int(alive.sum())


class _PolicyClock:
    """Wraps a policy and adds up the time it spends choosing actions (not the env's time)."""

    policy: Any = None
    seconds: float = 0.0

    async def act(self, env: Any) -> Any:
        t0 = time.perf_counter()
        out = await self.policy.act(env)
        self.seconds += time.perf_counter() - t0
        return out


class _DirectEmbedder:
    """`aembed` as a plain call: no batching window, no thread hop, so only the env's own work is timed."""

    def __init__(self, embedder: Any):
        self.embedder = embedder

    async def aembed(self, texts: list[str], *, query: bool = False) -> Any:
        return self.embedder.embed(texts, query=query)


def env_step_overhead_us(episodes: int = 40, warmup: int = 10) -> dict:
    """Mean microseconds of a MemoryEnv turn in `play_episode` (parse + memory ops + embedding + prompt build) on oracle turns.

    The first `warmup` episodes only warm caches (HashEmbedder's per-word slots), as in a long run.
    """
    try:
        from atommem.config import EnvConfig, MemoryConfig, SynthConfig
        from atommem.data.synthetic import generate_synthetic
        from atommem.env.episode import play_episode
        from atommem.env.memory_env import MemoryEnv
        from atommem.policies.oracle import OraclePolicy
    except ImportError as exc:
        return {"env_step_overhead_us": None, "env_step_note": f"atommem.env not importable ({exc})"}
    from atommem.actions import parse_actions

    samples = generate_synthetic(SynthConfig(num_entities=12, max_questions=4), n=warmup + episodes, seed=1)
    embedder = HashEmbedder(256)
    env = MemoryEnv(EnvConfig(chunk_tokens=48, chunk_overlap=0), MemoryConfig(), embedder)
    timed, direct = _PolicyClock(), _DirectEmbedder(embedder)
    step_s, parse_s, steps = 0.0, 0.0, 0

    async def play_all() -> None:
        nonlocal step_s, parse_s, steps
        for i, sample in enumerate(samples):
            env.reset(options={"sample": sample})
            timed.policy = OraclePolicy(store_relevant_p=1.0, store_distractor_p=0.5, rng_seed=i)
            timed.seconds = 0.0
            t0 = time.perf_counter()
            played = await play_episode(env, timed, embedder=direct)
            env_s = time.perf_counter() - t0 - timed.seconds  # the episode minus the policy's own time
            t1 = time.perf_counter()
            for turn in played.turns:
                parse_actions(turn.response_text)
            if i >= warmup:
                step_s += env_s
                parse_s += time.perf_counter() - t1
                steps += len(played.turns)

    asyncio.run(play_all())
    return {
        "env_step_overhead_us": round(step_s / steps * 1e6, 1),
        "env_parse_us": round(parse_s / steps * 1e6, 1),
        "env_steps_measured": steps,
        "env_step_note": "MemoryEnv.astep in play_episode (parse + memory ops + HashEmbedder embedding + prompt build), oracle turns",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=256)
    ap.add_argument("--entries", type=int, default=200, help="target live entries per episode")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--query-stride", type=int, default=40, help="shared design: run every Nth query, extrapolate the rest's time"
    )
    args = ap.parse_args()

    rng = random.Random(args.seed)
    ops, write_texts, query_texts = make_ops(args.episodes, args.entries, rng)
    embedder = HashEmbedder(args.dim)
    t0 = time.perf_counter()
    W = embedder.embed(write_texts)
    Q = embedder.embed(query_texts, query=True)
    embed_s = time.perf_counter() - t0

    per_s, per_checks, per_live = run_per_episode(ops, args.episodes, args.dim, W, Q, write_texts, args.query_stride)
    shared_s, shared_checks, shared_live = run_shared(ops, args.episodes, args.dim, W, Q, write_texts, args.query_stride)
    assert per_live == shared_live, (per_live, shared_live)
    # Equal-scoring entries may come back in a different order, so agreement compares the scores.
    pairs = list(zip(per_checks, shared_checks))
    agree = sum(
        len(a) == len(b) and np.allclose([s for _, s in a], [s for _, s in b], atol=1e-5) for a, b in pairs
    ) / max(1, len(pairs))
    same_texts = sum([t for t, _ in a] == [t for t, _ in b] for a, b in pairs) / max(1, len(pairs))

    counts = {k: sum(op[0] == k for op in ops) for k, _ in MIX}
    per_ops = len(ops) / per_s
    shared_ops = len(ops) / shared_s
    report = {
        "episodes": args.episodes,
        "entries_per_episode_final": round(per_live / args.episodes, 1),
        "ops": len(ops),
        "op_counts": counts,
        "per_episode_ops_per_s": round(per_ops),
        "shared_index_ops_per_s": round(shared_ops),
        "speedup": round(per_ops / shared_ops, 1),
        "goal_speedup": 20,
        "shared_index_note": f"all writes timed; 1 in {args.query_stride} queries timed, the rest extrapolated",
        "query_results_compared": len(shared_checks),
        "query_scores_agree": round(agree, 4),
        "query_texts_identical": round(same_texts, 4),
        "precompute_embeddings_s": round(embed_s, 2),
    }
    report.update(env_step_overhead_us())
    print(json.dumps(report))


if __name__ == "__main__":
    main()
