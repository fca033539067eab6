"""The training loop: joins the rollout system (EnvRunnerGroup + engines) and the learner (LearnerGroup).

Three stages, each a subcommand and a job:
- `collect-sft`: a teacher (the oracle on synthetic data, or an OpenAI-compatible model) plays episodes;
  trajectories with reward >= sft.min_reward are written as Parquet.
- `sft`: supervised fine-tuning on those trajectories (loss on response tokens only).
- `train`: GRPO. Each step plays batch_groups samples x group_size rollouts, computes advantages per
  trajectory (grouped by uid) from the small summaries, ships (trajectory ref, advantage) pairs to the
  learner group, then broadcasts the new weights to every engine. `trainer.mode: async` keeps the next
  batch's rollouts running while the learner steps; trajectories older than `max_staleness` versions
  are dropped and replaced.
Everything lands in `trainer.run_dir`: config, metrics.jsonl, TensorBoard, checkpoints, models.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from atommem.config import Config, load_config
from atommem.data.schema import Sample, read_samples
from atommem.errors import UserError
from atommem.tracking import RunLogger


@dataclass
class EpochSampler:
    """Seeded, resumable sample order: a fresh permutation per epoch; the state is (epoch, pos)."""

    size: int
    seed: int = 0
    epoch: int = 0
    pos: int = 0
    _order: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise UserError("the training set is empty: point data.train at a non-empty Parquet dir")
        self._order = self._permutation(self.epoch)

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(self.size))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def take(self, k: int) -> list[int]:
        out: list[int] = []
        while len(out) < k:
            if self.pos >= self.size:
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            n = min(k - len(out), self.size - self.pos)
            out += self._order[self.pos : self.pos + n]
            self.pos += n
        return out

    def state_dict(self) -> dict:
        return {"size": self.size, "seed": self.seed, "epoch": self.epoch, "pos": self.pos}

    @classmethod
    def from_state(cls, state: dict) -> "EpochSampler":
        return cls(size=state["size"], seed=state["seed"], epoch=state["epoch"], pos=state["pos"])


def rollout_stats(summaries: list) -> dict:
    """Training-log scalars of a batch of TrajectorySummary objects: `rollout.play.summarize` plus the
    reward spread, with action rates (ops per turn) as `rate_<kind>` keys."""
    from atommem.rollout.play import summarize

    st = summarize(summaries, policy="", wall_s=0.0)
    out = {
        "reward_mean": st.mean_reward,
        "reward_std": float(np.std([s.reward for s in summaries])) if summaries else 0.0,
        "em": st.exact_match,
        "episodes": st.episodes,
        "turns_per_episode": st.mean_turns,
        "generated_tokens": st.generated_tokens,
    }
    out.update({f"rate_{k}": v for k, v in st.action_rates.items()})
    return out


def _model_path(cfg: Config) -> str:
    from atommem.models.tiny import ensure_model

    return str(ensure_model(cfg.model, cfg.data.synth))


def _train_samples(cfg: Config) -> list[Sample]:
    from atommem.data.prepare import prepare

    paths = prepare(cfg)
    return read_samples(paths["train"])


def _dev_samples(cfg: Config) -> list[Sample]:
    from atommem.data.prepare import prepare

    paths = prepare(cfg)
    return read_samples(paths["dev"], limit=cfg.data.dev_samples)


def start_engines(cfg: Config, model_path: str) -> list[Any]:
    from atommem.engines.actor import make_engine_actor

    return [make_engine_actor(cfg.engine, model_path, dtype=cfg.model.dtype) for _ in range(cfg.engine.num_engines)]


def _write_trajectories(refs: list, out_dir: Path) -> Path:
    from atommem.rollout.parquet import write_trajectories

    return write_trajectories(refs, out_dir)


# ----------------------------------------------------------------------------- stages


def collect_sft(cfg: Config) -> tuple[Path, list]:
    """Play teacher episodes over the training set; keep those with reward >= sft.min_reward.

    Returns the Parquet dir written and the kept trajectories' object refs."""
    from atommem.rollout.records import make_requests
    from atommem.rollout.env_runner_group import EnvRunnerGroup
    from atommem.runtime import init_ray

    run_dir = Path(cfg.trainer.run_dir)
    out = Path(cfg.sft.data) if cfg.sft.data else run_dir / "sft_data"
    samples = _train_samples(cfg)
    model_path = _model_path(cfg)
    init_ray(cfg.cluster)
    picked = [samples[i] for i in EpochSampler(len(samples), cfg.trainer.seed).take(cfg.sft.teacher_episodes)]
    # The same sample may be drawn twice when teacher_episodes > len(samples): a nonce per pass keeps ids unique.
    requests = []
    for start in range(0, len(picked), len(samples)):
        requests += make_requests(picked[start : start + len(samples)], 1, nonce=f"t{start}", seed=cfg.trainer.seed + start)
    if cfg.sft.teacher == "oracle":
        policy, kwargs, engines = "oracle", {
            "store_relevant_p": cfg.sft.teacher_store_relevant_p,
            "store_distractor_p": cfg.sft.teacher_store_distractor_p,
            "answer_top_hit": cfg.sft.teacher_answer_top_hit,
        }, []
    else:
        if cfg.engine.kind != "openai":
            raise UserError("sft.teacher: openai needs engine.kind: openai with engine.base_url of the teacher server")
        policy, kwargs, engines = "model", {}, start_engines(cfg, model_path)
    from tqdm import tqdm

    with EnvRunnerGroup(cfg, policy, engines, model_path, policy_kwargs=kwargs) as group:
        group.submit(requests)
        kept, rewards = [], []
        for ref, summary in tqdm(group.results(), total=len(requests), desc="teacher episodes"):
            rewards.append(summary.reward)
            if summary.reward >= cfg.sft.min_reward:
                kept.append(ref)
    path = _write_trajectories(kept, out)
    print(f"teacher: {len(requests)} episodes, mean reward {np.mean(rewards):.3f}, kept {len(kept)} -> {path}")
    return path, kept


