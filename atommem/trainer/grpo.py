"""GRPO training: the rollout system (an `EngineFleet` + an autoscaled `RolloutPool` of EnvRunners) joined
to the learner group.

A step plays `grpo.batch_groups` samples x `grpo.group_size` rollouts, computes advantages per trajectory
(grouped by uid) from the small summaries, ships (trajectory ref, advantage) pairs to the learner group,
then broadcasts the new weights to every engine. `trainer.mode: async` keeps the next batch's rollouts
running while the learner steps; trajectories older than `trainer.max_staleness` versions are dropped
and replaced (in sync mode every trajectory must come from the current weights). `GRPOTrainer.run()` is
the whole loop (validation or dev curve, checkpoints, time budget, SIGTERM); `atommem train` and the demo both
call it.
Everything lands in `trainer.run_dir`: config, metrics.jsonl, TensorBoard, checkpoints, models.

Keeping the best step: given a validation split (`data.val`, held out from train and dev), run() scores it
greedily at the start and every `trainer.eval_every` steps (and after the last step), saves the learner's
state whenever the validation EM beats every earlier one (`run_dir/grpo/best`), and `keep_best()` puts
those weights back on the learner and the engines. Selecting on the dev split instead would bias the
comparison the demo makes on it: the kept step would be the one dev happened to like.

Checkpoints (`checkpoints.py`): `run_dir/checkpoints/step-N`, written atomically (learner shards and RNG,
the trainer state: step, weight version, data position, driver RNG), the newest `trainer.keep_checkpoints`
kept. `--resume` continues from the newest complete one, refused when the config differs in a key it
depends on; each resumed step draws the samples and trains the weight version an uninterrupted run would.
A checkpoint's manifest holds the sha256 of its weights; a resume checks the learner's against it and
every engine's (HF) against the learner's.

Replay: an episode samples from its own seed (`episode_seed`: the run's seed, the step, the draw's index;
each turn adds its own, policies/model.py) and the learner takes a batch's groups in uid order, so in
`trainer.mode: sync` with `grpo.tis_cap` unset a resumed run on the HF engine ends with the uninterrupted
run's weights bit for bit (tests/test_crash_resume.py: one learner rank, CPU). It rests on the engine's
logits depending on what they are batched with only in the last bits (HF on CPU: logprobs within 5e-7),
which changes a sampled token only at a near-tie, and on the loss not reading the engine's logprobs. So it
does not hold in async mode (timing decides which weights a turn is sampled from), with `grpo.tis_cap`
(the engine's batch-dependent logprobs enter the loss), nor is it promised on vLLM (batch-variant
kernels, chunked prefill and the prefix cache: a near-tie may go the other way) or with several ranks or
GPUs (reduction order), where it was not checked.
"""

from __future__ import annotations

import hashlib
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from atommem.checkpoints import Checkpoint, CheckpointManager
from atommem.config import Config
from atommem.data.sampler import EpochSampler
from atommem.data.schema import Sample
from atommem.errors import UserError
from atommem.eval.evaluate import EvalResult
from atommem.eval.scores import EpisodeScore, summarize
from atommem.tracking import RunLogger
from atommem.trainer.inputs import dev_samples, model_path_of, train_samples, val_samples


def rollout_record(summaries: list, length_buckets: list[int]) -> dict:
    """Training-log scalars of one batch of rollouts (TrajectorySummary objects), in the evaluation's
    score schema: EM, reward mean/spread, turns, generated tokens, action rates as `rate_<kind>`."""
    scores = summarize([EpisodeScore.of(s) for s in summaries], length_buckets)
    rewards = [s.reward for s in summaries]
    out = {
        "reward_mean": float(np.mean(rewards)) if rewards else 0.0,
        "reward_std": float(np.std(rewards)) if rewards else 0.0,
        "em": scores["em"],
        "episodes": scores["episodes"],
        "turns_per_episode": scores["mean_turns"],
        "generated_tokens": sum(s.generated_tokens for s in summaries),
    }
    out.update({f"rate_{k}": v for k, v in scores["action_rates"].items()})
    out.update(state_rate_record(scores["state_action_rates"]))
    return out


