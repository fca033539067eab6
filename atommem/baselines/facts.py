"""What the scripted baselines know about synthetic text: fact lines and question shapes.

Synthetic facts are lines `"{entity} {attribute} {value} ."` and questions are
`"{attribute} of {entity} ?"` or `"{attribute} of friend of {entity} ?"` (see `atommem.data.synthetic`).
Scripted baselines read only what their real counterparts see (chunk text, questions, memory shown in
the prompt), never the sample's metadata or gold answers.
"""

from __future__ import annotations

import re

from atommem.data.synthetic import RELATION, UNKNOWN

Fact = tuple[str, str, str]

_MEMORY_PREFIX = re.compile(r"Memory \d+:")
_QUESTION = re.compile(r"^\s*(\S+) of (?:(\S+) of )?(\S+) \?\s*$")


def facts_in(text: str) -> list[Fact]:
    """Every `entity attribute value .` triple in `text` in order; a 3-word memory entry or scratchpad
    item (`Memory 3: zorp city lima`, items separated by newlines, `|` or `;`) is one too."""
    out: list[Fact] = []
    for segment in re.split(r"[\n|;]", _MEMORY_PREFIX.sub("\n", text)):
        words = segment.split()
        if len(words) == 3 and "." not in words:
            out.append((words[0], words[1], words[2]))
            continue
        for i in range(len(words) - 3):
            if words[i + 3] == "." and "." not in words[i : i + 3]:
                out.append((words[i], words[i + 1], words[i + 2]))
    return out


def question_path(question: str) -> tuple[str, list[str]] | None:
    """(entity, attribute path) of a synthetic question, e.g. ("zorp", ["friend", "city"]); None otherwise."""
    m = _QUESTION.match(question)
    if m is None:
        return None
    attribute, relation, entity = m.groups()
    if relation is not None and relation != RELATION:
        return None
    return entity, ([RELATION, attribute] if relation else [attribute])


def resolve(question: str, facts: list[Fact]) -> str:
    """Follow the question's chain through `facts` (later facts win); `unknown` when a hop is missing."""
    parsed = question_path(question)
    if parsed is None:
        return UNKNOWN
    entity, path = parsed
    table = {(e, a): v for e, a, v in facts}
    for attribute in path:
        value = table.get((entity, attribute))
        if value is None:
            return UNKNOWN
        entity = value
    return entity


def needed_pairs(questions: list[str], facts: list[Fact]) -> set[tuple[str, str]]:
    """(entity, attribute) pairs the questions need, following each chain as far as `facts` know it."""
    table = {(e, a): v for e, a, v in facts}
    need: set[tuple[str, str]] = set()
    for q in questions:
        parsed = question_path(q)
        if parsed is None:
            continue
        entity, path = parsed
        for attribute in path:
            need.add((entity, attribute))
            entity = table.get((entity, attribute))
            if entity is None:
                break
    return need
