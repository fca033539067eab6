"""Every prompt text the agent sees, in one place.

`render_messages(obs, style)` turns an `Observation` into chat messages: a system message with the
instructions and the action grammar, and a user message with the questions, the scratchpad, the
retrieval results with how many queries in a row led to them, last turn's action errors and the current chunk
(reading) or question (answering). The count is there because a query that repeats the current one changes
nothing else: without it the prompt after such a turn equals the one before, and a greedy policy repeats the
query until the env's cap moves it on (seen: the tiny demo policy lost most of its revisions that way).
"full" is for real LLMs; "compact" is terse so a tiny policy's prompt stays a few hundred tokens.
Rendering is deterministic: the same observation always gives the same messages.
"""

from __future__ import annotations

from typing import Literal

from atommem.env.observation import Observation

PromptStyle = Literal["full", "compact"]

FULL_SYSTEM = """You are a reading agent with a memory. You read a long context one chunk at a time, then answer questions about it. You cannot see earlier chunks again: whatever you will need later must be written to memory now.

Your memory has two parts:
- a scratchpad: one short note shown in every prompt;
- a long-term store: entries with a stable id, shown as "Memory {id}: {text}". You only see the entries that match your current query.

Act by writing tags. A response may contain several tags; they are applied in order. {outside}
<add_memory>text</add_memory> : create a new long-term entry (it gets a new id).
<modify_memory>Memory 7: new text</modify_memory> : replace the text of entry 7.
<delete_memory>Memory 7</delete_memory> : remove entry 7.
<update_memory>text</update_memory> : replace the scratchpad with text.
<update_query>text</update_query> : search the long-term store; the best matching entries appear in your next prompt.
<final_answer>\\boxed{answer}</final_answer> : answer the question being asked (answering phase only).

Reading: after a response that writes (add, modify, delete, scratchpad) or has no valid tag, the next chunk is shown. A response with only <update_query> keeps the same chunk so you can look at the results (at most {max_read_only} times in a row).
Answering: questions are asked one at a time. Look things up with <update_query> if needed, then give <final_answer> with a short answer inside \\boxed{}.
Ids must be ones you have seen; a mistake (unknown id, unclosed tag, empty tag) does nothing and is reported in your next prompt.

Example reading response:
The chunk says Ada Lovelace was born in London; question 1 asks for it.
<add_memory>Ada Lovelace was born in London.</add_memory>
Example answering response:
<final_answer>\\boxed{London}</final_answer>"""

# env.action_set: overwrite (MemAgent's workflow): one note rewritten every chunk, no long-term store
OVERWRITE_FULL_SYSTEM = """You are a reading agent with a memory. You read a long context one chunk at a time, then answer questions about it. You cannot see earlier chunks again: whatever you will need later must be in your memory.

Your memory is one note, shown in every prompt. After each chunk, write the whole new note: it replaces the old one, so keep what you still need and add what the chunk adds.

Act by writing tags. {outside}
<update_memory>text</update_memory> : replace the note with text (reading phase).
<final_answer>\\boxed{answer}</final_answer> : answer the question being asked (answering phase only).

Reading: after each response the next chunk is shown. Answering: questions are asked one at a time; answer from your note with a short answer inside \\boxed{}.
A mistake (unclosed tag, empty tag, any other tag) does nothing and is reported in your next prompt.

Example reading response:
<update_memory>Ada Lovelace was born in London.</update_memory>
Example answering response:
<final_answer>\\boxed{London}</final_answer>"""
OVERWRITE_COMPACT_SYSTEM = "keep what the questions need in notes, then answer from notes."

OUTSIDE_LENIENT = "Text outside tags is ignored (use it to think)."
OUTSIDE_STRICT = "Write nothing but tags separated by spaces: any other text voids the whole response."
COMPACT_SYSTEM = "store what the questions need, then answer from memory."

_NONE = "(none)"
# A garbled response can hold a dozen broken tags; showing every message would let one bad turn push the
# next prompt past a small model's positions, so prompts show a few and count the rest.
MAX_ERRORS_SHOWN = 3


def _error_lines(errors: list[str]) -> list[str]:
    shown = [f"- {e}" for e in errors[:MAX_ERRORS_SHOWN]]
    if len(errors) > MAX_ERRORS_SHOWN:
        shown.append(f"- and {len(errors) - MAX_ERRORS_SHOWN} more")
    return shown