class SFTData:
    """Teacher trajectories as object refs, drawn `batch_size` per step in a resumable seeded order."""

    def __init__(self, refs: list, batch_size: int, seed: int = 0):
        if not refs:
            raise UserError("no SFT trajectories: the teacher kept none (lower sft.min_reward or check the teacher)")
        self.refs = refs
        self.batch_size = batch_size
        self.sampler = EpochSampler(len(refs), seed)

    @classmethod
    def from_path(cls, path: Path, batch_size: int, seed: int = 0) -> "SFTData":
        import ray

        from atommem.rollout.parquet import read_trajectories

        return cls([ray.put(t) for t in read_trajectories(path)], batch_size, seed)

    def next_batch(self) -> list:
        return [self.refs[i] for i in self.sampler.take(self.batch_size)]


def sft_loop(learner: Any, data: SFTData, steps: int, seconds: float | None, logger: RunLogger, phase: str,
             start_step: int = 0) -> int:
    """SFT steps from `start_step` until `steps` or `seconds` run out; returns the step reached."""
    from tqdm import tqdm

    t0 = time.monotonic()
    step = start_step
    bar = tqdm(total=None if seconds is not None else steps - start_step, desc=phase, mininterval=2.0)
    while step < steps and (seconds is None or time.monotonic() - t0 < seconds):
        metrics = learner.update_sft(data.next_batch())
        step += 1
        bar.update(1)
        if step % 20 == 0 or step == steps:
            logger.log(step, {**metrics, "elapsed_s": time.monotonic() - t0}, phase=phase)
            bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.3f}")
    bar.close()
    return step


