"""The base-model stage (`pretrain.*`): next-token training of a tiny random policy on its task's documents, each
restated, so that it arrives at SFT able to copy from its context (atommem/learner/pretrain.py says why).

`BaseStage` drives the learner group in its "base" stage; `pretrain_base` runs it and saves the model SFT starts
from. `atommem sft` and the demo call it before SFT when `pretrain.steps` > 0.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from atommem.config import Config
from atommem.learner.pretrain import PROMPT_RECALL_LABEL, RECALL_LABEL, BaseCorpus, read_prompts, step_rng
from atommem.tracking import RunLogger


def sft_learner_config(cfg: Config) -> Config:
    """`cfg` with SFT's learner: `sft.*`'s own CPUs, ZeRO stage and lr schedule where set (the base stage takes
    the CPUs and ZeRO stage, `base_learner_config`). SFT has the machine to itself, so it may use more threads than a learner sharing the
    CPUs with engines and env runners in GRPO, and a single CPU rank gains nothing from ZeRO-3's partitioning
    but pays for its hooks."""
    changes = {"num_cpus": cfg.sft.learner_cpus, "zero_stage": cfg.sft.zero_stage, "lr_schedule": cfg.sft.lr_schedule,
               "hold_steps": cfg.sft.hold_steps}
    changes = {k: v for k, v in changes.items() if v is not None}
    return replace(cfg, learner=replace(cfg.learner, **changes)) if changes else cfg


def base_learner_config(cfg: Config) -> Config:
    """SFT's learner (its CPUs, ZeRO stage) at a constant lr for the base stage: it stops on its recall probe, so
    a decay over its step cap would cut the lr of a slow seed still forming its copy. `sft.lr_schedule` is SFT's
    own (a cosine over it slowed seed 3's recall from 0.9 by step 700 to 0.6 at 1600)."""
    cfg = sft_learner_config(cfg)
    return replace(cfg, learner=replace(cfg.learner, lr_schedule="constant", hold_steps=0))


def base_corpus(cfg: Config, model_path: str, teacher_data: str | Path | None = None) -> BaseCorpus:
    """The training split's documents in the policy's tokens, and with `pretrain.prompt_share` the read prompts of
    the teacher episodes in `teacher_data` (default: sft.data's, so collect them first)."""
    from atommem.errors import UserError
    from atommem.models.loading import load_tokenizer
    from atommem.rollout.parquet import iter_trajectories
    from atommem.trainer.inputs import sft_data_dir, train_samples

    path = Path(teacher_data or sft_data_dir(cfg))
    if cfg.pretrain.prompt_share > 0 and not any(path.glob("part-*.parquet")):
        raise UserError(f"pretrain.prompt_share draws the base stage's rows from the teacher's prompts, but {path} holds "
                        "no teacher episodes: run `atommem collect-sft` first (the demo does), or set pretrain.prompt_share: 0")
    tokenizer = load_tokenizer(model_path)
    prompts = read_prompts(iter_trajectories(path), set(tokenizer.all_special_ids)) if cfg.pretrain.prompt_share > 0 else []
    return BaseCorpus(train_samples(cfg), tokenizer, cfg.pretrain.whole_share, cfg.env.chunk_by, prompts,
                      cfg.pretrain.prompt_share)


def row_refs(rows: list, ranks: int) -> list:
    """The rows as one object ref per learner rank (the group hands each rank its share of the refs)."""
    import ray

    return [ray.put(rows[r::ranks]) for r in range(ranks) if rows[r::ranks]]


def base_rows(cfg: Config, corpus: BaseCorpus, step: int) -> list:
    """The sequences of base step `step` (from 0): random strings repeated for the first `pretrain.repeat_steps`,
    the task's restated documents after; the same (seed, step) draws the same."""
    draw = corpus.repeat_rows if step < cfg.pretrain.repeat_steps else corpus.rows
    return draw(cfg.pretrain.batch_size, step_rng(cfg.trainer.seed, "base", step))


RECALL_PROBE_ROWS = 128  # rows of the recall probe: a 95% interval of about +-0.05 at 0.9


class BaseStage:
    """Up to `pretrain.steps` steps of `pretrain.batch_size` sequences on the learner group (SFT's learner settings),
    random strings repeated for the first `pretrain.repeat_steps`, the task's restated documents after,
    scoring the recall probe every `pretrain.eval_every` steps; with `pretrain.until_recall` it stops once the probe
    is that good (the copy has formed: more steps would only cost time)."""

    def __init__(self, cfg: Config, model_path: str, corpus: BaseCorpus, logger: RunLogger):
        from atommem.learner.learner_group import LearnerGroup

        self.cfg, self.corpus, self.logger = cfg, corpus, logger
        self.learner = LearnerGroup(base_learner_config(cfg), model_path, stage="base")
        probe = corpus.recall_rows(RECALL_PROBE_ROWS, step_rng(cfg.trainer.seed, "recall", 0))
        if corpus.prompts:
            probe += corpus.prompt_recall_rows(RECALL_PROBE_ROWS, step_rng(cfg.trainer.seed, "prompt_recall", 0))
        self.probe_refs = row_refs(probe, cfg.learner.num_learners)
        # the probe `until_recall` reads: the copy inside the prompts when the stage trains on them
        self.stop_label = PROMPT_RECALL_LABEL if corpus.prompts else RECALL_LABEL
        self.step = 0
        self.train_seconds = 0.0
        self.recall: list[list[float]] = []  # [step, val_full/<stop_label>] of every evaluation

    def run(self) -> int:
        from tqdm import tqdm

        from atommem.stopping import stop_requested

        p = self.cfg.pretrain
        t0 = time.monotonic()
        eval_seconds = 0.0
        bar = tqdm(total=p.steps, desc="base", mininterval=2.0)
        while self.step < p.steps and not stop_requested():
            rows = base_rows(self.cfg, self.corpus, self.step)
            metrics = self.learner.update_sft(row_refs(rows, self.cfg.learner.num_learners))
            self.step += 1
            bar.update(1)
            if self.step % 20 == 0 or self.step == p.steps:
                self.logger.log(self.step, {**metrics, "elapsed_s": time.monotonic() - t0}, phase="base")
                bar.set_postfix(loss=f"{metrics['loss']:.3f}")
            if p.eval_every and (self.step % p.eval_every == 0 or self.step == p.steps):
                e0 = time.monotonic()
                recall = self.evaluate()
                eval_seconds += time.monotonic() - e0
                if p.until_recall is not None and recall >= p.until_recall:
                    break
        bar.close()
        self.train_seconds = time.monotonic() - t0 - eval_seconds
        return self.step

    def evaluate(self) -> float:
        """The recall probes (teacher-forced, whole sentence right), logged at this step; returns `stop_label`'s."""
        from atommem.learner.sft import validation_metrics

        scores = validation_metrics(self.learner.score_sft(self.probe_refs))
        recall = scores[f"val_full/{self.stop_label}"]
        self.recall.append([self.step, recall])
        labels = (RECALL_LABEL, PROMPT_RECALL_LABEL) if self.stop_label == PROMPT_RECALL_LABEL else (RECALL_LABEL,)
        self.logger.log(self.step, {f"val_{kind}/{label}": scores[f"val_{kind}/{label}"] for label in labels for kind in ("full", "first")},
                        phase="base")
        return recall

    def save(self, out: Path) -> Path:
        return Path(self.learner.save_hf(str(out)))

    def shutdown(self) -> None:
        self.learner.shutdown()


def pretrain_base(cfg: Config, model_path: str, out: Path, logger: RunLogger,
                  corpus: BaseCorpus | None = None) -> tuple[Path, dict]:
    """The model SFT starts from, and what the base stage did: `model_path` itself and {} when `pretrain.steps` is 0,
    else the base stage's model in `out` and {"steps", "train_seconds", "recall": [[step, recall probe]]}."""
    if cfg.pretrain.steps <= 0:
        return Path(model_path), {}
    stage = BaseStage(cfg, model_path, corpus or base_corpus(cfg, model_path), logger)
    try:
        stage.run()
        summary = {"steps": stage.step, "train_seconds": stage.train_seconds, "recall": stage.recall,
                   "recall_probe": stage.stop_label}
        return stage.save(out), summary
    finally:
        stage.shutdown()
