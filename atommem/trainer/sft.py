"""SFT: a teacher plays episodes (`collect_teacher`), then supervised fine-tuning on every turn it played.

- `collect_teacher(cfg)`: the teacher (the scripted oracle on synthetic data, or an OpenAI-compatible model
  through `engine.kind: openai`) plays `sft.teacher_episodes` training samples on the rollout runners;
  trajectories with reward >= sft.min_reward are kept (as object refs) and written as Parquet;
  `sft.val_episodes` more are held out (`val/`) to validate on.
- `SFTTrainer`: the learner group in SFT mode over those trajectories (loss on response tokens only),
  `run()` for a number of steps and/or seconds, validating on the held-out episodes every `sft.val_every`
  steps and at the end, `save()` / `resume()` of its full state.
`atommem collect-sft` and `atommem sft` (and their jobs) call `collect_teacher` and `train_sft`; the demo
drives `SFTTrainer` directly to train the control on from the same checkpoint.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from atommem.config import Config
from atommem.data.sampler import EpochSampler
from atommem.errors import UserError
from atommem.learner.pretrain import BaseCorpus, step_rng
from atommem.learner.sft import validation_metrics
from atommem.tracking import RunLogger
from atommem.trainer.inputs import model_path_of, sft_data_dir, train_samples
from atommem.trainer.pretrain import base_corpus, pretrain_base, row_refs, sft_learner_config

VAL_DIR = "val"  # the held-out teacher episodes, under the SFT data dir


def scripted_teacher(cfg: Config) -> tuple[str, dict] | None:
    """(policy name, its settings) of a scripted `sft.teacher` (also what the demo scores it with); None
    for a model teacher. The oracle's settings come from `sft.teacher_*`."""
    if cfg.sft.teacher == "oracle":
        if cfg.env.action_set != "atomic":
            raise UserError(
                f"sft.teacher: oracle writes with the whole action language, but env.action_set is {cfg.env.action_set!r}; "
                "use sft.teacher: memagent-scripted for the overwrite action set"
            )
        return "oracle", {
            "store_relevant_p": cfg.sft.teacher_store_relevant_p,
            "store_distractor_p": cfg.sft.teacher_store_distractor_p,
            "answer_top_hit": cfg.sft.teacher_answer_top_hit,
            "weak_attributes": list(cfg.sft.teacher_weak_attributes),
            "weak_update_p": cfg.sft.teacher_weak_update_p,
        }
    if cfg.sft.teacher == "memagent-scripted":
        return "memagent-scripted", {}
    return None


def teacher_requests(cfg: Config, samples: list) -> list:
    """The teacher's `sft.teacher_episodes` episodes over `samples`, in a seeded order (the SFT data's order),
    then its `sft.val_episodes` held-out ones (further on in that order: the training ones do not change)."""
    from atommem.rollout.records import make_requests

    if cfg.sft.teacher_episodes < 1 or cfg.sft.val_episodes < 0:
        raise UserError(f"sft.teacher_episodes must be >= 1 and sft.val_episodes >= 0, got {cfg.sft.teacher_episodes} "
                        f"and {cfg.sft.val_episodes}")
    count = cfg.sft.teacher_episodes + cfg.sft.val_episodes
    picked = [samples[i] for i in EpochSampler(len(samples), cfg.trainer.seed).take(count)]
    # The same sample may be drawn twice when teacher_episodes > len(samples): a nonce per pass keeps ids unique.
    requests = []
    for start in range(0, len(picked), len(samples)):
        requests += make_requests(picked[start : start + len(samples)], 1, nonce=f"t{start}", seed=cfg.trainer.seed + start)
    return requests


