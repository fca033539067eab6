"""The tiny CPU policy: a small Llama/Qwen2/Qwen3 plus a tokenizer trained on the task's own text.

`ensure_model` builds it on first use from synthetic episodes played by the oracle through the real
env prompts, so the prompt words, the action tags and every synthetic name/value are single tokens.
The result is an ordinary Hugging Face directory (config, safetensors, tokenizer, chat template) that
the HF engine, vLLM and the learner load alike.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterable

import torch

from atommem.config import EnvConfig, MemoryConfig, ModelConfig, SynthConfig, TinyModelConfig
from atommem.errors import UserError
from atommem.models.loading import check_model_dir
from atommem.models.tokenizer import train_tokenizer

BUILD_RECORD = "atommem_tiny.json"  # written by ensure_model: the model.tiny and data.synth a build came from
CORPUS_EPISODES = 48  # oracle episodes per prompt style rendered into the tokenizer corpus


def _model_config(cfg: TinyModelConfig, tokenizer):
    from transformers import LlamaConfig, Qwen2Config, Qwen3Config

    kv_heads = cfg.num_heads if cfg.num_kv_heads is None else cfg.num_kv_heads
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=kv_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=cfg.tie_embeddings,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if cfg.hidden_size % cfg.num_heads:
        raise UserError(f"model.tiny.hidden_size {cfg.hidden_size} must be a multiple of num_heads {cfg.num_heads}")
    if kv_heads < 1 or cfg.num_heads % kv_heads:
        raise UserError(f"model.tiny.num_kv_heads {kv_heads} must divide num_heads {cfg.num_heads}")
    if cfg.arch == "llama":
        return LlamaConfig(**common)
    if cfg.arch == "qwen2":
        return Qwen2Config(**common)
    if cfg.arch == "qwen3":  # its head_dim is a setting of its own (128 by default): the width's share here
        return Qwen3Config(**common, head_dim=cfg.hidden_size // cfg.num_heads)
    raise UserError(f"model.tiny.arch {cfg.arch!r} is not one of llama, qwen2, qwen3")


def build_tiny_model(
    cfg: TinyModelConfig, out_dir: str | Path, corpus_texts: Iterable[str], extra_words: list[str] = (),
    variants: dict[str, list[str]] | None = None,
) -> Path:
    """Train the tokenizer on `corpus_texts`, initialise the model with `cfg.seed`, save both to `out_dir`."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    out = Path(out_dir)
    tokenizer = train_tokenizer(corpus_texts, cfg.vocab_size, list(extra_words), variants, cfg.split_digits)
    config = _model_config(cfg, tokenizer)
    torch.manual_seed(cfg.seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


class _TranscribingPolicy:
    """Wraps a policy and writes down what it sees and says: each new system prompt, each user message, each response."""

    def __init__(self, policy, texts: list[str], seen_system: set[str]):
        self.policy, self.texts, self.seen_system = policy, texts, seen_system

    async def act(self, env):
        system, user = env.prompt_messages()
        if system["content"] not in self.seen_system:
            self.seen_system.add(system["content"])
            self.texts.append(system["content"])
        out = await self.policy.act(env)
        self.texts += [user["content"], out.text]
        return out


def synthetic_corpus(synth_cfg: SynthConfig, episodes: int = CORPUS_EPISODES) -> list[str]:
    """Texts the tiny policy will see: oracle episodes on synthetic samples, rendered by the env prompts
    in both prompt styles (system prompt once per style, then each turn's user message and response)."""
    import asyncio

    from atommem.data.synthetic import generate_synthetic
    from atommem.env.episode import play_episode
    from atommem.env.memory_env import MemoryEnv
    from atommem.memory.embedders import HashEmbedder
    from atommem.policies.oracle import OraclePolicy

    samples = generate_synthetic(synth_cfg, n=episodes, seed=synth_cfg.seed)
    texts: list[str] = []
    seen_system: set[str] = set()

    # One document per chunk, as the demo configs read them (whitespace tokens: "Document i:", "notes i",
    # 4 per fact line): the prompts then look like the policy's, and on the revisions task every restated
    # fact meets its stored copy, so the corpus holds the update actions and `Memory N:` lines too.
    doc_words = 4 + 4 * synth_cfg.facts_per_chunk

    async def transcribe() -> None:
        for style in ("full", "compact"):
            env = MemoryEnv(EnvConfig(prompt_style=style, chunk_tokens=doc_words, chunk_overlap=0, max_chunks=1 << 10),
                            MemoryConfig(), HashEmbedder(dim=64))
            for sample in samples:
                env.reset(options={"sample": sample})
                await play_episode(env, _TranscribingPolicy(OraclePolicy(), texts, seen_system))

    asyncio.run(transcribe())
    return texts


def build_for_synthetic(cfg: TinyModelConfig, out_dir: str | Path, synth_cfg: SynthConfig) -> Path:
    """The tiny model for the synthetic task of `synth_cfg`: its words single tokens, and with `subject_tokens`
    the subject a token of its own before each attribute (" user city" -> [user@city, " city"])."""
    from atommem.data.synthetic import ATTRIBUTES, synthetic_vocabulary

    variants = None
    if cfg.subject_tokens:
        if synth_cfg.subject is None:
            raise UserError("model.tiny.subject_tokens needs data.synth.subject (the person whose word gets a token per attribute)")
        variants = {synth_cfg.subject: list(ATTRIBUTES)}
    return build_tiny_model(cfg, out_dir, synthetic_corpus(synth_cfg), synthetic_vocabulary(synth_cfg), variants)


def ensure_model(model_cfg: ModelConfig, synth_cfg: SynthConfig) -> Path:
    """The model directory of `model_cfg`; builds the tiny model there first when `tiny` is set and it is missing."""
    if not model_cfg.path:
        raise UserError("model.path is not set: give an HF model directory (or model.tiny settings plus a path to build it at)")
    path = Path(model_cfg.path)
    if model_cfg.tiny is not None:
        # What the tokenizer and weights were built from; a directory built from other settings is stale.
        record = {"tiny": dataclasses.asdict(model_cfg.tiny), "synth": dataclasses.asdict(synth_cfg)}
        record_file = path / BUILD_RECORD
        if not (path / "config.json").is_file():
            build_for_synthetic(model_cfg.tiny, path, synth_cfg)
            record_file.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
            return path
        if record_file.is_file():
            built = json.loads(record_file.read_text())
            # a setting added since that build counts as its default there
            defaults = {"tiny": dataclasses.asdict(TinyModelConfig()), "synth": dataclasses.asdict(SynthConfig())}
            changed = [f"{section}.{k}" for section in record for k in sorted(record[section])
                       if built.get(section, {}).get(k, defaults[section][k]) != record[section][k]]
            if changed:
                raise UserError(
                    f"model.path {path} holds a tiny model built from other settings ({', '.join(changed)} differ); "
                    "delete it to rebuild, or point model.path at a new directory"
                )
    check_model_dir(str(path))
    return path


def count_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
