"""Evaluation: the one path that scores a policy on a set of samples, used by `atommem eval`, training's
dev curve and the demo, so their numbers agree on the same checkpoint, data and seed.

Evaluation is a mode of the rollout runners: `evaluation_runners` builds them for a named policy at the
evaluation temperature (`sampling.eval_temperature`, greedy by default, for one play per sample;
`sampling.temperature` when `eval.num_samples` > 1), `run_eval` submits every sample `eval.num_samples`
times with seeds from `trainer.seed`, scores every episode (`eval/scores.py`) and optionally asks the
LLM judge. Model-driven policies play on Ray (`EnvRunnerGroup` over an `EngineFleet`); scripted ones
(oracle, *-scripted baselines) need no engine and play in this process (`LocalRunners`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from atommem.config import Config
from atommem.data.schema import Sample, read_samples
from atommem.errors import UserError
from atommem.eval.judge import JudgeItem, LLMJudge, make_judge
from atommem.eval.scores import EpisodeScore, correct_by_episode, paired_bootstrap_diff, summarize
from atommem.rollout.records import EpisodeRequest, make_requests

import atommem.baselines  # noqa: F401  (registers the baseline policies)
from atommem.baselines import needs_model


@dataclass
class EvalResult:
    policy: str
    episodes: list[EpisodeScore]  # one per play, in sample order (k plays of a sample together)
    summary: dict  # `eval.scores.summarize` of the episodes
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


def eval_temperature(cfg: Config) -> float:
    """Greedy (eval_temperature) for one play per sample; the sampling temperature for k > 1 plays."""
    if cfg.eval.num_samples < 1:
        raise UserError(f"eval.num_samples must be >= 1, got {cfg.eval.num_samples}")
    return cfg.sampling.eval_temperature if cfg.eval.num_samples == 1 else cfg.sampling.temperature


def eval_requests(cfg: Config, samples: Sequence[Sample], tag: str) -> list[EpisodeRequest]:
    """`eval.num_samples` plays of every sample, seeded from trainer.seed; `tag` only keeps ids unique."""
    eval_temperature(cfg)
    return make_requests(list(samples), cfg.eval.num_samples, nonce=f"eval-{tag}", seed=cfg.trainer.seed)


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


def evaluation_runners(cfg: Config, policy: str, model_path: str | None, engines: Sequence[Any] = (),
                       policy_kwargs: dict | None = None) -> Any:
    """Runners that play `policy` at the evaluation temperature: a Ray `EnvRunnerGroup` on `engines` for
    model-driven policies, in-process `LocalRunners` for scripted ones. Only the trained policy plays
    `env.action_set`: a baseline workflow writes with its own part of the action language (MemAgent only the
    note), so it plays the whole language beside a model trained with either."""
    from atommem.rollout.env_runner import MODEL_POLICIES

    if policy not in MODEL_POLICIES:
        cfg = dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, action_set="atomic"))
    factory = RegistryPolicyFactory(policy, cfg, eval_temperature(cfg), policy_kwargs)
    if needs_model(policy):
        from atommem.rollout.env_runner_group import EnvRunnerGroup

        if not engines:
            raise UserError(f"policy {policy!r} prompts a model: evaluate it with a checkpoint (engines to play on)")
        return EnvRunnerGroup(cfg, factory, list(engines), model_path)
    from atommem.rollout.local_runners import LocalRunners

    return LocalRunners(cfg, factory, model_path)


def run_eval(runners: Any, cfg: Config, samples: Sequence[Sample], policy: str, *, tag: str | None = None,
             judge: LLMJudge | None = None, progress: bool = False) -> EvalResult:
    """Play `samples` on `runners` (from `evaluation_runners`), score every episode, summarise."""
    start = time.perf_counter()
    requests = eval_requests(cfg, samples, tag or policy)
    runners.submit(requests)
    summaries = {}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(requests), desc=f"eval {policy}", unit="episode")
    for _, summary in runners.results():
        summaries[summary.episode_id] = summary
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    episodes = [EpisodeScore.of(summaries[r.episode_id], sample_id=r.sample.id) for r in requests]
    judge_errors = asyncio.run(_judge(judge, [r.sample for r in requests], episodes)) if judge is not None else []
    return EvalResult(policy, episodes, summarize(episodes, cfg.eval.length_buckets), time.perf_counter() - start,
                      judge_errors)


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


def evaluate_policies(cfg: Config, checkpoint: str | None, samples: Sequence[Sample], policies: Sequence[str], *,
                      judge: LLMJudge | None = None, tag: str | None = None, progress: bool = True) -> list[EvalResult]:
    """Every policy in `policies` on `samples`; model-driven ones play `checkpoint` on an engine fleet started
    here for the purpose (on the current or a new local Ray) and stopped at the end."""
    from atommem.policies import policy_names

    unknown = [p for p in policies if p not in policy_names()]
    if unknown:
        raise UserError(f"unknown policy {unknown[0]!r} for --policies (known: {', '.join(policy_names())})")
    model_policies = [p for p in policies if needs_model(p)]
    if model_policies and checkpoint is None:
        raise UserError(f"policies {', '.join(model_policies)} prompt a model: pass --checkpoint PATH (an HF model dir)")
    if checkpoint is not None:
        from atommem.models.loading import load_tokenizer

        load_tokenizer(checkpoint)  # a bad checkpoint fails here, with its path, before anything starts
    results: list[EvalResult] = []
    fleet = None
    try:
        if model_policies:
            from atommem.engines.fleet import EngineFleet
            from atommem.runtime import init_ray

            init_ray(cfg.cluster)
            fleet = EngineFleet(cfg, checkpoint)
        for name in policies:
            with evaluation_runners(cfg, name, checkpoint, fleet.handles if fleet else ()) as runners:
                results.append(run_eval(runners, cfg, samples, name, tag=f"{tag}-{name}" if tag else None,
                                        judge=judge, progress=progress))
    finally:
        if fleet is not None:
            fleet.shutdown()
    return results


def evaluate(cfg: Config, checkpoint: str | None, data: str, policies: list[str], *,
             out_dir: str | Path | None = None) -> dict:
    """`atommem eval`: evaluate `policies` on the samples at `data`; write eval.json, eval.md and PNG plots."""
    from atommem.eval.report import write_report

    if not policies:
        raise UserError("evaluate needs at least one policy (e.g. --policies atommem,rag)")
    samples = list(read_samples(data, limit=cfg.data.dev_samples))
    if not samples:
        raise UserError(f"no samples in {data}")
    results = evaluate_policies(cfg, checkpoint, samples, policies, judge=make_judge(cfg.eval))
    out = Path(out_dir or cfg.eval.out or Path(cfg.trainer.run_dir) / "eval")
    return write_report(out, results, compare(results), meta={"checkpoint": checkpoint, "data": str(data)})
