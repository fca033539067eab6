"""What a training run starts from: its model directory, its train/dev/validation samples and teacher episodes."""

from __future__ import annotations

from pathlib import Path

from atommem.config import Config, ConfigError
from atommem.data.schema import Sample, read_samples
from atommem.errors import DataError


def model_path_of(cfg: Config) -> str:
    """`model.path`, built first when `model.tiny` is set and it is missing."""
    from atommem.models.tiny import ensure_model

    return str(ensure_model(cfg.model, cfg.data.synth))


def sft_data_dir(cfg: Config) -> Path:
    """Where the teacher's episodes are (`sft.data`, or the run dir's `sft_data`)."""
    return Path(cfg.sft.data) if cfg.sft.data else Path(cfg.trainer.run_dir) / "sft_data"


def train_samples(cfg: Config) -> list[Sample]:
    """The training split (synthesised first when the config says so and it is missing)."""
    from atommem.data.prepare import prepare

    return read_samples(prepare(cfg)["train"])


def dev_samples(cfg: Config) -> list[Sample]:
    """The first `data.dev_samples` of the dev split (all when unset)."""
    from atommem.data.prepare import prepare

    return read_samples(prepare(cfg)["dev"], limit=cfg.data.dev_samples)


def val_samples(cfg: Config) -> list[Sample]:
    """The first `data.val_samples` of the validation split GRPO selects its kept step on. It must share no
    sample with train or dev, compared by content (documents and questions), not by id: a validation sample
    that is also a dev sample would let the selection see the data the result is scored on."""
    from atommem.data.prepare import prepare

    if cfg.data.val is None:
        raise ConfigError("data.val is not set: give a Parquet dir for the validation split GRPO keeps its best step on "
                          "(synthesised when missing), apart from data.train and data.dev")
    paths = prepare(cfg)
    val = read_samples(paths["val"], limit=cfg.data.val_samples)
    keys = {_content(s): s.id for s in val}
    for split, samples in (("train", read_samples(paths["train"])), ("dev", read_samples(paths["dev"], limit=cfg.data.dev_samples))):
        shared = [(keys[k], s.id) for s in samples if (k := _content(s)) in keys]
        if shared:
            raise DataError(f"data.val ({paths['val']}) and data.{split} share {len(shared)} samples by content "
                            f"(e.g. val {shared[0][0]} = {split} {shared[0][1]}): the validation split must be held out from both")
    return val


def _content(sample: Sample) -> tuple:
    return (tuple((d.title, d.text) for d in sample.documents),
            tuple((q.question, tuple(q.answers)) for q in sample.questions))
