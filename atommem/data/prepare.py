"""Make sure the datasets a config names exist: synthesise the missing ones from `cfg.data.synth`.

Split sizes and seeds (chosen so splits never share a generator stream):
- train: `data.synth.num_samples` samples, seed `data.synth.seed`;
- dev:   `data.dev_samples` samples (default: a tenth of train, at least 1), seed + DEV_SEED_OFFSET;
- test (only when `data.test` is set): as many as dev, seed + TEST_SEED_OFFSET;
- val (only when `data.val` is set): `data.val_samples` (default: as many as dev), seed + VAL_SEED_OFFSET.
An existing path is kept as is (its first sample is read to check it), so real datasets built with
`atommem data build` are used untouched; one this module synthesised with other settings than the
config's is an error (silently training on stale data after editing `data.synth` is worse).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from atommem.config import Config, ConfigError, SynthConfig
from atommem.data.output import INFO_FILE, write_dataset
from atommem.data.schema import iter_samples
from atommem.errors import DataError

DEV_SEED_OFFSET = 1000
TEST_SEED_OFFSET = 2000
VAL_SEED_OFFSET = 3000


def split_plan(cfg: Config) -> dict[str, tuple[int, int]]:
    """split -> (num_samples, seed) for every split the config names."""
    synth = cfg.data.synth
    n_dev = cfg.data.dev_samples if cfg.data.dev_samples is not None else max(1, synth.num_samples // 10)
    plan = {"train": (synth.num_samples, synth.seed), "dev": (n_dev, synth.seed + DEV_SEED_OFFSET)}
    if cfg.data.test is not None:
        plan["test"] = (n_dev, synth.seed + TEST_SEED_OFFSET)
    if cfg.data.val is not None:
        n_val = cfg.data.val_samples if cfg.data.val_samples is not None else n_dev
        plan["val"] = (n_val, synth.seed + VAL_SEED_OFFSET)
    return plan


def prepare(cfg: Config) -> dict[str, Path]:
    """Paths of train, dev (and test when set); missing ones are synthesised first."""
    from atommem.data.synthetic import generate_synthetic

    for key in ("train", "dev"):
        if getattr(cfg.data, key) is None:
            raise ConfigError(f"data.{key} is not set: give a Parquet directory (it is synthesised when missing)")
    out: dict[str, Path] = {}
    for split, (n, seed) in split_plan(cfg).items():
        path = Path(getattr(cfg.data, split))
        synth = {**dataclasses.asdict(cfg.data.synth), "num_samples": n, "seed": seed}
        if path.exists():
            if next(iter_samples(path), None) is None:
                raise DataError(f"data.{split}: {path} exists but holds no samples (delete it to re-synthesise)")
            _check_synthesised_with(path, split, synth)
        else:
            if n < 1:
                raise ConfigError(f"cannot synthesise {n} {split} samples (data.synth.num_samples / data.dev_samples)")
            samples = generate_synthetic(cfg.data.synth, n=n, seed=seed)
            write_dataset(samples, path, info={"source": "synthetic", "split": split, "synth": synth})
        out[split] = path
    return out


def _check_synthesised_with(path: Path, split: str, synth: dict) -> None:
    """Raise when `path` was synthesised here with settings other than `synth` (real datasets pass)."""
    info_file = path / INFO_FILE
    if not info_file.is_file():
        return
    info = json.loads(info_file.read_text())
    if info.get("source") != "synthetic" or "synth" not in info:
        return
    # A setting added since the split was written counts as its default (defaults keep what earlier code generated).
    written = {**dataclasses.asdict(SynthConfig()), **info["synth"]}
    changed = sorted(k for k in synth.keys() | written.keys() if synth.get(k) != written.get(k))
    if changed:
        diffs = ", ".join(f"{k} {written.get(k)!r} -> {synth.get(k)!r}" for k in changed)
        raise ConfigError(
            f"data.{split}: {path} was synthesised with other data.synth settings ({diffs}); "
            f"delete it to re-synthesise, or point data.{split} at a new directory"
        )