def _error_kinds(errors: list[str]) -> str:
    """Compact form: each error kind once, in first-seen order, with a count when it repeats."""
    counts: dict[str, int] = {}
    for e in errors:
        kind = e.split(":", 1)[0]
        counts[kind] = counts.get(kind, 0) + 1
    return " | ".join(k if n == 1 else f"{k} x{n}" for k, n in counts.items())


def _full_user(obs: Observation, show_questions: bool, store: bool, max_read_only_turns: int) -> str:
    parts: list[str] = []
    if show_questions and obs.phase == "read":
        lines = "\n".join(f"{i + 1}. {q}" for i, q in enumerate(obs.questions))
        parts.append(f"Questions you will be asked after reading:\n{lines}")
    parts.append(f"{'Scratchpad' if store else 'Note'}:\n{obs.scratchpad or '(empty)'}")
    if store:
        parts.append(
            f"Current query: {obs.query or _NONE}\nQueries in a row: {obs.read_only_streak} of {max_read_only_turns}\n"
            f"Retrieved memory:\n{obs.retrieved_text or _NONE}"
        )
    if obs.errors:
        parts.append("Errors in your last response (they had no effect):\n" + "\n".join(_error_lines(obs.errors)))
    if obs.phase == "read":
        parts.append(f"Chunk {obs.chunk_index + 1} of {obs.num_chunks}:\n{obs.chunk_text}")
    elif obs.phase == "answer":
        n = len(obs.questions)
        how = "Look up memory with <update_query> if needed, then answer" if store else "Answer from your note"
        parts.append(
            f"All chunks are read. Question {obs.question_index + 1} of {n}:\n{obs.questions[obs.question_index]}\n"
            f"{how} with <final_answer>\\boxed{{answer}}</final_answer>."
        )
    else:
        parts.append("The episode is over.")
    return "\n\n".join(parts)


def _line(label: str, value: str) -> str:
    return f"{label}: {value}" if value else f"{label}:"


def _compact_user(obs: Observation, show_questions: bool, store: bool) -> str:
    lines: list[str] = []
    if show_questions and obs.phase == "read":
        lines.append(_line("questions", " | ".join(obs.questions)))
    if store:
        lines.append(_line("query", obs.query))
        lines.append(_line("reads", str(obs.read_only_streak)))
        lines.append(_line("memory", " | ".join(obs.retrieved_text.splitlines())))
    lines.append(_line("notes", obs.scratchpad))
    lines.append(_line("errors", _error_kinds(obs.errors)))
    if obs.phase == "read":
        lines.append(_line("chunk", obs.chunk_text))
    elif obs.phase == "answer":
        lines.append(_line("question", obs.questions[obs.question_index]))
    return "\n".join(lines)


def system_prompt(
    style: PromptStyle, max_read_only_turns: int = 3, strict: bool = False, action_set: str = "atomic"
) -> str:
    store = action_set == "atomic"
    if style == "full":
        outside = OUTSIDE_STRICT if strict else OUTSIDE_LENIENT
        text = FULL_SYSTEM if store else OVERWRITE_FULL_SYSTEM
        return text.replace("{max_read_only}", str(max_read_only_turns)).replace("{outside}", outside)
    if style == "compact":
        return COMPACT_SYSTEM if store else OVERWRITE_COMPACT_SYSTEM
    raise ValueError(f"unknown prompt style {style!r} (use 'full' or 'compact')")


def render_messages(
    obs: Observation,
    style: PromptStyle = "full",
    *,
    max_read_only_turns: int = 3,
    show_questions: bool = True,
    strict: bool = False,
    action_set: str = "atomic",
) -> list[dict]:
    """Chat messages (system + user) for one turn; `show_questions` lists the questions while reading,
    `strict` tells the agent that text outside tags voids a response; with `action_set` "overwrite" the
    prompts describe and show only the note (MemAgent: no store, no queries)."""
    system = system_prompt(style, max_read_only_turns, strict, action_set)
    store = action_set == "atomic"
    if style == "full":
        user = _full_user(obs, show_questions, store, max_read_only_turns)
    else:
        user = _compact_user(obs, show_questions, store)
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": user},
    ]


def render_text(messages: list[dict]) -> str:
    """A plain single-string view of chat messages (the gymnasium observation; not what engines see)."""
    return "\n\n".join(f"<|{m['role']}|>\n{m['content']}" for m in messages)
