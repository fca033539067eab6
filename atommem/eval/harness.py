"""Evaluation: play every sample with each policy, score every episode, write JSON/Markdown/PNG reports.

Two paths over the same MemoryEnv and scoring:
- `evaluate(cfg, checkpoint, data, policies)`: the rollout system. Model-driven policies (the trained
  agent and the model baselines) run on Ray (`EnvRunnerGroup` + engine actors); scripted policies
  (oracle, *-scripted baselines) need no engine and run in-process.
- `evaluate_local(cfg, samples, policy_factory)`: asyncio over envs in this process with whatever engine
  the factory's policies hold (a local HFEngine or none); used by tests and fast dev evaluation.
Greedy decoding (`sampling.eval_temperature`) for one sample per question; `eval.num_samples` > 1 plays
each sample k times at `sampling.temperature`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from atommem.config import Config
from atommem.data.schema import Sample, read_samples
from atommem.errors import UserError
from atommem.eval.judge import JudgeItem, LLMJudge, make_judge
from atommem.eval.scores import EpisodeScore, correct_by_episode, paired_bootstrap_diff, summarize

import atommem.baselines  # noqa: F401  (registers the baseline policies)
from atommem.baselines import needs_model


@dataclass
class EvalResult:
    policy: str
    episodes: list[EpisodeScore]
    summary: dict
    wall_s: float = 0.0
    judge_errors: list[str] = field(default_factory=list)

    @property
    def em(self) -> float:
        return self.summary["em"]

    def correct_by_episode(self) -> dict[str, list[bool]]:
        """Per sample id, its questions' correctness (input to `paired_bootstrap_diff`)."""
        return correct_by_episode(self.episodes)

    def to_dict(self) -> dict:
        return {
            "policy": self.policy,
            "wall_s": self.wall_s,
            "summary": self.summary,
            "judge_errors": list(self.judge_errors),
            "episodes": [e.to_dict() for e in self.episodes],
        }


def _score(sample: Sample, result: Any) -> EpisodeScore:
    return EpisodeScore(
        sample_id=sample.id,
        source=sample.source,
        context_tokens=result.context_tokens,
        correct=list(result.correct),
        f1=list(result.f1),
        num_turns=result.num_turns,
        action_counts=dict(result.action_counts),
        answers=list(result.answers),
    )


def _expand(samples: Sequence[Sample], k: int) -> list[Sample]:
    if k < 1:
        raise UserError(f"eval.num_samples must be >= 1, got {k}")
    return [s for s in samples for _ in range(k)]


async def aevaluate_local(
    cfg: Config,
    samples: Sequence[Sample],
    policy_factory: Callable[[], Any],
    *,
    name: str = "policy",
    tokenizer: Any = None,
    embedder: Any = None,
    num_samples: int | None = None,
    concurrency: int = 64,
    judge: LLMJudge | None = None,
    progress: bool = False,
) -> EvalResult:
    """Play each sample (k = num_samples, default cfg.eval.num_samples times) with a fresh policy from
    `policy_factory()` in its own MemoryEnv, `concurrency` episodes at once on this event loop."""
    from atommem.env.memory_env import MemoryEnv
    from atommem.memory.embedders import BatchingEmbedder, make_embedder

    start = time.perf_counter()
    base = embedder if embedder is not None else make_embedder(cfg.embedder)
    batching = base if hasattr(base, "aembed") else BatchingEmbedder(base, max_batch_texts=max(cfg.embedder.batch_size, 1))
    plays = _expand(samples, num_samples if num_samples is not None else cfg.eval.num_samples)
    gate = asyncio.Semaphore(max(1, concurrency))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(plays), desc=f"eval {name}", unit="episode")

    async def play(i: int, sample: Sample) -> EpisodeScore:
        async with gate:
            env = MemoryEnv(cfg.env, cfg.memory, base, tokenizer=tokenizer)
            env.reset(seed=cfg.trainer.seed + i, options={"sample": sample})
            policy = policy_factory()
            while not env.done:
                out = await policy.act(env)
                await env.astep(out.text, complete=out.complete, embedder=batching)
            if bar is not None:
                bar.update(1)
            return _score(sample, env.result())

    try:
        episodes = list(await asyncio.gather(*(play(i, s) for i, s in enumerate(plays))))
    finally:
        if bar is not None:
            bar.close()
    judge_errors = await _judge(judge, plays, episodes) if judge is not None else []
    return EvalResult(name, episodes, summarize(episodes, cfg.eval.length_buckets), time.perf_counter() - start, judge_errors)


def evaluate_local(cfg: Config, samples: Sequence[Sample], policy_factory: Callable[[], Any], **kw: Any) -> EvalResult:
    """Synchronous `aevaluate_local` (starts its own event loop)."""
    return asyncio.run(aevaluate_local(cfg, samples, policy_factory, **kw))


async def _judge(judge: LLMJudge, plays: Sequence[Sample], episodes: list[EpisodeScore]) -> list[str]:
    items = [
        JudgeItem(q.question, list(q.answers), ep.answers[j] if j < len(ep.answers) else "")
        for sample, ep in zip(plays, episodes)
        for j, q in enumerate(sample.questions)
    ]
    res = await judge.ajudge(items)
    it = iter(res.verdicts)
    for sample, ep in zip(plays, episodes):
        ep.judged = [next(it) for _ in sample.questions]
    return res.errors


