"""`Observation`: what one turn of a `MemoryEnv` shows the agent (rendered into prompts by `env/prompts.py`)."""

from __future__ import annotations

from dataclasses import dataclass

from atommem.memory.store import MemoryEntry


@dataclass
class Observation:
    phase: str  # "read" | "answer" | "done"
    questions: list[str]
    question_index: int  # answer phase: which question is posed (-1 while reading)
    chunk_index: int
    num_chunks: int
    chunk_text: str  # "" in the answer phase
    scratchpad: str
    query: str  # current persistent retrieval query ("" = none)
    retrieved: list[MemoryEntry]  # results for `query` (empty when no query)
    retrieved_text: str  # rendered, budget-truncated
    errors: list[str]  # last turn's action errors, human readable
    read_only_streak: int
