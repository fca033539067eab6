"""Multi-query long-context samples from the published HotpotQA, 2WikiMultihopQA and MuSiQue files.

Each builder reads one local file in its dataset's published format, validates every record (a
`DataError` names the file, the record index and id, and the field), then groups questions into samples:
one question with probability `single_question_p`, else 2..`max_questions`. A sample's documents are its
questions' gold and native distractor paragraphs (deduplicated by title + text), topped up with random
paragraphs from the whole file to `doc_num`, and shuffled. Gold paragraphs are never dropped: when they
alone exceed `doc_num` the sample keeps them all; native distractors are kept while room remains.
When the file holds fewer distinct paragraphs than `doc_num`, a sample gets every one of them.
Everything random comes from one `random.Random(seed)`, so a build is a pure function of file + parameters.
"""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from tqdm import tqdm

from atommem.data.schema import Document, Question, Sample
from atommem.errors import DataError

SOURCES = ("hotpotqa", "2wiki", "musique")


@dataclass
class BuildParams:
    doc_num: int = 200  # documents per sample (paper: 200; 400/800 for longer contexts)
    seed: int = 0
    max_questions: int = 10  # upper bound of a multi-question group
    single_question_p: float = 0.5  # probability that a sample holds exactly one question
    limit: int | None = None  # use at most this many questions (a seeded random subset; paper: train 20k, dev 600)

    def validate(self) -> None:
        if self.doc_num < 1:
            raise DataError(f"doc_num must be >= 1, got {self.doc_num}")
        if self.max_questions < 1:
            raise DataError(f"max_questions must be >= 1, got {self.max_questions}")
        if not 0.0 <= self.single_question_p <= 1.0:
            raise DataError(f"single_question_p must lie in [0, 1], got {self.single_question_p}")
        if self.limit is not None and self.limit < 1:
            raise DataError(f"limit must be >= 1, got {self.limit}")


@dataclass
class QARecord:
    """One validated question with its own gold answers and its native paragraphs."""

    id: str
    question: str
    answers: list[str]
    gold: list[Document]
    distractors: list[Document]
    meta: dict = field(default_factory=dict)  # per-question extras kept in Sample.metadata (type, level, ...)


# --------------------------------------------------------------------------- reading helpers


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def _check_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"input file {p} does not exist (download the dataset and pass its local path)")
    return p


def _guess_source(record: Any) -> str | None:
    if not isinstance(record, dict):
        return None
    if "paragraphs" in record:
        return "musique"
    if "evidences" in record or "answer_id" in record:
        return "2wiki"
    if "context" in record:
        return "hotpotqa"
    return None


def _load_json_array(path: Path, source: str) -> list:
    try:
        with _open_text(path) as f:
            obj = json.load(f)
    except json.JSONDecodeError as exc:
        hint = ""
        if exc.msg == "Extra data":
            hint = " (it looks like JSONL, one record a line: MuSiQue files are read with --source musique)"
        raise DataError(f"{path}: not a JSON file ({exc.msg} at line {exc.lineno} column {exc.colno}){hint}") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: cannot be read as UTF-8 JSON ({exc})") from None
    if not isinstance(obj, list):
        raise DataError(
            f"{path}: a {source} file must be a JSON array of records, got a JSON {type(obj).__name__}"
        )
    if obj:
        guessed = _guess_source(obj[0])
        if guessed is not None and guessed != source and not (source == "2wiki" and guessed == "hotpotqa"):
            raise DataError(f"{path}: records look like {guessed}, not {source} (use --source {guessed})")
    return obj


