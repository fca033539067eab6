"""What a training run starts from: the model directory and the train/dev samples its config names."""

from __future__ import annotations

from atommem.config import Config
from atommem.data.schema import Sample, read_samples


def model_path_of(cfg: Config) -> str:
    """`model.path`, built first when `model.tiny` is set and it is missing."""
    from atommem.models.tiny import ensure_model

    return str(ensure_model(cfg.model, cfg.data.synth))


def train_samples(cfg: Config) -> list[Sample]:
    """The training split (synthesised first when the config says so and it is missing)."""
    from atommem.data.prepare import prepare

    return read_samples(prepare(cfg)["train"])


def dev_samples(cfg: Config) -> list[Sample]:
    """The first `data.dev_samples` of the dev split (all when unset)."""
    from atommem.data.prepare import prepare

    return read_samples(prepare(cfg)["dev"], limit=cfg.data.dev_samples)
