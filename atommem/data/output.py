"""Publish a dataset directory atomically: Parquet shards + `dataset.json`, never half-written."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

from atommem.data.schema import Sample, write_samples
from atommem.errors import UserError

INFO_FILE = "dataset.json"  # provenance: who built the directory, with which parameters, how many samples


def write_dataset(samples: Iterable[Sample], out: str | Path, info: dict | None = None, overwrite: bool = False) -> Path:
    """Write into a temporary sibling directory, then rename it to `out`.

    A crash or error leaves `out` untouched. An existing non-empty `out` is replaced only with `overwrite`.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"output directory {out} already exists and is not empty (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        samples = list(samples)
        write_samples(samples, tmp)
        summary = {"num_samples": len(samples), "num_questions": sum(len(s.questions) for s in samples)}
        (tmp / INFO_FILE).write_text(json.dumps({**(info or {}), **summary}, indent=2, sort_keys=True) + "\n")
        if out.exists():
            old = out.with_name(f".{out.name}.old-{tmp.name.rsplit('-', 1)[-1]}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out
