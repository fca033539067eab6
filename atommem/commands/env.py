"""`atommem env replay`: play scripted responses through a MemoryEnv and print what happened as JSON.

    atommem env replay --sample SAMPLE --responses RESPONSES.jsonl [--config C] [--set k=v ...]
                       [--index N] [--tokenizer DIR]

SAMPLE is anything `read_samples` reads (a Parquet dir or file, a .json record or list, a .jsonl);
the record at --index (default 0) is played. RESPONSES holds one response per line: a JSON string, or
an object {"text": "...", "complete": false} to mark a generation cut off at max_tokens. Responses are
applied in order until the episode ends. If they run out first, the output says
"state": "incomplete" and scores the episode as it stands (unanswered questions count as wrong);
responses left over after the end are counted in "unused_responses". Either way the exit status is 0;
unreadable inputs are user errors (exit 2).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from atommem.commands.options import add_config_options, config_of
from atommem.data.schema import read_samples
from atommem.errors import DataError
from atommem.errors import UserError


def _read_responses(path: Path) -> list[tuple[str, bool]]:
    if not path.is_file():
        raise UserError(f"responses file {path} does not exist (one JSON string per line)")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} line {n}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: invalid JSON ({exc.msg}); write each response as a JSON string") from None
        if isinstance(item, dict) and isinstance(item.get("text"), str) and isinstance(item.get("complete", True), bool):
            out.append((item["text"], item.get("complete", True)))
        elif isinstance(item, str):
            out.append((item, True))
        else:
            raise DataError(f'{where}: expected a JSON string or {{"text": str, "complete": bool}}, got {line[:80]!r}')
    return out


def replay(args: argparse.Namespace) -> dict:
    from atommem.env.memory_env import MemoryEnv
    from atommem.memory.embedders import make_embedder

    cfg = config_of(args)
    samples = read_samples(args.sample, limit=args.index + 1)
    if len(samples) <= args.index:
        raise DataError(f"{args.sample} holds {len(samples)} samples; --index {args.index} is out of range")
    sample = samples[args.index]
    responses = _read_responses(Path(args.responses))
    tokenizer = None
    if args.tokenizer:
        from atommem.models.loading import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)

    env = MemoryEnv(cfg.env, cfg.memory, make_embedder(cfg.embedder), tokenizer=tokenizer, sample=sample)
    env.reset()
    turns = []
    used = 0
    for text, complete in responses:
        if env.done:
            break
        phase = env.phase
        _, _, _, _, info = env.step(text, complete=complete)
        used += 1
        turns.append(
            {
                "phase": phase,
                "response": text,
                "complete": complete,
                "action_counts": info["action_counts"],
                "errors": info["errors"],
            }
        )
    res = env.result()
    return {
        "sample_id": sample.id,
        "state": "done" if env.done else "incomplete",
        "reward": res.reward,
        "questions": [
            {"question": q.question, "gold": q.answers, "answer": a, "correct": c, "f1": f}
            for q, a, c, f in zip(sample.questions, res.answers, res.correct, res.f1)
        ],
        "memory": [{"id": e.id, "text": e.text} for e in res.memory],
        "scratchpad": res.scratchpad,
        "num_turns": res.num_turns,
        "num_chunks": env.observation.num_chunks,
        "context_tokens": res.context_tokens,
        "action_counts": res.action_counts,
        "num_errors": res.num_errors,
        "errors_per_turn": res.errors_per_turn,
        "turns": turns,
        "unused_responses": len(responses) - used,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="atommem env", description="Inspect the memory environment.")
    sub = parser.add_subparsers(dest="command", required=True)
    rp = sub.add_parser("replay", help="play scripted responses through a MemoryEnv and print JSON")
    rp.add_argument("--sample", required=True, help="sample file or Parquet dir (see atommem data synth)")
    rp.add_argument("--responses", required=True, help="JSONL file, one response (JSON string) per line")
    add_config_options(rp, uses="env, memory, embedder")
    rp.add_argument("--index", type=int, default=0, help="which sample of the file to play (default 0)")
    rp.add_argument("--tokenizer", default=None, help="HF tokenizer dir for chunking/budgets (default: whitespace tokens)")
    args = parser.parse_args(argv)
    if args.index < 0:
        raise UserError(f"--index must be >= 0, got {args.index}")
    print(json.dumps(replay(args), indent=2))
    return 0
