"""A scripted agent for the serving tests whose answers come only from the episode's memory.

Reading, it stores every `subject attribute value .` fact of the chunk. Answering `attribute of subject ?`,
it first queries memory, then boxes the value of the retrieved entry for that subject and attribute, or
`unknown` when the retrieval block has none: an app that dropped, shared or hid memory answers differently.
"""

from __future__ import annotations

import re

_QUESTION = re.compile(r"Question \d+ of \d+:\n(\w+) of (\w+) \?\n")
_QUERY = re.compile(r"Current query: (.*)\n")
_ENTRY = re.compile(r"^Memory \d+: (\w+) (\w+) (\w+)$", re.M)
_FACT = re.compile(r"\b(\w+ \w+ \w+) \.")


def _retrieved(prompt: str) -> str:
    return prompt.split("Retrieved memory:\n", 1)[1].split("\n\n", 1)[0]


def scripted_reply(prompt: str) -> str:
    """The response to one full-style prompt (see atommem/env/prompts.py)."""
    question = _QUESTION.search(prompt)
    if question is None:
        chunk = prompt.rsplit("Chunk ", 1)[-1]
        return " ".join(f"<add_memory> {fact} </add_memory>" for fact in _FACT.findall(chunk))
    attribute, subject = question.groups()
    values = [v for s, a, v in _ENTRY.findall(_retrieved(prompt)) if (s, a) == (subject, attribute)]
    if not values and _QUERY.search(prompt).group(1) == "(none)":
        return f"<update_query> {subject} {attribute} </update_query>"
    return f"<final_answer> \\boxed{{{values[0] if values else 'unknown'}}} </final_answer>"
