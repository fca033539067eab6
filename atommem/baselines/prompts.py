"""Every prompt text of the model-driven baselines, in one place (the AtomMem agent's are in env/prompts.py).

Each baseline is a fixed workflow: the model only writes the memory text or the answer, and the policy
wraps it in the action tag the workflow prescribes, so a baseline never loses a turn to a format slip.
"""

from __future__ import annotations

MEMAGENT_READ_SYSTEM = (
    "You read a long context one chunk at a time and keep a memory of what will help answer the questions. "
    "Rewrite the whole memory: keep what still matters, add what the new chunk says about the questions. "
    "Reply with the new memory only."
)
MEMAGENT_ANSWER_SYSTEM = (
    "Answer the question from your memory. Put a short answer inside \\boxed{}, e.g. \\boxed{London}."
)
RAG_ANSWER_SYSTEM = (
    "Answer the question from the retrieved passages. Put a short answer inside \\boxed{}, e.g. \\boxed{London}."
)
TRUNCATE_ANSWER_SYSTEM = (
    "Answer the question from the context (its middle may be cut). Put a short answer inside \\boxed{}, "
    "e.g. \\boxed{London}."
)


def _numbered(questions: list[str]) -> str:
    return "\n".join(f"{i + 1}. {q}" for i, q in enumerate(questions))


def memagent_read(questions: list[str], memory: str, chunk: str) -> list[dict]:
    user = f"Questions:\n{_numbered(questions)}\n\nMemory:\n{memory or '(empty)'}\n\nNew chunk:\n{chunk}\n\nNew memory:"
    return [{"role": "system", "content": MEMAGENT_READ_SYSTEM}, {"role": "user", "content": user}]


def memagent_answer(question: str, memory: str) -> list[dict]:
    user = f"Memory:\n{memory or '(empty)'}\n\nQuestion: {question}"
    return [{"role": "system", "content": MEMAGENT_ANSWER_SYSTEM}, {"role": "user", "content": user}]


def rag_answer(question: str, passages: str) -> list[dict]:
    user = f"Retrieved passages:\n{passages or '(none)'}\n\nQuestion: {question}"
    return [{"role": "system", "content": RAG_ANSWER_SYSTEM}, {"role": "user", "content": user}]


def truncate_answer(question: str, context: str) -> list[dict]:
    user = f"Context:\n{context}\n\nQuestion: {question}"
    return [{"role": "system", "content": TRUNCATE_ANSWER_SYSTEM}, {"role": "user", "content": user}]
