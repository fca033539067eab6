"""The base-model stage (`pretrain.*`): next-token training of a tiny random policy on its task's documents, each
restated, so that it arrives at SFT able to copy from its context (atommem/learner/pretrain.py says why).

`BaseStage` drives the learner group in its "base" stage; `pretrain_base` runs it and saves the model SFT starts
from. `atommem sft` and the demo call it before SFT when `pretrain.steps` > 0.
"""

from __future__ import annotations

import time
from pathlib import Path

from atommem.config import Config
from atommem.learner.pretrain import BaseCorpus, step_rng
from atommem.tracking import RunLogger


def base_corpus(cfg: Config, model_path: str) -> BaseCorpus:
    """The training split's documents in the policy's tokens."""
    from atommem.models.loading import load_tokenizer
    from atommem.trainer.inputs import train_samples

    return BaseCorpus(train_samples(cfg), load_tokenizer(model_path))


def row_refs(rows: list, ranks: int) -> list:
    """The rows as one object ref per learner rank (the group hands each rank its share of the refs)."""
    import ray

    return [ray.put(rows[r::ranks]) for r in range(ranks) if rows[r::ranks]]


class BaseStage:
    """`pretrain.steps` steps of `pretrain.batch_size` sequences on the learner group (SFT's learner settings)."""

    def __init__(self, cfg: Config, model_path: str, corpus: BaseCorpus, logger: RunLogger):
        from atommem.learner.learner_group import LearnerGroup
        from atommem.trainer.sft import sft_learner_config

        self.cfg, self.corpus, self.logger = cfg, corpus, logger
        self.learner = LearnerGroup(sft_learner_config(cfg), model_path, stage="base")
        self.step = 0
        self.train_seconds = 0.0

    def run(self) -> int:
        from tqdm import tqdm

        from atommem.stopping import stop_requested

        p = self.cfg.pretrain
        t0 = time.monotonic()
        bar = tqdm(total=p.steps, desc="base", mininterval=2.0)
        while self.step < p.steps and not stop_requested():
            rows = self.corpus.rows(p.batch_size, step_rng(self.cfg.trainer.seed, "base", self.step))
            metrics = self.learner.update_sft(row_refs(rows, self.cfg.learner.num_learners))
            self.step += 1
            bar.update(1)
            if self.step % 20 == 0 or self.step == p.steps:
                self.logger.log(self.step, {**metrics, "elapsed_s": time.monotonic() - t0}, phase="base")
                bar.set_postfix(loss=f"{metrics['loss']:.3f}")
        bar.close()
        self.train_seconds = time.monotonic() - t0
        return self.step

    def save(self, out: Path) -> Path:
        return Path(self.learner.save_hf(str(out)))

    def shutdown(self) -> None:
        self.learner.shutdown()


def pretrain_base(cfg: Config, model_path: str, out: Path, logger: RunLogger, corpus: BaseCorpus | None = None) -> Path:
    """The model SFT starts from: `model_path` itself when `pretrain.steps` is 0, else the base stage's model in `out`."""
    if cfg.pretrain.steps <= 0:
        return Path(model_path)
    stage = BaseStage(cfg, model_path, corpus or base_corpus(cfg, model_path), logger)
    try:
        stage.run()
        return stage.save(out)
    finally:
        stage.shutdown()