def collect_teacher(cfg: Config) -> tuple[Path, list, list]:
    """Play teacher episodes over the training set; keep those with reward >= sft.min_reward.

    Returns the Parquet dir written and the object refs of the kept training and held-out trajectories."""
    from tqdm import tqdm

    from atommem.rollout.env_runner_group import EnvRunnerGroup
    from atommem.rollout.parquet import write_trajectories
    from atommem.runtime import init_ray

    samples = train_samples(cfg)
    model_path = model_path_of(cfg)
    init_ray(cfg.cluster)
    requests = teacher_requests(cfg, samples)
    fleet = None
    scripted = scripted_teacher(cfg)
    if scripted is not None:
        policy, kwargs = scripted
    else:
        if cfg.engine.kind != "openai":
            raise UserError("sft.teacher: openai needs engine.kind: openai with engine.base_url of the teacher server")
        from atommem.engines.fleet import EngineFleet

        policy, kwargs, fleet = "model", {}, EngineFleet(cfg, model_path)
    try:
        with EnvRunnerGroup(cfg, policy, fleet.handles if fleet else [], model_path, policy_kwargs=kwargs,
                            num_runners=cfg.sft.teacher_workers or cfg.rollout.num_workers) as group:
            group.submit(requests)
            kept_by_id, rewards = {}, []
            for ref, summary in tqdm(group.results(), total=len(requests), desc="teacher episodes"):
                rewards.append(summary.reward)
                if summary.reward >= cfg.sft.min_reward:
                    kept_by_id[summary.episode_id] = ref
    finally:
        if fleet is not None:
            fleet.shutdown()
    # Episodes finish in an order that changes run to run; in request order the SFT data, and the seeded
    # batches drawn from it, are the same for a seed (they were not: greedy SFT 0.431 in one run, 0.208 in another).
    kept = [kept_by_id[r.episode_id] for r in requests if r.episode_id in kept_by_id]
    n_train = sum(r.episode_id in kept_by_id for r in requests[: cfg.sft.teacher_episodes])
    kept, val = kept[:n_train], kept[n_train:]
    path = write_trajectories(kept, sft_data_dir(cfg))
    if val:
        write_trajectories(val, path / VAL_DIR)
    elif (path / VAL_DIR).exists():  # an earlier collection's held-out episodes would be read as this one's
        shutil.rmtree(path / VAL_DIR)
    print(f"teacher: {len(requests)} episodes, mean reward {np.mean(rewards):.3f}, kept {len(kept)} (+{len(val)} held out) -> {path}")
    return path, kept, val


class SFTData:
    """Teacher trajectories as object refs, drawn `batch_size` per step in a resumable seeded order, and the
    held-out ones that validation scores (`val_refs`)."""

    def __init__(self, refs: list, batch_size: int, seed: int = 0, val_refs: Sequence = ()):
        if not refs:
            raise UserError("no SFT trajectories: the teacher kept none (lower sft.min_reward or check the teacher)")
        self.refs = refs
        self.val_refs = list(val_refs)
        self.batch_size = batch_size
        self.sampler = EpochSampler(len(refs), seed)

    @classmethod
    def from_path(cls, path: Path, batch_size: int, seed: int = 0) -> "SFTData":
        import ray

        from atommem.rollout.parquet import read_trajectories

        if not Path(path).exists():
            raise UserError(f"SFT data {path} does not exist: run `atommem collect-sft --config ...` first")
        val = Path(path) / VAL_DIR
        val_refs = [ray.put(t) for t in read_trajectories(val)] if val.is_dir() else []
        return cls([ray.put(t) for t in read_trajectories(path)], batch_size, seed, val_refs)

    def next_batch(self) -> list:
        return [self.refs[i] for i in self.sampler.take(self.batch_size)]


