"""Per-episode memory: a scratchpad plus long-term entries with stable ids and their own vector index.

Each episode owns one MemoryStore, so retrieval, modify and delete can only ever touch that
episode's entries (the reference shared one index across rollouts and matched by text).

Capacity: with `max_entries` set, `add` on a full store is refused (`full` says so beforehand; the env
turns it into an action error the agent sees). Ranking: cosine similarity, best first; scores within
`tie_margin` of the best score of their group count as equal and equal scores go to the OLDER entry
(lower id). With a margin above the spread that value words cause among entries sharing their entity and
attribute, a stale duplicate of a fact always outranks its newer copy, so storing a revision as a new
entry instead of modifying the old one really costs the answer.

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


class MemoryFullError(ValueError):
    """`add` on a store holding `max_entries` entries."""


class MemoryStore:
    """Scratchpad + long-term entries of ONE episode. Ids start at 1 and are never reused.

    Args:
        dim: embedding dimension of every entry and query.
        top_k: entries `search` returns by default (`memory.top_k`).
        render_budget_tokens: token budget of `render`'s block (`memory.render_budget_tokens`).
        count_tokens: how `render` counts tokens (the policy's tokenizer); whitespace tokens when None.
        max_entries: capacity; `add` on a full store raises MemoryFullError (None = unbounded).
        tie_margin: scores within this margin of their group's best count as equal; equal ones go to the older entry.
        min_score: `search` leaves out entries scoring below it (None: none left out).
    """

    _INITIAL_CAPACITY = 64

    def __init__(
        self,
        dim: int,
        top_k: int = 6,
        render_budget_tokens: int = 4096,
        count_tokens: Callable[[str], int] | None = None,
        max_entries: int | None = None,
        tie_margin: float = 0.0,
        min_score: float | None = None,
    ):
        if dim <= 0:
            raise ValueError(f"MemoryStore dim must be positive, got {dim}")
        if max_entries is not None and max_entries < 1:
            raise ValueError(f"MemoryStore max_entries must be >= 1 or None, got {max_entries}")
        if tie_margin < 0:
            raise ValueError(f"MemoryStore tie_margin must be >= 0, got {tie_margin}")
        self.dim = dim
        self.top_k = top_k
        self.max_entries = max_entries
        self.tie_margin = tie_margin
        self.min_score = min_score
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

    @property
    def full(self) -> bool:
        return self.max_entries is not None and self._n >= self.max_entries

    def add(self, text: str, embedding: np.ndarray) -> int:
        """Store a new entry and return its id (never one used before in this episode)."""
        if self.full:
            raise MemoryFullError(f"memory holds max_entries={self.max_entries} entries; delete one first")
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
        """Replace entry `id`'s text and embedding; False when no entry has that id."""
        row = self._row_of.get(id)
        if row is None:
            return False
        self._matrix[row] = self._unit(embedding)
        self._texts[id] = text
        return True

    def delete(self, id: int) -> bool:
        """Remove entry `id`; False when no entry has that id."""
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
        """Top-k entries by cosine similarity, best first, none below `min_score`; ties (within `tie_margin`) go to
        the lower id."""
        k = self.top_k if k is None else k
        n = self._n
        if k <= 0 or n == 0:
            return []
        scores = self._matrix[:n] @ self._unit(query_embedding)
        ids = self._row_ids[:n]
        if self.min_score is not None:
            kept = np.flatnonzero(scores >= self.min_score)
            scores, ids, n = scores[kept], ids[kept], len(kept)
        if self.tie_margin > 0:
            return [(MemoryEntry(int(ids[r]), self._texts[int(ids[r])]), float(scores[r])) for r in self._tied_order(scores, ids)[:k]]
        if n > k:
            # keep everything scoring at least the k-th best so ties at the cut are broken by id
            kth = np.partition(scores, n - k)[n - k]
            rows = np.flatnonzero(scores >= kth)
        else:
            rows = np.arange(n)
        order = rows[np.lexsort((ids[rows], -scores[rows]))][:k]
        return [(MemoryEntry(int(ids[r]), self._texts[int(ids[r])]), float(scores[r])) for r in order]

    def _tied_order(self, scores: np.ndarray, ids: np.ndarray) -> list[int]:
        """Rows best first: walking down the scores, every row within `tie_margin` of the first row of its
        group joins that group, and each group is ordered by id (older first)."""
        ranked = np.lexsort((ids, -scores))
        order: list[int] = []
        start = 0
        while start < len(ranked):
            end = start + 1
            while end < len(ranked) and scores[ranked[start]] - scores[ranked[end]] <= self.tie_margin:
                end += 1
            order += sorted(ranked[start:end].tolist(), key=lambda r: ids[r])
            start = end
        return order

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