def state_rate_record(state_rates: dict[str, dict[str, float]], prefix: str = "rate_") -> dict:
    """Per-state action rates flattened for the training log: `rate_<state>_<kind>` (e.g. rate_revision_update)."""
    return {f"{prefix}{state}_{k}": v for state, rates in state_rates.items() for k, v in rates.items() if k != "turns"}


def eval_record(result: EvalResult, split: str = "dev") -> dict:
    """`<split>_*` scalars of an evaluation, for the run's metrics (EM, F1, action rates)."""
    s = result.summary
    return {f"{split}_em": s["em"], f"{split}_f1": s["f1"], **{f"{split}_rate_{k}": v for k, v in s["action_rates"].items()},
            **state_rate_record(s["state_action_rates"], prefix=f"{split}_rate_")}


def best_step(val_em: list[list[float]]) -> tuple[int, float]:
    """(step, EM) of the highest validation EM in `val_em` ([step, EM] pairs in step order); the earliest on a
    tie (the fewer steps past a peak, the less drift)."""
    if not val_em:
        raise ValueError("no validation EM recorded: run() with a validation split first")
    step, em = max(val_em, key=lambda pair: (pair[1], -pair[0]))
    return int(step), em


def episode_seed(seed: int, step: int, draw: int) -> int:
    """The seed of the episodes of one drawn sample (rollout g of its group adds g): a hash of the run's seed,
    the step and the draw's index in the sampler's sequence (unique per draw, refills included), never of
    timing, of the runner or engine that plays it, or of how many resumes came before (the uid's nonce
    counts those), so a resumed run samples what an uninterrupted one would. 40 bits: the policy derives
    each turn's seed as `seed * 2**16 + turn` (policies/model.py), and seeds must fit 64 bits."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{step}:{draw}".encode()).digest()[:5], "big")


@dataclass
class GRPOState:
    step: int = 0
    version: int = 0
    train_seconds: float = 0.0  # wall time of rollouts + updates + syncs (evaluation excluded)
    sampler: dict = field(default_factory=dict)
    val_em: list = field(default_factory=list)  # [step, validation EM] of every validation; step 0 is the starting model


class GRPOTrainer:
    """Owns the engine fleet, the rollout pool, the evaluation runners and the learner group of one GRPO run."""

    def __init__(self, cfg: Config, model_path: str, logger: RunLogger):
        from atommem.engines.fleet import EngineFleet
        from atommem.learner.learner_group import LearnerGroup
        from atommem.rollout.buffer import GroupBuffer
        from atommem.rollout.env_runner_group import EnvRunnerGroup
        from atommem.rollout.pool import RolloutPool

        if cfg.trainer.mode == "async" and cfg.trainer.max_staleness < 1:
            raise UserError("trainer.mode: async plays the next batch during the update: set trainer.max_staleness >= 1")
        self.cfg = cfg
        self.logger = logger
        self.model_path = model_path
        self.train = train_samples(cfg)
        self.fleet = self.learner = self.pool = self.eval_runners = None
        try:
            # Engines and learners start at once: each spends its start importing and loading, apart.
            with ThreadPoolExecutor(2, thread_name_prefix="grpo-start") as pool:
                starting = [pool.submit(EngineFleet, cfg, model_path), pool.submit(LearnerGroup, cfg, model_path, stage="grpo")]
            self.fleet, self.learner = (None if f.exception() else f.result() for f in starting)
            for f in starting:
                if f.exception() is not None:
                    raise f.exception()
            r = cfg.rollout
            first = min(max(r.num_workers, r.min_workers, 1), r.max_workers)
            self.pool = RolloutPool(EnvRunnerGroup(cfg, "model", self.fleet.handles, model_path, num_runners=first), r)
        except BaseException:
            self.shutdown()
            raise
        self.buffer = GroupBuffer(cfg.grpo.group_size, dynamic_filter=cfg.grpo.dynamic_filter, keep=self._fresh)
        self.state = GRPOState()
        self.sampler = EpochSampler(len(self.train), cfg.trainer.seed)
        self.checkpoints = CheckpointManager(Path(cfg.trainer.run_dir) / "checkpoints", cfg.trainer.keep_checkpoints, cfg)
        self.stopped_by = ""  # the signal that ended run() early ("" when it ran to its end)
        self._sample_of: dict[str, str] = {}  # uid -> sample id, for the step's record
        self.resume_digests: dict = {}  # weights sha256 of the checkpoint, the learner and each engine at the last resume
        self.best_path = Path(cfg.trainer.run_dir) / "grpo" / "best"  # learner state of the best validation step
        self.resumes = 0

    # -- rollouts
    def _submit(self, num_groups: int) -> None:
        from atommem.rollout.records import make_requests

        first = self.sampler.epoch * self.sampler.size + self.sampler.pos  # the index of the next draw
        picked = [(first + k, self.train[i]) for k, i in enumerate(self.sampler.take(num_groups))]
        # A nonce per submission keeps uids and episode ids unique when a sample comes round again, and
        # when a resume onto this trainer's runners plays a step again.
        nonce = f"r{self.resumes}v{self.state.version}s{self.state.step}e{self.sampler.epoch}p{self.sampler.pos}"
        seen: set[str] = set()
        requests = [
            request
            for draw, sample in picked if not (sample.id in seen or seen.add(sample.id))
            for request in make_requests([sample], self.cfg.grpo.group_size, nonce=nonce,
                                         seed=episode_seed(self.cfg.trainer.seed, self.state.step, draw))
        ]
        self._sample_of.update((r.uid, r.sample.id) for r in requests)
        self.pool.submit(requests)

    def _fresh(self, summaries: list) -> bool:
        """A group is usable when every turn of it is recent enough: from the current weights in sync mode
        (on-policy), within `trainer.max_staleness` versions in async mode."""
        allowed = self.cfg.trainer.max_staleness if self.cfg.trainer.mode == "async" else 0
        return min(s.min_weight_version for s in summaries) >= self.state.version - allowed

    def _gather(self) -> tuple[list[list], dict]:
        """Complete groups for one step; groups dropped (no reward variance, stale) are replaced. Freshness
        is checked when a group completes and again when it is taken: one left over from an earlier step
        may have gone stale since."""
        B = self.cfg.grpo.batch_groups
        dropped, stale = self.buffer.dropped_groups, 0
        groups: list[list] = []
        while len(groups) < B:
            while self.buffer.num_complete < B - len(groups):
                if self.pool.in_flight() + self.pool.pending() == 0:
                    self._submit(B - len(groups) - self.buffer.num_complete)
                for ref, summary in self.pool.results():
                    self.buffer.add(ref, summary)
                    if self.buffer.num_complete >= B - len(groups):
                        break
            for group in self.buffer.pop_groups(B - len(groups)):
                if self._fresh([s for _, s in group]):
                    groups.append(group)
                else:
                    stale += 1
        return groups, {"groups_dropped": self.buffer.dropped_groups - dropped + stale}

    # -- one step
    def step(self) -> dict:
        """One GRPO step: gather `grpo.batch_groups` complete, fresh groups of rollouts, compute advantages per
        trajectory, one learner update, broadcast the new weights. Returns the step's metrics record."""
        from atommem.learner.grpo import group_advantages
        from atommem.metrics import get_metrics

        cfg = self.cfg
        t0 = time.monotonic()
        groups, extra = self._gather()
        groups.sort(key=lambda group: group[0][1].uid)  # the learner's row order, not the order groups completed in
        if cfg.trainer.mode == "async":
            self._submit(cfg.grpo.batch_groups)  # next batch plays while the learner steps
        t_roll = time.monotonic() - t0
        entries = [e for g in groups for e in g]
        summaries = [s for _, s in entries]
        advantages = group_advantages([s.reward for s in summaries], [s.uid for s in summaries],
                                      std_normalize=cfg.grpo.std_normalize)
        expected_rows = sum(s.num_turns for s in summaries)
        t1 = time.monotonic()
        with self.fleet.weights_changing():  # an engine restarted meanwhile is caught up after the sync
            metrics = self.learner.update_grpo([(ref, float(a)) for (ref, _), a in zip(entries, advantages)])
            if metrics.get("rows_consumed", expected_rows) != expected_rows:
                raise RuntimeError(f"learner consumed {metrics['rows_consumed']} rows, the batch has {expected_rows}")
            t_learn = time.monotonic() - t1
            self.state.version += 1
            sync = self.fleet.sync_weights(self.learner, self.state.version)
        self.state.step += 1
        step_s = time.monotonic() - t0
        self.state.train_seconds += step_s
        record = {
            **rollout_record(summaries, cfg.eval.length_buckets),
            **{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
            **extra,
            "rollout_s": t_roll,
            "learner_s": t_learn,
            "sync_s": sync["seconds"],
            "sync_bytes": sync["bytes"],
            "step_s": step_s,
            "train_seconds": self.state.train_seconds,
            "weight_version": self.state.version,
            "policy_version": min(s.min_weight_version for s in summaries),  # the oldest weights this batch came from
            "staleness": self.state.version - 1 - min(s.min_weight_version for s in summaries),
            "data_epoch": self.sampler.epoch,  # where the sampler stands once this step's samples are drawn
            "data_pos": self.sampler.pos,
            "samples": [self._sample_of.pop(group[0][1].uid) for group in groups],  # trained on, in the learner's order
            "rollout_workers": self.pool.num_workers,
        }
        get_metrics().learner_step(t_learn, int(metrics.get("tokens", 0)), record)
        get_metrics().weight_sync(record["sync_s"], int(record["sync_bytes"]))
        get_metrics().staleness(record["staleness"])
        return record

    # -- evaluation on the live engines, through the one evaluation path
    def evaluate(self, samples: list[Sample], tag: str) -> EvalResult:
        """Score the current weights on `samples` (greedy unless `sampling.eval_temperature`), on runners
        of their own beside the rollout pool."""
        from atommem.eval.evaluate import evaluation_runners, run_eval

        if self.eval_runners is None:
            self.eval_runners = evaluation_runners(self.cfg, "atommem", self.model_path, self.fleet.handles)
        return run_eval(self.eval_runners, self.cfg, samples, "atommem", tag=tag)

    # -- the loop
    def run(self, dev: list[Sample] | None = None, on_step: Callable[[dict], None] | None = None,
            val: list[Sample] | None = None) -> None:
        """Step until `trainer.steps` or `trainer.time_budget_s` of training time; every `trainer.eval_every`
        steps score `val` (logged as val_*; the best step's learner state is saved, see keep_best) and `dev`
        (dev_*: a curve to watch, never a selection), every `trainer.checkpoint_every` save. `val` is also
        scored before the first step and after the last. A SIGTERM/SIGINT (see stopping.py) ends the loop
        after the step in flight, with a checkpoint."""
        from atommem.stopping import stop_reason, stop_requested

        from tqdm import tqdm

        cfg = self.cfg
        bar = tqdm(total=cfg.trainer.steps, initial=self.state.step, desc="grpo")
        scaled = len(self.pool.history)
        if val and not self.state.val_em:
            self.logger.log(self.state.step, self._validate(val), phase="grpo")  # the starting model is a candidate
        while self.state.step < cfg.trainer.steps:
            if cfg.trainer.time_budget_s is not None and self.state.train_seconds >= cfg.trainer.time_budget_s:
                break
            record = self.step()
            step = self.state.step
            self.pool.autoscale()  # runners idle during the update and sync count towards retiring them
            if cfg.trainer.eval_every and step % cfg.trainer.eval_every == 0 and (val or dev):
                if val:
                    record.update(self._validate(val))
                if dev:
                    record.update(eval_record(self.evaluate(dev, f"s{step}")))
                self.pool.autoscale()
            self.logger.log(step, record, phase="grpo")
            for event in self.pool.workers_over_time()[scaled:]:
                self.logger.log(step, event, phase="rollout_pool")
                print(f"[grpo] rollout workers {event['action']}: {event['workers']} "
                      f"(pending {event['pending']}, in flight {event['in_flight']})", flush=True)
            scaled = len(self.pool.history)
            if on_step is not None:
                on_step(record)
            bar.update(1)
            bar.set_postfix(reward=f"{record['reward_mean']:.3f}", kl=f"{record.get('kl', 0):.4f}")
            stop = stop_requested()
            if stop or (cfg.trainer.checkpoint_every and step % cfg.trainer.checkpoint_every == 0):
                path = self.save()
            if stop:
                self.stopped_by = stop_reason()
                print(f"[grpo] {self.stopped_by}: stopped after step {step}; checkpoint {path} "
                      "(continue with --resume)", flush=True)
                break
        bar.close()
        if val and not self.stopped_by and self.state.val_em[-1][0] != self.state.step:
            self.logger.log(self.state.step, self._validate(val), phase="grpo")  # the last step is a candidate too

    def _validate(self, val: list[Sample]) -> dict:
        """Score `val` with the current weights (greedy, the one evaluation path); when its EM beats every
        earlier validation, save the learner's state as the best. Returns the val_* record."""
        result = self.evaluate(val, f"val-s{self.state.step}")
        improved = not self.state.val_em or result.em > best_step(self.state.val_em)[1]
        self.state.val_em.append([self.state.step, result.em])
        if improved:
            self.learner.save_checkpoint(self.best_path, {"step": self.state.step, "version": self.state.version},
                                         meta={"step": self.state.step, "val_em": result.em})
        return {**eval_record(result, "val"), "val_best_step": best_step(self.state.val_em)[0]}

    def keep_best(self) -> int:
        """After run() with a validation split: put the best validation step's weights (saved when it was
        scored) on the learner and the engines, and return that step. The trainer is done training then."""
        step, _ = best_step(self.state.val_em)
        if step != self.state.step:
            with self.fleet.weights_changing():
                saved = self.learner.load_checkpoint(self.best_path)
                if saved["step"] != step:
                    raise RuntimeError(f"{self.best_path} holds step {saved['step']}, the best validation step is {step}")
                self.fleet.sync_weights(self.learner, saved["version"], rewind=True)
        return step

    # -- checkpoints
    def save(self) -> Path:
        """Checkpoint the current step atomically into `run_dir/checkpoints/step-N`, then apply retention."""
        self.state.sampler = self.sampler.state_dict()
        extra = {"grpo_state": self.state.__dict__, "py_rng": random.getstate(), "np_rng": np.random.get_state()}
        meta = self.checkpoints.meta(self.state.step, weight_version=self.state.version, sampler=self.state.sampler,
                                     weights_sha256=self.learner.weights_digest())
        path = self.learner.save_checkpoint(self.checkpoints.path(self.state.step), extra, meta=meta)
        self.checkpoints.prune()
        return path

    def resume(self, path: Path) -> None:
        """Continue from the complete checkpoint at `path` (a torn one, or one written under a config that
        differs in a key it depends on, is refused); the engines get its weights and version. The weights are
        checked by digest: the learner's against the one saved in the manifest, every engine's against the
        learner's (`resume_digests`); a mismatch raises."""
        ckpt = Checkpoint.open(path)
        self.checkpoints.check_compatible(ckpt)
        with self.fleet.weights_changing():
            extra = self.learner.load_checkpoint(str(path))
            self.state = GRPOState(**extra["grpo_state"])
            self.fleet.sync_weights(self.learner, self.state.version, rewind=True)
            digests = {"checkpoint": ckpt.manifest.get("weights_sha256"), "learner": self.learner.weights_digest(),
                       "engines": self.fleet.weights_digests()}
        if digests["checkpoint"] not in (None, digests["learner"]):  # None: written before digests were saved
            raise RuntimeError(f"{path}: the learner loaded weights of sha256 {digests['learner']}, the checkpoint "
                               f"saved {digests['checkpoint']}")
        wrong = [i for i, d in enumerate(digests["engines"]) if d not in (None, digests["learner"])]  # None: not reported
        if wrong:
            raise RuntimeError(f"after resuming {path}, engines {wrong} hold other weights than the learner: {digests}")
        self.resume_digests = digests
        self.sampler = EpochSampler.from_state(self.state.sampler)
        random.setstate(extra["py_rng"])
        np.random.set_state(extra["np_rng"])
        self.resumes += 1

    def shutdown(self) -> None:
        for part in (self.pool, self.eval_runners, self.learner, self.fleet):
            if part is not None:
                part.shutdown()


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of the run in `run_dir` (incomplete ones are named in a warning)."""
    ckpt = CheckpointManager(Path(run_dir) / "checkpoints").latest()
    return ckpt.path if ckpt else None


def train_grpo(cfg: Config, resume: bool = False) -> Path:
    """`atommem train`: GRPO from `model.path` (typically the SFT model); returns the final HF model dir, or
    the checkpoint written when a SIGTERM/SIGINT stopped the run early."""
    from atommem.runtime import init_ray

    run_dir = Path(cfg.trainer.run_dir)
    checkpoints = CheckpointManager(run_dir / "checkpoints", cfg.trainer.keep_checkpoints, cfg)
    # Decided before any actor starts, so a refused start costs nothing.
    if resume:
        ckpt = checkpoints.latest()
        if ckpt is None:
            raise UserError(f"--resume: no complete checkpoint under {checkpoints.root}")
        checkpoints.check_compatible(ckpt)
    elif checkpoints.scan()[0]:
        raise UserError(f"{checkpoints.root} holds checkpoints of an earlier run: continue it with --resume, "
                        "or start this one in another trainer.run_dir")
    model_path = model_path_of(cfg)
    init_ray(cfg.cluster)
    logger = RunLogger(run_dir, cfg, tensorboard=cfg.trainer.tensorboard, wandb=cfg.trainer.wandb)
    # With a validation split GRPO scores it and keeps its best step; dev is then not read at all.
    val = val_samples(cfg) if cfg.data.val is not None else None
    dev = dev_samples(cfg) if cfg.trainer.eval_every and val is None else None
    trainer = GRPOTrainer(cfg, model_path, logger)
    try:
        if resume:
            trainer.resume(ckpt.path)
            print(f"resumed from {ckpt.path} at step {trainer.state.step} (weight version {trainer.state.version})")
            d = trainer.resume_digests
            print(f"resumed weights sha256: checkpoint {d['checkpoint']}, learner {d['learner']}, "
                  f"engines {', '.join(map(str, d['engines']))}")
        trainer.run(dev, val=val)
        if trainer.stopped_by:
            out = checkpoints.path(trainer.state.step)
        else:
            if val:
                kept = trainer.keep_best()
                print(f"kept step {kept} of {trainer.state.step}: validation EM per step "
                      f"{', '.join(f'{s}: {em:.3f}' for s, em in trainer.state.val_em)}")
            out = trainer.learner.save_hf(str(run_dir / "grpo" / "model"))
    finally:
        trainer.shutdown()
        logger.close()
    print(f"GRPO {'checkpoint' if trainer.stopped_by else 'model'}: {out}")
    return out