class SFTTrainer:
    """The learner group in SFT mode over `data`; `phase` names its rows in the run's metrics. With `mix` (the base
    stage's corpus), every step also trains on `pretrain.mix_rows` of its sequences."""

    def __init__(self, cfg: Config, model_path: str, data: SFTData, logger: RunLogger, phase: str = "sft",
                 mix: BaseCorpus | None = None):
        from atommem.learner.learner_group import LearnerGroup

        self.cfg, self.data, self.logger, self.phase, self.mix = cfg, data, logger, phase, mix
        self.learner = LearnerGroup(sft_learner_config(cfg), model_path, stage="sft")
        self.step = 0
        self.validation: dict[str, float] = {}  # the latest validate()
        self.validated_step: int | None = None  # the step it was taken at
        self.train_seconds = 0.0  # wall time of run()'s steps, validation not counted
        self.stopped_by = ""  # why the last run() ended: "steps", "time", "bar" (sft.until_full) or "signal"
        self.best: tuple[int, dict[str, float]] | None = None  # sft.keep_best: the step and validation of the best so far
        self.best_path = Path(cfg.trainer.run_dir) / f"{phase}_best"  # ...and its learner state

    def run(self, steps: int, seconds: float | None = None, until_bar: bool = False) -> int:
        """Train until step `steps` or for `seconds` of training time (validation not counted), whichever comes
        first, or until a SIGTERM/SIGINT (stopping.py) ends it after the step in flight; with `until_bar`, also at
        the first validation from step `sft.until_after` on that passes `sft.until_full` (`passes_bar`). Validates
        every `sft.val_every` steps and at the end when there are held-out episodes; returns the step reached."""
        from tqdm import tqdm

        t0 = time.monotonic()
        val_seconds = 0.0
        every = self.cfg.sft.val_every
        bar = tqdm(total=None if seconds is not None else max(0, steps - self.step), desc=self.phase, mininterval=2.0)
        metrics, logged = None, self.step
        until_bar = until_bar and self.cfg.sft.until_full is not None
        while True:
            self.stopped_by = self._cap_reached(steps, seconds, time.monotonic() - t0 - val_seconds)
            if self.stopped_by:
                break
            metrics = self.learner.update_sft(self._next_batch())
            self.step += 1
            bar.update(1)
            if self.step % 20 == 0:
                logged = self._log(metrics, t0)
                bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.3f}")
            if every and self.step % every == 0 and self.data.val_refs:
                v0 = time.monotonic()
                self.validate()
                val_seconds += time.monotonic() - v0
                if until_bar and self.step >= self.cfg.sft.until_after and self.passes_bar():
                    self.stopped_by = "bar"
                    break
        if metrics is not None and logged != self.step:  # the last step, however the loop ended
            self._log(metrics, t0)
        self.train_seconds += time.monotonic() - t0 - val_seconds
        bar.close()
        if self.data.val_refs and self.validated_step != self.step:
            self.validate()
        return self.step

    def _next_batch(self) -> list:
        batch = self.data.next_batch()
        if self.mix is not None and self.cfg.pretrain.mix_rows > 0:
            # documents only: a prompt restated beside SFT's rows says "after a prompt comes its chunk" where a
            # distractor turn says nothing (with them, seed 0's SFT left 0.67 of those turns alone; docs/experiments)
            rows = self.mix.rows(self.cfg.pretrain.mix_rows, step_rng(self.cfg.trainer.seed, "sft", self.step), prompt_share=0.0)
            batch += row_refs(rows, self.cfg.learner.num_learners)
        return batch

    def validate(self) -> dict[str, float]:
        """Teacher-forced accuracy on the held-out episodes, per turn state and teacher action; logged at this step."""
        self.validation = validation_metrics(self.learner.score_sft(self.data.val_refs))
        self.validated_step = self.step
        self.logger.log(self.step, self.validation, phase=self.phase)
        if self.cfg.sft.keep_best and (self.best is None or self.validation["val_full"] > self.best[1]["val_full"]):
            self.best = (self.step, self.validation)
            self.learner.save_checkpoint(self.best_path, self._state(), meta={"step": self.step, "val_full": self.validation["val_full"]})
        return self.validation

    def keep_best(self) -> int:
        """With sft.keep_best, after run(): rewind the learner (weights, optimizer, data position) to the best
        validation's step, whose validation becomes `validation`; returns that step."""
        if self.best is None:
            raise RuntimeError("sft.keep_best: no validation to keep, run() with held-out episodes first")
        step, validation = self.best
        if step != self.step:
            self.resume(self.best_path)
            if self.step != step:
                raise RuntimeError(f"{self.best_path} holds step {self.step}, the best validation step is {step}")
            self.validation, self.validated_step = validation, step
        return step

    def _cap_reached(self, steps: int, seconds: float | None, trained_s: float) -> str:
        """Which cap ends run() before the next step ("steps", "time" or "signal"), or "" to go on."""
        from atommem.stopping import stop_requested

        if self.step >= steps:
            return "steps"
        if seconds is not None and trained_s >= seconds:
            return "time"
        return "signal" if stop_requested() else ""

    def passes_bar(self) -> bool:
        """Whether the latest validation has val_full >= `sft.until_full` on every label of `sft.until_labels`."""
        sft = self.cfg.sft
        missing = [label for label in sft.until_labels if f"val_full/{label}" not in self.validation]
        if missing:
            held = sorted(k.split("/", 1)[1] for k in self.validation if k.startswith("val_full/"))
            raise UserError(f"sft.until_labels names {', '.join(missing)}, which no held-out teacher turn has; "
                            f"the labels there are: {', '.join(held)}")
        return all(self.validation[f"val_full/{label}"] >= sft.until_full for label in sft.until_labels)

    def _log(self, metrics: dict, t0: float) -> int:
        self.logger.log(self.step, {**metrics, "elapsed_s": time.monotonic() - t0}, phase=self.phase)
        return self.step

    def save(self, out: Path) -> Path:
        """Full state in `out/checkpoint` (to train on later), the HF model in `out/model`; returns the model dir."""
        self.learner.save_checkpoint(str(out / "checkpoint"), self._state())
        return self.learner.save_hf(str(out / "model"))

    def _state(self) -> dict:
        return {"sft_step": self.step, "sampler": self.data.sampler.state_dict()}

    def resume(self, checkpoint: Path) -> None:
        extra = self.learner.load_checkpoint(str(checkpoint))
        self.step = extra["sft_step"]
        self.data.sampler = EpochSampler.from_state(extra["sampler"])

    def shutdown(self) -> None:
        self.learner.shutdown()