def _iter_jsonl(path: Path, what: str) -> Iterator[tuple[int, Any]]:
    """(0-based record index, parsed object) for each non-empty line, streamed; `what` names the format."""
    index = 0
    try:
        with _open_text(path) as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                if index == 0 and line.lstrip().startswith("["):
                    raise DataError(f"{path}: is a JSON array, but {what} is JSONL (one record a line)")
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path} line {lineno} (record {index}): invalid JSON ({exc.msg})") from None
                yield index, obj
                index += 1
    except (UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: cannot be read as UTF-8 JSONL ({exc})") from None


class _Where:
    """Builds error messages that name file, record index, record id and field."""

    def __init__(self, path: Path, index: int, record: Any, id_key: str):
        rid = record.get(id_key) if isinstance(record, dict) else None
        self.prefix = f"{path} record {index}" + (f" ({id_key}={rid})" if rid is not None else "")

    def error(self, field_name: str, problem: str) -> DataError:
        return DataError(f"{self.prefix}: field '{field_name}' {problem}")


def _require(record: Any, key: str, where: _Where, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(record, dict):
        raise DataError(f"{where.prefix}: a record must be a JSON object, got {type(record).__name__}")
    if key not in record:
        raise where.error(key, "is missing")
    value = record[key]
    if not isinstance(value, kind):
        raise where.error(key, f"must be {what}, got {type(value).__name__}")
    return value


def _join_sentences(sentences: list[str]) -> str:
    """HotpotQA sentences carry their own leading space; 2Wiki's do not. Join either without doubling."""
    text = ""
    for s in sentences:
        if text and not s[:1].isspace() and not text[-1:].isspace():
            text += " "
        text += s
    return text.strip()


def _parse_context(record: dict, where: _Where) -> list[Document]:
    context = _require(record, "context", where, list, "a list of [title, sentences]")
    docs = []
    for j, item in enumerate(context):
        ok = (
            isinstance(item, (list, tuple))
            and len(item) == 2
            and isinstance(item[0], str)
            and isinstance(item[1], list)
            and all(isinstance(s, str) for s in item[1])
        )
        if not ok:
            raise where.error("context", f"must be a list of [title, sentences] (entry {j} is {json.dumps(item)[:80]})")
        docs.append(Document(item[0], _join_sentences(item[1])))
    return docs


def _supporting_titles(record: dict, where: _Where) -> set[str]:
    facts = _require(record, "supporting_facts", where, list, "a list of [title, sentence_index]")
    titles = set()
    for j, fact in enumerate(facts):
        if not (isinstance(fact, (list, tuple)) and len(fact) == 2 and isinstance(fact[0], str)):
            raise where.error("supporting_facts", f"must be a list of [title, sentence_index] (entry {j} is {fact!r})")
        titles.add(fact[0])
    return titles


def _split_gold(docs: list[Document], titles: set[str]) -> tuple[list[Document], list[Document]]:
    return [d for d in docs if d.title in titles], [d for d in docs if d.title not in titles]


def _answer(record: dict, where: _Where) -> str:
    answer = _require(record, "answer", where, str, "a string (unlabelled test files cannot be used)")
    if not answer.strip():
        raise where.error("answer", "is empty")
    return answer


# --------------------------------------------------------------------------- per-source parsing


def _hotpot_record(path: Path, index: int, record: Any) -> QARecord:
    where = _Where(path, index, record, "_id")
    rid = _require(record, "_id", where, str, "a string")
    question = _require(record, "question", where, str, "a string")
    answer = _answer(record, where)
    gold, distractors = _split_gold(_parse_context(record, where), _supporting_titles(record, where))
    meta = {k: record[k] for k in ("type", "level") if isinstance(record.get(k), str)}
    return QARecord(rid, question, [answer], gold, distractors, meta)


def _load_2wiki_aliases(path: Path) -> dict[str, list[str]]:
    """The 2Wiki `id_aliases.json` file: JSONL of {Q_id, aliases, demonyms} keyed by a record's answer_id."""
    out: dict[str, list[str]] = {}
    for index, obj in _iter_jsonl(path, "the 2Wiki id_aliases file ({Q_id, aliases, demonyms} a line)"):
        where = _Where(path, index, obj, "Q_id")
        qid = _require(obj, "Q_id", where, str, "a string")
        names = []
        for key in ("aliases", "demonyms"):
            values = obj.get(key, [])
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise where.error(key, "must be a list of strings")
            names += values
        out[qid] = names
    return out


def _2wiki_record(path: Path, index: int, record: Any, aliases: dict[str, list[str]]) -> QARecord:
    where = _Where(path, index, record, "_id")
    rid = _require(record, "_id", where, str, "a string")
    question = _require(record, "question", where, str, "a string")
    answers = [_answer(record, where)]
    if "answer_aliases" in record:
        extra = record["answer_aliases"]
        if not isinstance(extra, list) or not all(isinstance(a, str) for a in extra):
            raise where.error("answer_aliases", "must be a list of strings")
        answers += extra
    answer_id = record.get("answer_id")
    if isinstance(answer_id, str):
        answers += aliases.get(answer_id, [])
    gold, distractors = _split_gold(_parse_context(record, where), _supporting_titles(record, where))
    meta = {"type": record["type"]} if isinstance(record.get("type"), str) else {}
    return QARecord(rid, question, _dedupe(answers), gold, distractors, meta)


def _musique_record(path: Path, index: int, record: Any) -> QARecord | None:
    """None for unanswerable records of MuSiQue-Full (their answer is not supported by the paragraphs)."""
    where = _Where(path, index, record, "id")
    rid = _require(record, "id", where, str, "a string")
    question = _require(record, "question", where, str, "a string")
    answer = _answer(record, where)
    aliases = record.get("answer_aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise where.error("answer_aliases", "must be a list of strings")
    answerable = record.get("answerable", True)
    if not isinstance(answerable, bool):
        raise where.error("answerable", f"must be true/false, got {answerable!r}")
    paragraphs = _require(record, "paragraphs", where, list, "a list of {idx, title, paragraph_text, is_supporting}")
    gold, distractors = [], []
    for j, par in enumerate(paragraphs):
        ok = (
            isinstance(par, dict)
            and isinstance(par.get("title"), str)
            and isinstance(par.get("paragraph_text"), str)
            and isinstance(par.get("is_supporting", False), bool)
        )
        if not ok:
            raise where.error(
                "paragraphs",
                f"must be a list of {{idx, title, paragraph_text, is_supporting}} (entry {j} is {json.dumps(par)[:80]})",
            )
        doc = Document(par["title"], par["paragraph_text"])
        (gold if par.get("is_supporting", False) else distractors).append(doc)
    if not answerable:
        return None
    hops = record.get("question_decomposition")
    meta = {"hops": len(hops)} if isinstance(hops, list) else {}
    return QARecord(rid, question, _dedupe([answer, *aliases]), gold, distractors, meta)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".jsonl", ".json"):
        name = name.removesuffix(suffix)
    return name


def _progress(it, path: Path, total: int | None = None):
    """A progress bar on terminals (tqdm hides itself when stderr is not a TTY)."""
    return tqdm(it, total=total, desc=f"reading {path.name}", unit=" records", disable=None, leave=False)


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


# --------------------------------------------------------------------------- grouping


def _doc_key(d: Document) -> tuple[str, str]:
    return d.title, d.text


def _group_sizes(n: int, params: BuildParams, rng: random.Random) -> list[int]:
    sizes = []
    while n > 0:
        if params.max_questions == 1 or rng.random() < params.single_question_p:
            k = 1
        else:
            k = rng.randint(2, params.max_questions)
        sizes.append(min(k, n))
        n -= sizes[-1]
    return sizes


def group_samples(
    records: list[QARecord], corpus: list[Document], source: str, params: BuildParams, name: str = "data"
) -> list[Sample]:
    """Seeded grouping of validated records into multi-query samples (see module docstring).

    Sample ids are `{source}-{name}-s{seed}-{index}`; `name` (the input file's stem) keeps ids of samples
    built from different files apart."""
    params.validate()
    rng = random.Random(params.seed)
    order = list(range(len(records)))
    rng.shuffle(order)
    if params.limit is not None:
        order = order[: params.limit]
    samples = []
    start = 0
    for k in _group_sizes(len(order), params, rng):
        group = [records[i] for i in order[start : start + k]]
        start += k
        samples.append(_make_sample(group, corpus, source, params, rng, f"{source}-{name}-s{params.seed}-{len(samples):06d}"))
    return samples


def _make_sample(
    group: list[QARecord], corpus: list[Document], source: str, params: BuildParams, rng: random.Random, sample_id: str
) -> Sample:
    seen: set[tuple[str, str]] = set()
    docs: list[Document] = []

    def add(d: Document) -> None:
        key = _doc_key(d)
        if key not in seen:
            seen.add(key)
            docs.append(d)

    for r in group:
        for d in r.gold:
            add(d)
    for r in group:
        for d in r.distractors:
            if len(docs) >= params.doc_num:
                break
            add(d)
    need = params.doc_num - len(docs)
    if need > 0:
        # any `need + len(seen)` distinct corpus entries hold at least `need` not yet in the sample
        picks = rng.sample(range(len(corpus)), min(len(corpus), need + len(seen)))
        for i in picks:
            if len(docs) >= params.doc_num:
                break
            add(corpus[i])
    rng.shuffle(docs)
    return Sample(
        id=sample_id,
        source=source,
        documents=docs,
        questions=[Question(r.question, list(r.answers)) for r in group],
        metadata={
            "question_ids": [r.id for r in group],
            "supporting_titles": [sorted({d.title for d in r.gold}) for r in group],
            "question_meta": [r.meta for r in group],
            "doc_num": params.doc_num,
        },
    )


def _corpus(records: list[QARecord]) -> list[Document]:
    """Every distinct paragraph of the file (gold and distractor), in file order."""
    out: dict[tuple[str, str], Document] = {}
    for r in records:
        for d in (*r.gold, *r.distractors):
            out.setdefault(_doc_key(d), d)
    return list(out.values())


def _build(source: str, records: list[QARecord], path: Path, params: BuildParams) -> list[Sample]:
    if not records:
        raise DataError(f"{path}: holds no usable {source} records")
    return group_samples(records, _corpus(records), source, params, _stem(path))


# --------------------------------------------------------------------------- public builders


def build_hotpotqa(path: str | Path, params: BuildParams | None = None, **kw) -> list[Sample]:
    """HotpotQA distractor or fullwiki JSON (a list of {_id, question, answer, supporting_facts, context, ...})."""
    params = params or BuildParams(**kw)
    params.validate()
    p = _check_file(path)
    data = _load_json_array(p, "hotpotqa")
    return _build("hotpotqa", [_hotpot_record(p, i, r) for i, r in _progress(enumerate(data), p, len(data))], p, params)


def build_2wiki(
    path: str | Path, params: BuildParams | None = None, aliases_path: str | Path | None = None, **kw
) -> list[Sample]:
    """2WikiMultihopQA JSON; answer aliases from a record's `answer_aliases` list and/or the `id_aliases.json`
    file (JSONL of {Q_id, aliases, demonyms}, matched through the record's `answer_id`)."""
    params = params or BuildParams(**kw)
    params.validate()
    p = _check_file(path)
    aliases = _load_2wiki_aliases(_check_file(aliases_path)) if aliases_path is not None else {}
    data = _load_json_array(p, "2wiki")
    records = [_2wiki_record(p, i, r, aliases) for i, r in _progress(enumerate(data), p, len(data))]
    return _build("2wiki", records, p, params)


def build_musique(path: str | Path, params: BuildParams | None = None, **kw) -> list[Sample]:
    """MuSiQue JSONL (streamed); unanswerable records of MuSiQue-Full are skipped, their paragraphs still
    join the top-up corpus."""
    params = params or BuildParams(**kw)
    params.validate()
    p = _check_file(path)
    records: list[QARecord] = []
    corpus: dict[tuple[str, str], Document] = {}
    for i, obj in _progress(_iter_jsonl(p, "a MuSiQue file (HotpotQA / 2Wiki arrays: --source hotpotqa / 2wiki)"), p):
        if i == 0 and _guess_source(obj) in ("hotpotqa", "2wiki"):
            raise DataError(f"{p}: records look like {_guess_source(obj)}, not musique (use --source {_guess_source(obj)})")
        rec = _musique_record(p, i, obj)
        if rec is None:
            for par in obj["paragraphs"]:
                d = Document(par["title"], par["paragraph_text"])
                corpus.setdefault(_doc_key(d), d)
            continue
        records.append(rec)
        for d in (*rec.gold, *rec.distractors):
            corpus.setdefault(_doc_key(d), d)
    if not records:
        raise DataError(f"{p}: holds no usable (answerable) musique records")
    return group_samples(records, list(corpus.values()), "musique", params, _stem(p))


BUILDERS: dict[str, Callable[..., list[Sample]]] = {
    "hotpotqa": build_hotpotqa,
    "2wiki": build_2wiki,
    "musique": build_musique,
}