def sft_learner_config(cfg: Config) -> Config:
    """`cfg` with the SFT learner's own CPUs and ZeRO stage where set: SFT has the machine to itself, so
    it may use more threads than a learner sharing the CPUs with engines and env runners in GRPO, and a
    single CPU rank gains nothing from ZeRO-3's partitioning but pays for its hooks."""
    changes = {"num_cpus": cfg.sft.learner_cpus, "zero_stage": cfg.sft.zero_stage}
    changes = {k: v for k, v in changes.items() if v is not None}
    return replace(cfg, learner=replace(cfg.learner, **changes)) if changes else cfg


def train_sft(cfg: Config) -> Path:
    """SFT on teacher trajectories; writes `<run_dir>/sft/model` (HF dir) and a learner checkpoint."""
    from atommem.learner.learner_group import LearnerGroup
    from atommem.runtime import init_ray

    run_dir = Path(cfg.trainer.run_dir)
    path = Path(cfg.sft.data) if cfg.sft.data else run_dir / "sft_data"
    if not path.exists():
        raise UserError(f"SFT data {path} does not exist: run `atommem collect-sft --config ...` first")
    model_path = _model_path(cfg)
    init_ray(cfg.cluster)
    data = SFTData.from_path(path, cfg.sft.batch_size, cfg.trainer.seed)
    logger = RunLogger(run_dir, cfg, tensorboard=cfg.trainer.tensorboard, wandb=cfg.trainer.wandb)
    learner = LearnerGroup(sft_learner_config(cfg), model_path, stage="sft")
    out = run_dir / "sft"
    try:
        step = sft_loop(learner, data, cfg.sft.steps, cfg.sft.time_budget_s, logger, "sft")
        learner.save_checkpoint(str(out / "checkpoint"), {"sft_step": step, "sampler": data.sampler.state_dict()})
        learner.save_hf(str(out / "model"))
    finally:
        learner.shutdown()
        logger.close()
    print(f"SFT model: {out / 'model'}")
    return out / "model"


def evaluate_on_engines(cfg: Config, engines: list, model_path: str, samples: list[Sample], tag: str,
                        runners: Any = None) -> dict:
    """Play each sample once (sampling.eval_temperature; 0 = greedy) and score every episode.

    Returns rollout_stats plus `correct_by_episode` in the order of `samples` (for paired bootstraps)."""
    from atommem.rollout.records import make_requests
    from atommem.rollout.env_runner_group import EnvRunnerGroup

    own = runners is None
    if own:
        runners = EnvRunnerGroup(cfg, "model", engines, model_path, temperature=cfg.sampling.eval_temperature)
    try:
        runners.submit(make_requests(samples, 1, nonce=f"eval-{tag}"))
        by_uid = {s.uid: s for _, s in runners.results()}
    finally:
        if own:
            runners.shutdown()
    summaries = [by_uid[f"{s.id}@eval-{tag}"] for s in samples]
    stats = rollout_stats(summaries)
    stats["correct_by_episode"] = [list(map(bool, s.correct)) for s in summaries]
    return stats


@dataclass
class GRPOState:
    step: int = 0
    version: int = 0
    train_seconds: float = 0.0  # wall time of rollouts + updates + syncs (evaluation excluded)
    sampler: dict = field(default_factory=dict)


