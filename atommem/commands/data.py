"""`atommem data synth | build | prepare | show`: make Parquet sample directories and inspect them."""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from atommem.data.builders import BUILDERS, SOURCES, BuildParams
from atommem.data.output import INFO_FILE, write_dataset
from atommem.data.schema import Sample, iter_samples
from atommem.commands.options import add_config_options, config_of
from atommem.errors import UserError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="atommem data", description="Synthesise, build, prepare and inspect datasets.")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("synth", help="generate synthetic samples (facts about invented people)")
    s.add_argument("--out", required=True, help="output Parquet directory")
    add_config_options(s, uses="data.synth, the generator settings")
    s.add_argument("--n", type=int, help="number of samples (default: data.synth.num_samples)")
    s.add_argument("--doc-num", type=int, help="documents per sample (default: data.synth.doc_num)")
    s.add_argument("--seed", type=int, help="RNG seed (default: data.synth.seed)")
    s.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")

    b = sub.add_parser("build", help="build multi-query samples from a published dataset file")
    b.add_argument("--source", required=True, choices=SOURCES)
    b.add_argument("--input", required=True, help="local dataset file (HotpotQA/2Wiki JSON, MuSiQue JSONL; .gz ok)")
    b.add_argument("--out", required=True, help="output Parquet directory")
    b.add_argument("--aliases", help="2wiki only: id_aliases.json (JSONL of {Q_id, aliases, demonyms})")
    b.add_argument("--doc-num", type=int, default=BuildParams.doc_num, help="documents per sample (default 200)")
    b.add_argument("--seed", type=int, default=BuildParams.seed)
    b.add_argument("--max-questions", type=int, default=BuildParams.max_questions, help="largest question group (default 10)")
    b.add_argument("--single-question-p", type=float, default=BuildParams.single_question_p,
                   help="probability of a one-question sample (default 0.5)")
    b.add_argument("--limit", type=int, help="use at most N questions, a seeded random subset (paper: train 20000, dev 600)")
    b.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")

    r = sub.add_parser("prepare", help="synthesise the missing train/dev(/test) splits a config names; real sets are kept")
    add_config_options(r, required=True, uses="data, which names the splits")

    w = sub.add_parser("show", help="summarise a sample directory")
    w.add_argument("path", help="Parquet directory or file")
    w.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return {"synth": _synth, "build": _build, "prepare": _prepare, "show": _show}[args.cmd](args)


def _prepare(args: argparse.Namespace) -> int:
    from atommem.data.prepare import prepare

    paths = prepare(config_of(args))
    print(json.dumps({split: str(path) for split, path in paths.items()}, indent=2))
    return 0


def _synth(args: argparse.Namespace) -> int:
    from atommem.data.synthetic import generate_synthetic

    cfg = config_of(args).data.synth
    if args.doc_num is not None:
        cfg.doc_num = args.doc_num
    n = cfg.num_samples if args.n is None else args.n
    seed = cfg.seed if args.seed is None else args.seed
    if n < 1:
        raise UserError(f"--n must be >= 1, got {n}")
    samples = generate_synthetic(cfg, n=n, seed=seed)
    info = {"source": "synthetic", "synth": {**asdict(cfg), "num_samples": n, "seed": seed}}
    out = write_dataset(samples, args.out, info=info, overwrite=args.overwrite)
    print(f"wrote {len(samples)} synthetic samples to {out}")
    return 0


def _build(args: argparse.Namespace) -> int:
    params = BuildParams(
        doc_num=args.doc_num,
        seed=args.seed,
        max_questions=args.max_questions,
        single_question_p=args.single_question_p,
        limit=args.limit,
    )
    kw = {}
    if args.aliases is not None:
        if args.source != "2wiki":
            raise UserError("--aliases applies to --source 2wiki only")
        kw["aliases_path"] = args.aliases
    samples = BUILDERS[args.source](args.input, params, **kw)
    info = {"source": args.source, "input": str(args.input), "aliases": args.aliases, "params": asdict(params)}
    out = write_dataset(samples, args.out, info=info, overwrite=args.overwrite)
    print(f"wrote {len(samples)} {args.source} samples ({sum(len(s.questions) for s in samples)} questions) to {out}")
    return 0


# --------------------------------------------------------------------------- show


def context_words(sample: Sample) -> int:
    """Whitespace tokens of the rendered context `Document {i}:\\n{title}\\n{text}` (2 for the header)."""
    return sum(2 + len(d.title.split()) + len(d.text.split()) for d in sample.documents)


def _stats(values: list[int]) -> dict:
    return {"min": min(values), "mean": round(sum(values) / len(values), 2), "max": max(values)}


def _pow2_histogram(values: list[int]) -> list[dict]:
    """Counts in power-of-two buckets [lo, hi) covering the values."""
    counts = Counter(0 if v < 1 else 1 << int(math.log2(v)) for v in values)
    return [{"lo": lo, "hi": max(1, lo * 2), "count": counts[lo]} for lo in sorted(counts)]


def dataset_summary(path: str | Path) -> dict:
    by_source: Counter = Counter()
    questions: list[int] = []
    documents: list[int] = []
    words: list[int] = []
    for s in iter_samples(path):
        by_source[s.source] += 1
        questions.append(len(s.questions))
        documents.append(len(s.documents))
        words.append(context_words(s))
    if not questions:
        raise UserError(f"{path} holds no samples")
    info_file = Path(path) / INFO_FILE
    return {
        "path": str(path),
        "num_samples": len(questions),
        "num_questions": sum(questions),
        "by_source": dict(sorted(by_source.items())),
        "questions_per_sample": {**_stats(questions), "histogram": {str(k): v for k, v in sorted(Counter(questions).items())}},
        "documents_per_sample": _stats(documents),
        "context_words": {**_stats(words), "histogram": _pow2_histogram(words)},
        "info": json.loads(info_file.read_text()) if info_file.is_file() else None,
    }


def _show(args: argparse.Namespace) -> int:
    summary = dataset_summary(args.path)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
        return 0
    print(f"{summary['path']}: {summary['num_samples']} samples, {summary['num_questions']} questions")
    print("by source: " + ", ".join(f"{k} {v}" for k, v in summary["by_source"].items()))
    q = summary["questions_per_sample"]
    print(f"questions/sample: min {q['min']} mean {q['mean']} max {q['max']}  ("
          + ", ".join(f"{k}q: {v}" for k, v in q["histogram"].items()) + ")")
    d = summary["documents_per_sample"]
    print(f"documents/sample: min {d['min']} mean {d['mean']} max {d['max']}")
    c = summary["context_words"]
    print(f"context length (whitespace tokens): min {c['min']} mean {c['mean']} max {c['max']}")
    top = max(b["count"] for b in c["histogram"])
    for b in c["histogram"]:
        bar = "#" * max(1, round(40 * b["count"] / top))
        print(f"  [{b['lo']:>7}, {b['hi']:>7})  {b['count']:>7}  {bar}")
    return 0
