"""Prompt rendering: deterministic, complete in "full", short in "compact"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from atommem.actions import TAG_NAMES
from atommem.env.observation import Observation
from atommem.memory.store import MemoryEntry
from atommem.env.prompts import render_messages

ROOT = Path(__file__).resolve().parents[1]


def obs(**kw) -> Observation:
    base = dict(
        phase="read",
        questions=["city of zorp ?", "pet of blick ?"],
        question_index=-1,
        chunk_index=1,
        num_chunks=3,
        chunk_text="Document 1:\nnotes 1\nblick pet cat .",
        scratchpad="",
        query="zorp city",
        retrieved=[MemoryEntry(1, "zorp city lima")],
        retrieved_text="Memory 1: zorp city lima",
        errors=[],
        read_only_streak=1,
    )
    base.update(kw)
    return Observation(**base)


def test_full_prompt_explains_every_tag_and_shows_state():
    sys_msg, user = render_messages(obs(), "full")
    assert sys_msg["role"] == "system" and user["role"] == "user"
    for tag in TAG_NAMES:
        assert f"<{tag}>" in sys_msg["content"], tag
    assert "Example" in sys_msg["content"]
    u = user["content"]
    for part in ("1. city of zorp ?", "2. pet of blick ?", "Memory 1: zorp city lima", "Chunk 2 of 3", "blick pet cat .", "zorp city"):
        assert part in u, part


ERRORS = ["truncated: response cut off at char 99", "delete_memory: there is no Memory 9 (ignored)",
          "empty_tag: <add_memory> is empty", "unknown_id: Memory 4", "delete_memory: there is no Memory 8 (ignored)"]


def rendered() -> str:
    """Every style of a reading and an answering observation, as one JSON text."""
    observations = [obs(errors=ERRORS), obs(phase="answer", question_index=1, errors=ERRORS[:3])]
    return json.dumps([render_messages(o, style) for o in observations for style in ("full", "compact")])


def test_rendering_is_the_same_in_every_process():
    # Each process salts str hashes differently (PYTHONHASHSEED): rendering that iterated a set or hashed
    # text would differ between these processes, while two renderings in one process always agree.
    code = "from tests.test_env_prompts import rendered; print(rendered())"
    outs = {
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": seed},
                       capture_output=True, text=True, check=True, timeout=120).stdout
        for seed in ("1", "2", "3")
    }
    assert outs == {rendered() + "\n"}


def test_compact_prompt_is_short_and_complete():
    sys_msg, user = render_messages(obs(errors=["delete_memory: there is no Memory 9 (ignored)"]), "compact")
    words = len(sys_msg["content"].split()) + len(user["content"].split())
    assert words < 60
    u = user["content"]
    assert u.splitlines()[0] == "questions: city of zorp ? | pet of blick ?"
    assert "memory: Memory 1: zorp city lima" in u and "errors: delete_memory\n" in u and u.endswith("blick pet cat .")


def test_a_garbled_turn_cannot_blow_up_the_next_prompt():
    errors = [f"unopened_tag: </add_memory> at char {i} closes no open <add_memory>" for i in range(12)]
    errors.append("truncated: response cut off at char 99")
    compact = render_messages(obs(errors=errors), "compact")[1]["content"]
    assert "errors: unopened_tag x12 | truncated\n" in compact
    full = render_messages(obs(errors=errors), "full")[1]["content"]
    assert "at char 2 closes" in full and "at char 3 closes" not in full and "- and 10 more" in full


def test_answer_phase_prompt_poses_one_question_without_chunk():
    o = obs(phase="answer", question_index=1, chunk_text="", chunk_index=3)
    for style in ("full", "compact"):
        u = render_messages(o, style)[1]["content"]
        assert "pet of blick ?" in u and "city of zorp ?" not in u and "blick pet cat" not in u
    assert render_messages(o, "compact")[1]["content"].endswith("question: pet of blick ?")


def test_questions_can_be_hidden_while_reading():
    for style in ("full", "compact"):
        u = render_messages(obs(), style, show_questions=False)[1]["content"]
        assert "city of zorp ?" not in u


def test_compact_empty_fields_have_no_trailing_space():
    u = render_messages(obs(query="", retrieved=[], retrieved_text="", read_only_streak=0), "compact")[1]["content"]
    assert "query:\nreads: 0\nmemory:\nnotes:\nerrors:\nchunk: Document 1:" in u


def test_full_prompt_states_the_format_mode():
    lenient = render_messages(obs(), "full")[0]["content"]
    strict = render_messages(obs(), "full", strict=True)[0]["content"]
    assert "Text outside tags is ignored" in lenient and "voids the whole response" in strict
    assert "{" + "outside}" not in lenient + strict


def test_overwrite_prompts_describe_and_show_only_the_note():
    """MemAgent's action set: no store and no queries, so neither the grammar nor the prompt mention them."""
    state = obs(scratchpad="zorp city lima", errors=["add_memory: not in this action set"])
    full_sys, full_user = render_messages(state, "full", action_set="overwrite")
    for tag in ("update_memory", "final_answer"):
        assert f"<{tag}>" in full_sys["content"]
    for tag in set(TAG_NAMES) - {"update_memory", "final_answer"}:
        assert f"<{tag}>" not in full_sys["content"], tag
    assert "Note:\nzorp city lima" in full_user["content"] and "Retrieved memory" not in full_user["content"]
    sys_msg, user = render_messages(state, "compact", action_set="overwrite")
    assert "notes" in sys_msg["content"] and sys_msg != render_messages(state, "compact")[0]
    assert user["content"].splitlines()[1:] == [
        "notes: zorp city lima", "errors: add_memory", "chunk: Document 1:", "notes 1", "blick pet cat ."]
    _, answer = render_messages(obs(phase="answer", question_index=0, scratchpad="zorp city lima"), "full", action_set="overwrite")
    assert "Answer from your note" in answer["content"] and "update_query" not in answer["content"]