class GRPOTrainer:
    """Owns the engines, the rollout runners and the learner group for one GRPO run."""

    def __init__(self, cfg: Config, model_path: str, logger: RunLogger):
        from atommem.learner.learner_group import LearnerGroup
        from atommem.rollout.buffer import GroupBuffer
        from atommem.rollout.env_runner_group import EnvRunnerGroup

        self.cfg = cfg
        self.logger = logger
        self.model_path = model_path
        self.train = _train_samples(cfg)
        self.engines = start_engines(cfg, model_path)
        self.learner = LearnerGroup(cfg, model_path, stage="grpo")
        self.runners = EnvRunnerGroup(cfg, "model", self.engines, model_path)
        self.eval_runners = None
        if cfg.trainer.mode == "async" and cfg.trainer.max_staleness < 1:
            raise UserError("trainer.mode: async plays the next batch during the update: set trainer.max_staleness >= 1")
        self.buffer = GroupBuffer(cfg.grpo.group_size, dynamic_filter=cfg.grpo.dynamic_filter, keep=self._fresh)
        self.state = GRPOState()
        self.sampler = EpochSampler(len(self.train), cfg.trainer.seed)

    # -- rollouts
    def _submit(self, num_groups: int) -> None:
        from atommem.rollout.records import make_requests

        picked = [self.train[i] for i in self.sampler.take(num_groups)]
        # A nonce per submission keeps uids and episode ids unique when a sample comes round again.
        nonce = f"v{self.state.version}s{self.state.step}e{self.sampler.epoch}p{self.sampler.pos}"
        seen: set[str] = set()
        unique = [s for s in picked if not (s.id in seen or seen.add(s.id))]
        self.runners.submit(make_requests(unique, self.cfg.grpo.group_size, nonce=nonce,
                                          seed=self.cfg.trainer.seed + 7919 * self.state.step))

    def _fresh(self, summaries: list) -> bool:
        """Buffer predicate: a group is usable when every turn is within max_staleness versions."""
        return min(s.min_weight_version for s in summaries) >= self.state.version - self.cfg.trainer.max_staleness

    def _gather(self) -> tuple[list[list], dict]:
        """Complete groups for one step; groups dropped (no reward variance, stale) are replaced."""
        B = self.cfg.grpo.batch_groups
        dropped = self.buffer.dropped_groups
        while self.buffer.num_complete < B:
            if self.runners.in_flight() + self.runners.pending() == 0:
                self._submit(B - self.buffer.num_complete)
            for ref, summary in self.runners.results():
                self.buffer.add(ref, summary)
                if self.buffer.num_complete >= B:
                    break
        return self.buffer.pop_groups(B), {"groups_dropped": self.buffer.dropped_groups - dropped}

    # -- one step
    def step(self) -> dict:
        from atommem.learner.grpo import group_advantages

        cfg = self.cfg
        t0 = time.monotonic()
        groups, extra = self._gather()
        if cfg.trainer.mode == "async":
            self._submit(cfg.grpo.batch_groups)  # next batch plays while the learner steps
        t_roll = time.monotonic() - t0
        entries = [e for g in groups for e in g]
        summaries = [s for _, s in entries]
        advantages = group_advantages([s.reward for s in summaries], [s.uid for s in summaries],
                                      std_normalize=cfg.grpo.std_normalize)
        expected_rows = sum(s.num_turns for s in summaries)
        t1 = time.monotonic()
        metrics = self.learner.update_grpo([(ref, float(a)) for (ref, _), a in zip(entries, advantages)])
        if metrics.get("rows_consumed", expected_rows) != expected_rows:
            raise RuntimeError(f"learner consumed {metrics['rows_consumed']} rows, the batch has {expected_rows}")
        t_learn = time.monotonic() - t1
        self.state.version += 1
        sync = self.learner.sync_weights(self.engines, self.state.version)
        self.state.step += 1
        step_s = time.monotonic() - t0
        self.state.train_seconds += step_s
        record = {
            **rollout_stats(summaries),
            **{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
            **extra,
            "rollout_s": t_roll,
            "learner_s": t_learn,
            "sync_s": sync.get("seconds", 0.0),
            "sync_bytes": sync.get("bytes", 0),
            "step_s": step_s,
            "train_seconds": self.state.train_seconds,
            "weight_version": self.state.version,
            "staleness": self.state.version - 1 - min(s.min_weight_version for s in summaries),
        }
        from atommem.metrics import get_metrics

        get_metrics().learner_step(t_learn, int(metrics.get("tokens", 0)), record)
        get_metrics().weight_sync(record["sync_s"], int(record["sync_bytes"]))
        get_metrics().staleness(record["staleness"])
        return record

    # -- evaluation on the live engines (greedy by default)
    def evaluate(self, samples: list[Sample], tag: str) -> dict:
        from atommem.rollout.env_runner_group import EnvRunnerGroup

        if self.eval_runners is None:
            self.eval_runners = EnvRunnerGroup(self.cfg, "model", self.engines, self.model_path,
                                               temperature=self.cfg.sampling.eval_temperature)
        return evaluate_on_engines(self.cfg, self.engines, self.model_path, samples, tag, runners=self.eval_runners)

    # -- checkpoints
    def save(self, path: Path) -> None:
        self.state.sampler = self.sampler.state_dict()
        extra = {"grpo_state": self.state.__dict__, "py_rng": random.getstate(), "np_rng": np.random.get_state()}
        self.learner.save_checkpoint(str(path), extra)

    def resume(self, path: Path) -> None:
        extra = self.learner.load_checkpoint(str(path))
        self.state = GRPOState(**extra["grpo_state"])
        self.sampler = EpochSampler.from_state(self.state.sampler)
        random.setstate(extra["py_rng"])
        np.random.set_state(extra["np_rng"])
        self.learner.sync_weights(self.engines, self.state.version)

    def shutdown(self) -> None:
        for group in (self.runners, self.eval_runners):
            if group is not None:
                group.shutdown()
        self.learner.shutdown()
        import ray

        for e in self.engines:
            ray.kill(e)


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = sorted((run_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return ckpts[-1] if ckpts else None


def train_grpo(cfg: Config, resume: bool = False) -> Path:
    """GRPO from `model.path` (typically the SFT model); returns the final HF model dir."""
    from tqdm import tqdm

    from atommem.runtime import init_ray

    run_dir = Path(cfg.trainer.run_dir)
    model_path = _model_path(cfg)
    init_ray(cfg.cluster)
    logger = RunLogger(run_dir, cfg, tensorboard=cfg.trainer.tensorboard, wandb=cfg.trainer.wandb)
    dev = _dev_samples(cfg) if cfg.trainer.eval_every else None
    trainer = GRPOTrainer(cfg, model_path, logger)
    try:
        if resume:
            ckpt = latest_checkpoint(run_dir)
            if ckpt is None:
                raise UserError(f"--resume: no checkpoint under {run_dir / 'checkpoints'}")
            trainer.resume(ckpt)
            print(f"resumed from {ckpt} at step {trainer.state.step}")
        bar = tqdm(total=cfg.trainer.steps, initial=trainer.state.step, desc="grpo")
        while trainer.state.step < cfg.trainer.steps:
            if cfg.trainer.time_budget_s is not None and trainer.state.train_seconds >= cfg.trainer.time_budget_s:
                break
            record = trainer.step()
            step = trainer.state.step
            if dev and cfg.trainer.eval_every and step % cfg.trainer.eval_every == 0:
                ev = trainer.evaluate(dev, f"s{step}")
                record.update({f"dev_{k}": v for k, v in ev.items() if k != "correct_by_episode"})
            logger.log(step, record, phase="grpo")
            bar.update(1)
            bar.set_postfix(reward=f"{record['reward_mean']:.3f}", kl=f"{record.get('kl', 0):.4f}")
            if cfg.trainer.checkpoint_every and step % cfg.trainer.checkpoint_every == 0:
                trainer.save(run_dir / "checkpoints" / f"step-{step}")
        bar.close()
        out = run_dir / "grpo" / "model"
        trainer.learner.save_hf(str(out))
    finally:
        trainer.shutdown()
        logger.close()
    print(f"GRPO model: {out}")
    return out


def main(argv: list[str]) -> int:
    command, rest = argv[0], argv[1:]
    parser = argparse.ArgumentParser(prog=f"atommem {command}")
    parser.add_argument("--config", required=True, help="YAML config (see configs/)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override, repeatable")
    if command == "train":
        parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in run_dir")
    args = parser.parse_args(rest)
    cfg = load_config(args.config, args.set)
    if command == "collect-sft":
        collect_sft(cfg)
    elif command == "sft":
        train_sft(cfg)
    elif command == "train":
        train_grpo(cfg, resume=args.resume)
    else:
        raise UserError(f"unknown training command {command!r}")
    return 0
