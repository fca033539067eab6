"""The one sample schema every builder writes and every stage reads, stored as Parquet."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from atommem.errors import DataError


@dataclass
class Document:
    title: str
    text: str


@dataclass
class Question:
    question: str
    answers: list[str]  # gold answers, any alias counts


@dataclass
class Sample:
    id: str
    source: str  # hotpotqa | 2wiki | musique | synthetic | ...
    documents: list[Document]
    questions: list[Question]
    metadata: dict = field(default_factory=dict)  # free-form, stored as JSON (e.g. synthetic facts)

    def to_row(self) -> dict:
        # explicit, not dataclasses.asdict: asdict's recursive deep copy was ~85% of writing 200-document samples
        return {
            "id": self.id,
            "source": self.source,
            "documents": [{"title": d.title, "text": d.text} for d in self.documents],
            "questions": [{"question": q.question, "answers": list(q.answers)} for q in self.questions],
            "metadata": json.dumps(self.metadata, sort_keys=True),
        }

    @classmethod
    def from_row(cls, row: dict, where: str = "record") -> "Sample":
        try:
            meta = row.get("metadata") or "{}"
            return cls(
                id=str(row["id"]),
                source=str(row["source"]),
                documents=[Document(str(d["title"]), str(d["text"])) for d in row["documents"]],
                questions=[Question(str(q["question"]), [str(a) for a in q["answers"]]) for q in row["questions"]],
                metadata=json.loads(meta) if isinstance(meta, str) else dict(meta),
            )
        except (KeyError, TypeError) as exc:
            raise DataError(f"{where}: missing or malformed field {exc}") from None


SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("documents", pa.list_(pa.struct([("title", pa.string()), ("text", pa.string())]))),
        ("questions", pa.list_(pa.struct([("question", pa.string()), ("answers", pa.list_(pa.string()))]))),
        ("metadata", pa.string()),
    ]
)


def write_samples(samples: Iterable[Sample], out_dir: str | Path, shard_rows: int = 10_000) -> Path:
    """Write samples as Parquet shards `part-00000.parquet`, ... into `out_dir` (atomically per shard)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    batch: list[dict] = []
    shard = 0

    def flush() -> None:
        nonlocal shard, batch
        table = pa.Table.from_pylist(batch, schema=SCHEMA)
        tmp = out / f".part-{shard:05d}.parquet.tmp"
        pq.write_table(table, tmp)
        tmp.rename(out / f"part-{shard:05d}.parquet")
        shard += 1
        batch = []

    for s in samples:
        batch.append(s.to_row())
        if len(batch) >= shard_rows:
            flush()
    if batch or shard == 0:
        flush()
    return out


def iter_samples(path: str | Path) -> Iterator[Sample]:
    """Samples from a Parquet dir (or one .parquet file), or a .json/.jsonl file of sample records."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"data path {p} does not exist")
    if p.is_dir() or p.suffix == ".parquet":
        files = sorted(p.glob("*.parquet")) if p.is_dir() else [p]
        if not files:
            raise DataError(f"{p} holds no .parquet files (write one with `atommem data synth` or `atommem data build`)")
        for f in files:
            try:
                table = pq.read_table(f)
            except Exception as exc:  # pyarrow raises several types for corrupt files
                raise DataError(f"{f}: not a readable Parquet file ({exc})") from None
            for i, row in enumerate(table.to_pylist()):
                yield Sample.from_row(row, where=f"{f} row {i}")
        return
    text = p.read_text()
    if p.suffix == ".jsonl":
        for i, line in enumerate(text.splitlines()):
            if line.strip():
                yield Sample.from_row(_json(line, f"{p} line {i + 1}"), where=f"{p} line {i + 1}")
        return
    obj = _json(text, str(p))
    for i, row in enumerate(obj if isinstance(obj, list) else [obj]):
        yield Sample.from_row(row, where=f"{p} record {i}")


def read_samples(path: str | Path, limit: int | None = None) -> list[Sample]:
    out = []
    for s in iter_samples(path):
        if limit is not None and len(out) >= limit:
            break
        out.append(s)
    return out


def _json(text: str, where: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