def train_sft(cfg: Config) -> Path:
    """SFT on the collected teacher trajectories, after the base stage when `pretrain.steps` > 0 (its model in
    `<run_dir>/base/model`); writes `<run_dir>/sft/model` (HF dir) and its checkpoint."""
    from atommem.runtime import init_ray
    from atommem.stopping import stop_reason

    run_dir = Path(cfg.trainer.run_dir)
    model_path = model_path_of(cfg)
    init_ray(cfg.cluster)
    data = SFTData.from_path(sft_data_dir(cfg), cfg.sft.batch_size, cfg.trainer.seed)
    logger = RunLogger(run_dir, cfg, tensorboard=cfg.trainer.tensorboard, wandb=cfg.trainer.wandb)
    corpus = base_corpus(cfg, model_path) if cfg.pretrain.steps > 0 or cfg.pretrain.mix_rows > 0 else None
    model_path = str(pretrain_base(cfg, model_path, run_dir / "base" / "model", logger, corpus)[0])
    trainer = SFTTrainer(cfg, model_path, data, logger, mix=corpus)
    try:
        last = trainer.run(cfg.sft.steps, cfg.sft.time_budget_s, until_bar=True)
        if cfg.sft.keep_best:
            print(f"SFT keeps step {trainer.keep_best()} of {last}: its best validation")
        model = trainer.save(run_dir / "sft")
    finally:
        trainer.shutdown()
        logger.close()
    if stop_reason():
        print(f"SFT stopped by {stop_reason()} at step {trainer.step} of {cfg.sft.steps}")
    elif trainer.stopped_by == "bar":
        print(f"SFT passed sft.until_full ({cfg.sft.until_full}) on {', '.join(cfg.sft.until_labels)} at step {trainer.step}")
    print(f"SFT model: {model}")
    return model
