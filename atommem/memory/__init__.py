"""Per-episode memory (scratchpad + long-term store with its own index) and the embedders behind it."""

from atommem.memory.embedders import (
    BatchingEmbedder,
    Embedder,
    EmbedderError,
    HashEmbedder,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
    make_embedder,
)
from atommem.memory.store import MemoryEntry, MemoryFullError, MemoryStore

__all__ = [
    "BatchingEmbedder",
    "Embedder",
    "EmbedderError",
    "HashEmbedder",
    "MemoryEntry",
    "MemoryFullError",
    "MemoryStore",
    "OpenAIEmbedder",
    "SentenceTransformerEmbedder",
    "make_embedder",
]
