"""`atommem env replay`: scripted responses through the env, one JSON object on stdout."""

from __future__ import annotations

import json

from atommem.cli import main
from atommem.config import SynthConfig
from atommem.data.schema import write_samples
from atommem.data.synthetic import generate_synthetic

SAMPLE = generate_synthetic(SynthConfig(num_entities=2, num_attributes=1, facts_per_chunk=2, max_questions=1), 1, seed=5)[0]


def run(capsys, *args) -> tuple[int, dict | None, str]:
    code = main(["env", "replay", *args])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def write_lines(path, items):
    path.write_text("\n".join(json.dumps(x) for x in items) + "\n")
    return str(path)


def solution() -> list[str]:
    (e, a, v), = SAMPLE.metadata["chains"][0]["facts"]
    return [f"<add_memory>{e} {a} {v}</add_memory>", f"<update_query>{e} {a}</update_query>", f"<final_answer>\\boxed{{{v}}}</final_answer>"]


def test_replay_full_episode_from_parquet(tmp_path, capsys):
    data = write_samples([SAMPLE], tmp_path / "data")
    resp = write_lines(tmp_path / "r.jsonl", solution() + ["left over"])
    code, out, _ = run(capsys, "--sample", str(data), "--responses", resp, "--set", "env.chunk_tokens=1000")
    assert code == 0
    (e, a, v), = SAMPLE.metadata["chains"][0]["facts"]
    assert out["state"] == "done" and out["reward"] == 1.0 and out["num_turns"] == 3
    assert out["questions"][0]["answer"] == v and out["questions"][0]["correct"] is True
    assert out["memory"] == [{"id": 1, "text": f"{e} {a} {v}"}]
    assert out["unused_responses"] == 1 and out["errors_per_turn"] == [[], [], []]
    assert [t["phase"] for t in out["turns"]] == ["read", "answer", "answer"]


def test_replay_reports_errors_and_incomplete(tmp_path, capsys):
    sample_file = tmp_path / "s.json"
    sample_file.write_text(json.dumps(SAMPLE.to_row()))
    resp = write_lines(tmp_path / "r.jsonl", ["<delete_memory>Memory 4</delete_memory>", {"text": "<add_memory>x", "complete": False}])
    code, out, _ = run(capsys, "--sample", str(sample_file), "--responses", resp, "--set", "env.chunk_tokens=4", "--set", "env.chunk_overlap=0")
    assert code == 0 and out["state"] == "incomplete" and out["num_turns"] == 2
    assert out["reward"] == 0.0 and out["questions"][0]["answer"] == ""
    assert "Memory 4" in out["errors_per_turn"][0][0] and out["errors_per_turn"][1]
    assert out["turns"][1]["complete"] is False and out["action_counts"]["error"] == 2


def test_replay_input_errors_are_clear(tmp_path, capsys):
    good = tmp_path / "s.json"
    good.write_text(json.dumps(SAMPLE.to_row()))
    code, _, err = run(capsys, "--sample", str(tmp_path / "missing"), "--responses", str(good))
    assert code == 2 and "does not exist" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"ok"\n{not json\n')
    code, _, err = run(capsys, "--sample", str(good), "--responses", str(bad))
    assert code == 2 and "bad.jsonl line 2" in err
    nums = write_lines(tmp_path / "n.jsonl", [3])
    code, _, err = run(capsys, "--sample", str(good), "--responses", nums)
    assert code == 2 and "n.jsonl line 1" in err
    code, _, err = run(capsys, "--sample", str(good), "--responses", str(tmp_path / "none.jsonl"))
    assert code == 2 and "responses file" in err
    code, _, err = run(capsys, "--sample", str(good), "--responses", nums, "--index", "3")
    assert code == 2 and "--index" in err
