"""Scoring past the training length: fresh synthetic dev samples with `eval.length_factors` times the
documents of `data.synth.doc_num`, and the env's chunk cap raised so the whole context is read.

A memory agent exists to read more than fits its window, so the demo scores its policy on contexts longer
than any it trained on. Everything but the length stays as trained: the task, the chunking (`env.chunk_by`,
`env.chunk_tokens`), the memory. `env.max_chunks` rises to the most chunks any of the samples needs, so no
context is middle-cut and the score is about reading, not about what the cut removed; a config capping the
reading turns (`env.max_read_steps`) gets that cap raised in proportion.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from atommem.config import Config, ConfigError
from atommem.data.schema import Sample

LENGTH_SEED_OFFSET = 4000  # + the factor: a generator stream of its own, apart from train/dev/test/val (data/prepare.py)


@dataclass
class LengthSplit:
    factor: int
    cfg: Config  # the config to play these samples under: doc_num x factor, max_chunks raised to fit
    samples: list[Sample]

    def describe(self) -> dict:
        env = self.cfg.env
        return {"factor": self.factor, "doc_num": self.cfg.data.synth.doc_num, "samples": len(self.samples),
                "chunk_by": env.chunk_by, "chunk_tokens": env.chunk_tokens, "max_chunks": env.max_chunks}


def length_splits(cfg: Config, model_path: str, num_samples: int) -> list[LengthSplit]:
    """One split per `eval.length_factors` entry, `eval.length_samples` (default `num_samples`) samples each,
    chunked by the tokenizer at `model_path` (the policy's) to size `env.max_chunks`."""
    from atommem.data.synthetic import generate_synthetic
    from atommem.env.chunking import chunk_documents
    from atommem.models.loading import load_tokenizer

    factors = cfg.eval.length_factors
    if not factors:
        return []
    synth = cfg.data.synth
    if synth.doc_num is None:
        raise ConfigError("eval.length_factors scale data.synth.doc_num: set it (the training length, in documents)")
    bad = [f for f in factors if f < 1]
    if bad:
        raise ConfigError(f"eval.length_factors must be >= 1, got {bad[0]}")
    n = cfg.eval.length_samples if cfg.eval.length_samples is not None else num_samples
    tokenizer = load_tokenizer(model_path)
    env = cfg.env
    out = []
    for factor in factors:
        long_synth = dataclasses.replace(synth, doc_num=synth.doc_num * factor)
        samples = generate_synthetic(long_synth, n=n, seed=synth.seed + LENGTH_SEED_OFFSET + factor)
        needed = max(len(chunk_documents(s.documents, env.chunk_tokens, env.chunk_overlap, 1 << 20, tokenizer,
                                         by=env.chunk_by).chunks) for s in samples)
        max_chunks = max(env.max_chunks, needed)
        read_steps = None if env.max_read_steps is None else env.max_read_steps * math.ceil(max_chunks / env.max_chunks)
        long_env = dataclasses.replace(env, max_chunks=max_chunks, max_read_steps=read_steps)
        long_cfg = dataclasses.replace(cfg, env=long_env, data=dataclasses.replace(cfg.data, synth=long_synth))
        out.append(LengthSplit(factor, long_cfg, samples))
    return out
