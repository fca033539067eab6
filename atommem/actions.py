"""The agent's action language: paired tags parsed in one linear scan, rendered canonically.

Pairing rules (no stack, at most one tag is open at a time):
- Text outside tags is free reasoning and ignored (``strict=True``: any non-whitespace there is an
  ``outside_text`` error and the whole response yields no actions).
- An opening tag while another tag is open abandons the OUTER one (``nested_tag`` at the outer's
  position); the inner tag is parsed normally. Rationale: an unclosed outer tag is most often a
  forgotten close, and the newest tag is what the model is writing now.
- A closing tag that does not close the currently open tag is ``unopened_tag`` and ignored; the open
  tag stays open.
- A tag still open at the end is ``unclosed_tag``; if the text ends inside a tag token (``</add_mem``),
  the response was cut off and that is one ``truncated`` error instead.
- Bodies are stripped; an empty body is ``empty_body`` and yields no action. Ids of Update/Delete
  accept ``Memory 7``, ``memory #7`` or bare ``7``; Update needs ``: text`` after the id, Delete ignores
  a copied ``: text`` tail. A ``final_answer`` without ``\\boxed{}`` yields ``Answer(answer=None)``
  plus a ``no_boxed`` error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class Read:
    query: str


@dataclass(frozen=True)
class Create:
    text: str


@dataclass(frozen=True)
class Update:
    id: int
    text: str


@dataclass(frozen=True)
class Delete:
    id: int


@dataclass(frozen=True)
class Scratchpad:
    text: str


@dataclass(frozen=True)
class Answer:
    text: str
    answer: str | None


Action = Union[Read, Create, Update, Delete, Scratchpad, Answer]

ACTION_KINDS = ("read", "create", "update", "delete", "scratchpad", "answer")
# `env.action_set`: the AtomMem action language, or MemAgent's (rewrite one note every chunk, answer from it)
ACTION_SETS = {"atomic": frozenset(ACTION_KINDS), "overwrite": frozenset({"scratchpad", "answer"})}

PARSE_ERROR_KINDS = (
    "unclosed_tag",
    "unopened_tag",
    "nested_tag",
    "empty_body",
    "bad_id",
    "no_boxed",
    "outside_text",
    "truncated",
)

TAG_NAMES = ("update_query", "add_memory", "modify_memory", "delete_memory", "update_memory", "final_answer")

_KIND_OF_TYPE = {Read: "read", Create: "create", Update: "update", Delete: "delete", Scratchpad: "scratchpad", Answer: "answer"}
_TAG_OF_TYPE = {
    Read: "update_query",
    Create: "add_memory",
    Update: "modify_memory",
    Delete: "delete_memory",
    Scratchpad: "update_memory",
    Answer: "final_answer",
}

_TAG_RE = re.compile(r"<(/?)(" + "|".join(TAG_NAMES) + r")>")
# A tag token cut off at the very end of the text.
_LONGEST_TAG = max(len(n) for n in TAG_NAMES) + 3
_PARTIAL_TAG_RE = re.compile(r"</?[a-z_]*\Z")
_NON_SPACE_RE = re.compile(r"\S")
# Ids: at most 18 digits so int() is cheap and never hits Python's int-string limit.
_UPDATE_RE = re.compile(r"(?:memory\s*)?#?(\d{1,18})\s*:(.*)\Z", re.IGNORECASE | re.DOTALL)
_DELETE_RE = re.compile(r"(?:memory\s*)?#?(\d{1,18})\s*(?::.*)?\Z", re.IGNORECASE | re.DOTALL)
_BOXED_RE = re.compile(r"\\boxed\{|[{}]")
_SNIPPET = 40


@dataclass(frozen=True)
class ParseError:
    kind: str  # one of PARSE_ERROR_KINDS
    message: str  # short, human readable, shown to the agent in its next prompt
    position: int  # character offset in the response


@dataclass
class ParseResult:
    actions: list[Action]
    errors: list[ParseError]


def action_kind(a: Action) -> str:
    """The key of ``a`` in action counts (one of ACTION_KINDS)."""
    return _KIND_OF_TYPE[type(a)]


def tag_of(a: Action) -> str:
    """The tag name that writes ``a`` (``add_memory`` for a Create)."""
    return _TAG_OF_TYPE[type(a)]


def _snippet(s: str) -> str:
    return s if len(s) <= _SNIPPET else s[:_SNIPPET] + "..."


def extract_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` (nested braces allowed), stripped; None if none.

    One pass over the braces with a stack, so it is linear even on ``\\boxed{\\boxed{...`` soup.
    "Last" means the one that starts last among those whose braces close.
    """
    start = text.find("\\boxed{")
    if start < 0:
        return None
    stack: list[int] = []  # content start of each open brace; -1 for plain braces
    best_start, best_end = -1, -1
    for m in _BOXED_RE.finditer(text, start):
        tok = m.group()
        if tok == "}":
            if not stack:
                continue
            content_start = stack.pop()
            if content_start > best_start:
                best_start, best_end = content_start, m.start()
        else:
            stack.append(m.end() if tok != "{" else -1)
    if best_start < 0:
        return None
    return text[best_start:best_end].strip()


