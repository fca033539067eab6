"""Per-episode memory: a scratchpad plus long-term entries with stable ids and their own vector index.

Each episode owns one MemoryStore, so retrieval, modify and delete can only ever touch that
episode's entries (the reference shared one index across rollouts and matched by text).

Index choice: a preallocated float32 numpy matrix. For the ~200 entries of an episode a matrix-vector
product plus argpartition measured ~9 us per top-6 search against ~20 us for faiss
IndexIDMap2(IndexFlatIP) (faiss' per-call overhead dominates at this size), and delete is an O(dim)
swap-with-last-row instead of faiss' O(n) remove_ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class MemoryEntry:
    id: int
    text: str


def whitespace_token_count(text: str) -> int:
    return len(text.split())


class MemoryStore:
    """Scratchpad + long-term entries of ONE episode. Ids start at 1 and are never reused."""

    _INITIAL_CAPACITY = 64

    def __init__(
        self,
        dim: int,
        top_k: int = 6,
        render_budget_tokens: int = 4096,
        count_tokens: Callable[[str], int] | None = None,
    ):
        if dim <= 0:
            raise ValueError(f"MemoryStore dim must be positive, got {dim}")
        self.dim = dim
        self.top_k = top_k
        self.render_budget_tokens = render_budget_tokens
        self.count_tokens = count_tokens or whitespace_token_count
        self.scratchpad = ""
        self._texts: dict[int, str] = {}  # id -> text; insertion order == id order (ids only grow)
        self._next_id = 1
        self._matrix = np.zeros((self._INITIAL_CAPACITY, dim), dtype=np.float32)
        self._row_ids = np.zeros(self._INITIAL_CAPACITY, dtype=np.int64)  # row -> id
        self._row_of: dict[int, int] = {}  # id -> row
        self._n = 0  # rows in use

    def _unit(self, embedding: np.ndarray) -> np.ndarray:
        v = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if v.shape[0] != self.dim:
            raise ValueError(f"embedding has dim {v.shape[0]}, this MemoryStore expects {self.dim}")
        norm = float(np.linalg.norm(v))
        return v / norm if norm > 0 else v

    def add(self, text: str, embedding: np.ndarray) -> int:
        vec = self._unit(embedding)
        if self._n == self._matrix.shape[0]:
            self._matrix = np.concatenate([self._matrix, np.zeros_like(self._matrix)])
            self._row_ids = np.concatenate([self._row_ids, np.zeros_like(self._row_ids)])
        new_id = self._next_id
        self._next_id += 1
        row = self._n
        self._matrix[row] = vec
        self._row_ids[row] = new_id
        self._row_of[new_id] = row
        self._texts[new_id] = text
        self._n += 1
        return new_id

    def modify(self, id: int, text: str, embedding: np.ndarray) -> bool:
        row = self._row_of.get(id)
        if row is None:
            return False
        self._matrix[row] = self._unit(embedding)
        self._texts[id] = text
        return True

    def delete(self, id: int) -> bool:
        row = self._row_of.pop(id, None)
        if row is None:
            return False
        del self._texts[id]
        last = self._n - 1
        if row != last:  # move the last row into the hole
            moved = int(self._row_ids[last])
            self._matrix[row] = self._matrix[last]
            self._row_ids[row] = moved
            self._row_of[moved] = row
        self._n = last
        return True

    def get(self, id: int) -> str | None:
        return self._texts.get(id)

    def entries(self) -> list[MemoryEntry]:
        return [MemoryEntry(i, t) for i, t in self._texts.items()]

    def __len__(self) -> int:
        return self._n

    def __contains__(self, id: object) -> bool:
        return id in self._texts

    def search(self, query_embedding: np.ndarray, k: int | None = None) -> list[tuple[MemoryEntry, float]]:
        """Top-k entries by cosine similarity, best first; ties go to the lower id."""
        k = self.top_k if k is None else k
        n = self._n
        if k <= 0 or n == 0:
            return []
        scores = self._matrix[:n] @ self._unit(query_embedding)
        ids = self._row_ids[:n]
        if n > k:
            # keep everything scoring at least the k-th best so ties at the cut are broken by id
            kth = np.partition(scores, n - k)[n - k]
            rows = np.flatnonzero(scores >= kth)
        else:
            rows = np.arange(n)
        order = rows[np.lexsort((ids[rows], -scores[rows]))][:k]
        return [(MemoryEntry(int(ids[r]), self._texts[int(ids[r])]), float(scores[r])) for r in order]

    def render(self, results: list[MemoryEntry]) -> str:
        """``Memory {id}: {text}`` lines in the given (rank) order, stopping before the token budget is exceeded."""
        lines: list[str] = []
        used = 0
        for e in results:
            line = f"Memory {e.id}: {e.text}"
            cost = self.count_tokens(line)
            if used + cost > self.render_budget_tokens:
                break
            lines.append(line)
            used += cost
        return "\n".join(lines)
