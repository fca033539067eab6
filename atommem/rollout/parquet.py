"""Trajectories on disk: Parquet shards with one row per episode and its turns as a nested list.

Token ids and logprobs are stored as Arrow lists, exactly as sampled. Writing takes ObjectRefs (or
Trajectory objects) and fetches them a shard at a time, so the driver never holds them all at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from atommem.errors import DataError
from atommem.trajectory import Trajectory, Turn

TURN = pa.struct(
    [
        ("prompt_ids", pa.list_(pa.int32())),
        ("response_ids", pa.list_(pa.int32())),
        ("logprobs", pa.list_(pa.float32())),
        ("weight_version", pa.int64()),
        ("phase", pa.string()),
        ("response_text", pa.string()),
        ("state", pa.string()),
        ("engine_id", pa.string()),
    ]
)
SCHEMA = pa.schema(
    [
        ("episode_id", pa.string()),
        ("uid", pa.string()),
        ("group_index", pa.int32()),
        ("sample_id", pa.string()),
        ("source", pa.string()),
        ("reward", pa.float64()),
        ("correct", pa.list_(pa.bool_())),
        ("f1", pa.list_(pa.float64())),
        ("answers", pa.list_(pa.string())),
        ("action_counts", pa.map_(pa.string(), pa.int64())),
        ("num_errors", pa.int64()),
        ("context_tokens", pa.int64()),
        ("turns", pa.list_(TURN)),
        ("metadata", pa.string()),  # JSON
    ]
)


def _row(t: Trajectory) -> dict:
    return {
        "episode_id": t.episode_id,
        "uid": t.uid,
        "group_index": t.group_index,
        "sample_id": t.sample_id,
        "source": t.source,
        "reward": t.reward,
        "correct": t.correct,
        "f1": t.f1,
        "answers": t.answers,
        "action_counts": list(t.action_counts.items()),
        "num_errors": t.num_errors,
        "context_tokens": t.context_tokens,
        "turns": [vars(turn) for turn in t.turns],
        "metadata": json.dumps(t.metadata, sort_keys=True, default=str),
    }


def write_trajectories(items: Iterable[Any], out_dir: str | Path, shard_rows: int = 512) -> Path:
    """Write Trajectories (or ObjectRefs to them) as `part-00000.parquet`, ... under `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part-*.parquet"):
        old.unlink()
    shard: list[Any] = []
    index = 0

    def flush() -> None:
        nonlocal index
        trajs = _fetch(shard)
        table = pa.Table.from_pylist([_row(t) for t in trajs], schema=SCHEMA)
        tmp = out / f".part-{index:05d}.parquet.tmp"
        pq.write_table(table, tmp)
        tmp.rename(out / f"part-{index:05d}.parquet")
        index += 1
        shard.clear()

    for item in items:
        shard.append(item)
        if len(shard) >= shard_rows:
            flush()
    if shard or index == 0:
        flush()
    return out


def _fetch(items: list[Any]) -> list[Trajectory]:
    refs = [i for i in items if not isinstance(i, Trajectory)]
    if not refs:
        return list(items)
    import ray

    fetched = iter(ray.get(refs))
    return [i if isinstance(i, Trajectory) else next(fetched) for i in items]


def iter_trajectories(path: str | Path) -> Iterator[Trajectory]:
    p = Path(path)
    files = sorted(p.glob("part-*.parquet")) if p.is_dir() else [p]
    if not files or not files[0].exists():
        raise DataError(f"no trajectory Parquet files at {p} (write them with `atommem rollout --out {p}`)")
    for f in files:
        for row in pq.read_table(f).to_pylist():
            try:
                yield Trajectory(
                    uid=row["uid"],
                    group_index=row["group_index"],
                    sample_id=row["sample_id"],
                    source=row["source"],
                    turns=[Turn(**turn) for turn in row["turns"]],
                    reward=row["reward"],
                    correct=row["correct"],
                    f1=row["f1"],
                    answers=row["answers"],
                    action_counts=dict(row["action_counts"]),
                    num_errors=row["num_errors"],
                    context_tokens=row["context_tokens"],
                    episode_id=row["episode_id"],
                    metadata=json.loads(row["metadata"]),
                )
            except (KeyError, TypeError) as exc:
                raise DataError(f"{f}: trajectory row {row.get('episode_id')!r} is malformed ({exc})") from None


def read_trajectories(path: str | Path) -> list[Trajectory]:
    return list(iter_trajectories(path))