def _make_action(name: str, body: str, pos: int, actions: list[Action], errors: list[ParseError]) -> None:
    body = body.strip()
    if not body:
        errors.append(ParseError("empty_body", f"<{name}> at char {pos} has an empty body", pos))
        return
    if name == "update_query":
        actions.append(Read(body))
    elif name == "add_memory":
        actions.append(Create(body))
    elif name == "update_memory":
        actions.append(Scratchpad(body))
    elif name == "modify_memory":
        m = _UPDATE_RE.match(body)
        if m is None:
            errors.append(
                ParseError("bad_id", f"<modify_memory> needs 'Memory ID: new text', got '{_snippet(body)}'", pos)
            )
            return
        text = m.group(2).strip()
        if not text:
            errors.append(ParseError("empty_body", f"<modify_memory> for Memory {int(m.group(1))} has no new text", pos))
            return
        actions.append(Update(int(m.group(1)), text))
    elif name == "delete_memory":
        m = _DELETE_RE.match(body)
        if m is None:
            errors.append(ParseError("bad_id", f"<delete_memory> needs 'Memory ID', got '{_snippet(body)}'", pos))
            return
        actions.append(Delete(int(m.group(1))))
    else:  # final_answer
        answer = extract_boxed(body)
        if answer is None:
            errors.append(ParseError("no_boxed", f"<final_answer> at char {pos} has no \\boxed{{...}}", pos))
        actions.append(Answer(body, answer))


def parse_actions(text: str, strict: bool = False) -> ParseResult:
    """Parse a model response into actions and errors. Linear time; never raises."""
    actions: list[Action] = []
    errors: list[ParseError] = []
    open_name: str | None = None
    open_pos = 0  # position of the open tag token
    body_start = 0  # first char after the open tag token
    cursor = 0  # end of the last tag token
    outside_pos = -1  # first non-whitespace char outside any tag

    for m in _TAG_RE.finditer(text):
        closing, name = m.group(1), m.group(2)
        if open_name is None and outside_pos < 0:
            nm = _NON_SPACE_RE.search(text, cursor, m.start())
            if nm is not None:
                outside_pos = nm.start()
        if not closing:
            if open_name is not None:
                errors.append(
                    ParseError(
                        "nested_tag",
                        f"<{name}> at char {m.start()} opened inside <{open_name}> (char {open_pos}); "
                        f"<{open_name}> ignored",
                        open_pos,
                    )
                )
            open_name, open_pos, body_start = name, m.start(), m.end()
        elif open_name == name:
            _make_action(name, text[body_start : m.start()], open_pos, actions, errors)
            open_name = None
        else:
            errors.append(ParseError("unopened_tag", f"</{name}> at char {m.start()} closes no open <{name}>", m.start()))
        cursor = m.end()

    # A tag token cut off at the end (max_tokens hit mid-tag): one "truncated" error, not outside text.
    truncated_at = -1
    pm = _PARTIAL_TAG_RE.search(text, max(cursor, len(text) - _LONGEST_TAG))
    if pm is not None:
        frag = pm.group().lstrip("</")
        if (frag and any(n.startswith(frag) for n in TAG_NAMES)) or (not frag and open_name is not None):
            truncated_at = pm.start()
    if open_name is None and outside_pos < 0:
        nm = _NON_SPACE_RE.search(text, cursor, truncated_at if truncated_at >= 0 else len(text))
        if nm is not None:
            outside_pos = nm.start()
    if truncated_at >= 0:
        what = f"inside <{open_name}> " if open_name is not None else ""
        errors.append(ParseError("truncated", f"response cut off {what}at char {truncated_at}", truncated_at))
    elif open_name is not None:
        errors.append(ParseError("unclosed_tag", f"<{open_name}> at char {open_pos} is never closed", open_pos))

    if strict and outside_pos >= 0:
        errors.insert(
            0,
            ParseError("outside_text", f"text outside action tags at char {outside_pos}; no action applied", outside_pos),
        )
        return ParseResult([], errors)
    return ParseResult(actions, errors)


def final_answer(value: str) -> str:
    """`<final_answer>` for `value`, spaces inside the braces (stripped on parsing): the value then tokenizes
    as the word it is in memory or a chunk (" pie"), so a tiny model answers by copying one token."""
    return render_action(Answer(f"\\boxed{{ {value} }}", value))


def render_action(a: Action) -> str:
    """Canonical text of an action: one space inside each tag, so ``parse_actions`` gives ``a`` back."""
    tag = tag_of(a)
    if isinstance(a, Read):
        body = a.query
    elif isinstance(a, Update):
        body = f"Memory {a.id}: {a.text}"
    elif isinstance(a, Delete):
        body = f"Memory {a.id}"
    elif isinstance(a, Answer):
        body = a.text if a.text else f"\\boxed{{{a.answer}}}"
    else:
        body = a.text
    return f"<{tag}> {body} </{tag}>"