# ----------------------------------------------------------------------------- the rollout-system path
class RegistryPolicyFactory:
    """A rollout `PolicyFactory` for a registered policy name, picklable to EnvRunner actors.

    Unpickling it in a runner imports this module, which registers the baselines there too.
    """

    def __init__(self, name: str, cfg: Config, temperature: float, policy_kwargs: dict | None = None):
        self.name, self.cfg, self.temperature, self.policy_kwargs = name, cfg, temperature, dict(policy_kwargs or {})
        self._build: Any = None

    def __call__(self, request: Any, engine: Any, tokenizer: Any) -> Any:
        if self._build is None:
            from atommem.rollout.env_runner import builtin_policy_factory

            self._build = builtin_policy_factory(self.name, self.cfg, tokenizer, self.policy_kwargs, self.temperature)
        return self._build(request, engine, tokenizer)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_build": None}


def _eval_temperature(cfg: Config) -> float:
    return cfg.sampling.eval_temperature if cfg.eval.num_samples == 1 else cfg.sampling.temperature


def _evaluate_on_ray(cfg: Config, checkpoint: str, samples: list[Sample], name: str, engines: list[Any]) -> EvalResult:
    import ray

    from atommem.rollout.records import make_requests
    from atommem.rollout.env_runner_group import EnvRunnerGroup

    start = time.perf_counter()
    factory = RegistryPolicyFactory(name, cfg, _eval_temperature(cfg))
    requests = make_requests(samples, cfg.eval.num_samples, nonce=f"eval-{name}", seed=cfg.trainer.seed)
    by_id = {r.episode_id: r for r in requests}
    with EnvRunnerGroup(cfg, policy=factory, engines=engines, model_path=checkpoint) as group:
        group.submit(requests)
        done = group.collect(len(requests))
        trajectories = ray.get([ref for ref, _ in done])
    order = {r.episode_id: i for i, r in enumerate(requests)}
    trajectories.sort(key=lambda t: order[t.episode_id])
    episodes = [EpisodeScore.of(t, sample_id=by_id[t.episode_id].sample.id) for t in trajectories]
    return EvalResult(name, episodes, summarize(episodes, cfg.eval.length_buckets), time.perf_counter() - start)


def compare(results: Sequence[EvalResult], n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """EM difference of every policy against the first, with a paired bootstrap CI by episode."""
    if len(results) < 2:
        return []
    ref = results[0]
    out = []
    for r in results[1:]:
        diff, lo, hi = paired_bootstrap_diff(r.correct_by_episode(), ref.correct_by_episode(), n_boot=n_boot, seed=seed)
        out.append({"policy": r.policy, "against": ref.policy, "em_diff": diff, "ci95": [lo, hi]})
    return out


def evaluate(
    cfg: Config,
    checkpoint: str | None,
    data: str,
    policies: list[str],
    *,
    out_dir: str | Path | None = None,
) -> dict:
    """Evaluate `policies` on the samples at `data`; write eval.json, eval.md and PNG plots; return the report."""
    from atommem.eval.report import write_report
    from atommem.policies import policy_names

    unknown = [p for p in policies if p not in policy_names()]
    if unknown:
        raise UserError(f"unknown policy {unknown[0]!r} for --policies (known: {', '.join(policy_names())})")
    if not policies:
        raise UserError("evaluate needs at least one policy (e.g. --policies atommem,rag)")
    samples = list(read_samples(data))
    if cfg.data.dev_samples is not None:
        samples = samples[: cfg.data.dev_samples]
    if not samples:
        raise UserError(f"no samples in {data}")
    model_policies = [p for p in policies if needs_model(p)]
    if model_policies and checkpoint is None:
        raise UserError(f"policies {', '.join(model_policies)} prompt a model: pass --checkpoint PATH (an HF model dir)")
    tokenizer = None
    if checkpoint is not None:
        from atommem.models.loading import load_tokenizer

        tokenizer = load_tokenizer(checkpoint)
    judge = make_judge(cfg.eval)

    results: list[EvalResult] = []
    engines: list[Any] = []
    try:
        if model_policies:
            from atommem.engines.actor import make_engine_actor
            from atommem.runtime import init_ray

            init_ray(cfg.cluster)
            engines = [make_engine_actor(cfg.engine, checkpoint) for _ in range(cfg.engine.num_engines)]
        for name in policies:
            if needs_model(name):
                result = _evaluate_on_ray(cfg, checkpoint, samples, name, engines)
                if judge is not None:
                    result.judge_errors = asyncio.run(_judge(judge, _expand(samples, cfg.eval.num_samples), result.episodes))
                    result.summary = summarize(result.episodes, cfg.eval.length_buckets)
            else:
                result = evaluate_local(cfg, samples, _scripted_factory(name), name=name, tokenizer=tokenizer, judge=judge, progress=True)
            results.append(result)
    finally:
        if engines:
            import ray

            for e in engines:
                ray.kill(e)
    out = Path(out_dir or cfg.eval.out or Path(cfg.trainer.run_dir) / "eval")
    return write_report(out, results, compare(results), meta={"checkpoint": checkpoint, "data": str(data)})


def _scripted_factory(name: str) -> Callable[[], Any]:
    from atommem.policies import make_policy_factory

    return make_policy_factory(name)
