"""model.tiny.arch: qwen3, the architecture of the GPU config's Qwen3-8B (q/k norms, grouped-query attention,
untied embeddings; tied as in the small Qwen3s), through every path on CPU:
- the HF engine: logprobs equal an HF forward pass (fp32, <= 1e-4), tied and untied;
- a DeepSpeed ZeRO-3 GRPO step on the learner group, then the weight sync into an HF engine and a vLLM
  engine (vLLM packs q/k/v into qkv_proj and gate/up into gate_up_proj, so the learner's names must map),
  after which both engines' greedy tokens and logprobs are an HF forward pass of the learner's weights.
The vLLM path runs the untied model (Qwen3-8B's layout; tied embeddings through vLLM are the Llama tests').
Every weight is random and large, the q/k norms included, so a norm or projection mapped wrong changes
the tokens. Heads of 32 dims: vLLM's CPU attention kernels take 32, 64, 80, ...
"""

from __future__ import annotations

import asyncio
import copy
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from atommem.config import Config, TinyModelConfig
from atommem.engines.base import SamplingParams
from atommem.models.loading import load_model
from helpers_models import TEST_SYNTH
from vllm_support import forward_check, with_weights

QWEN3 = dict(arch="qwen3", hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=256,
             vocab_size=1000, seed=0)
PROMPTS = [[5, 9, 30], [7, 8, 41, 300], [40, 41, 42, 43, 44, 45]]
GREEDY = SamplingParams(temperature=0.0, max_tokens=12)
SAMPLED = SamplingParams(temperature=1.0, max_tokens=12, seed=7)


def scramble(model: torch.nn.Module, seed: int) -> list[tuple[str, torch.Tensor]]:
    """Large random weights for every parameter, norms (q/k norms too) around 1: diverse greedy outputs."""
    g = torch.Generator().manual_seed(seed)
    return [(n, (1.0 if "norm" in n else 0.0) + torch.randn(t.shape, generator=g) * 0.3) for n, t in model.named_parameters()]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[bool, Path]:
    """{tie_embeddings: a tiny Qwen3 directory with scrambled weights}."""
    from atommem.data.synthetic import synthetic_vocabulary
    from atommem.models.tiny import build_tiny_model, synthetic_corpus

    tmp = tmp_path_factory.mktemp("qwen3")
    corpus = synthetic_corpus(TEST_SYNTH, episodes=16)
    out = {}
    for tied in (True, False):
        path = build_tiny_model(TinyModelConfig(**QWEN3, tie_embeddings=tied), tmp / f"tied-{tied}", corpus,
                                synthetic_vocabulary(TEST_SYNTH))
        model = load_model(path)
        with_weights(model, scramble(model, seed=1)).save_pretrained(path)
        out[tied] = path
    return out


def test_the_tiny_qwen3_has_q_k_norms_grouped_query_attention_and_the_embeddings_asked_for(model_dirs):
    for tied, path in model_dirs.items():
        model = load_model(path)
        attn = model.model.layers[0].self_attn
        assert type(model).__name__ == "Qwen3ForCausalLM" and model.config.head_dim == 32
        assert attn.q_proj.weight.shape == (4 * 32, 128) and attn.k_proj.weight.shape == attn.v_proj.weight.shape == (2 * 32, 128)
        assert attn.q_norm.weight.shape == attn.k_norm.weight.shape == (32,)
        assert (model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()) is tied


def test_a_tiny_model_built_before_the_gqa_and_tying_settings_counts_them_as_their_defaults(model_dirs, tmp_path):
    import dataclasses
    import json
    import shutil

    from atommem.config import ModelConfig
    from atommem.errors import UserError
    from atommem.models.tiny import BUILD_RECORD, ensure_model

    path = tmp_path / "built-earlier"
    shutil.copytree(model_dirs[True], path)
    earlier = {k: v for k, v in dataclasses.asdict(TinyModelConfig()).items() if k not in ("num_kv_heads", "tie_embeddings")}
    (path / BUILD_RECORD).write_text(json.dumps({"tiny": earlier, "synth": dataclasses.asdict(TEST_SYNTH)}))
    assert ensure_model(ModelConfig(path=str(path), tiny=TinyModelConfig()), TEST_SYNTH) == path
    with pytest.raises(UserError, match=r"\(tiny.num_kv_heads, tiny.tie_embeddings differ\)"):
        ensure_model(ModelConfig(path=str(path), tiny=TinyModelConfig(num_kv_heads=2, tie_embeddings=False)), TEST_SYNTH)


def test_hf_engine_logprobs_equal_an_hf_forward_tied_and_untied(model_dirs):
    from atommem.engines.hf import HFEngine

    for tied, path in model_dirs.items():
        engine, model = HFEngine(str(path), max_batch_size=8, batch_wait_ms=0), load_model(path)

        async def run(params):
            return await asyncio.gather(*(engine.generate(p, params) for p in PROMPTS))

        greedy, sampled = asyncio.run(run(GREEDY)), asyncio.run(run(SAMPLED))
        assert len({tuple(g.token_ids) for g in greedy}) > 1  # not vacuous: the prompts decode differently
        worst = max([forward_check(model, p, g, greedy=True) for p, g in zip(PROMPTS, greedy)]
                    + [forward_check(model, p, g, greedy=False) for p, g in zip(PROMPTS, sampled)])
        print(f"qwen3 ({'tied' if tied else 'untied'}) HF engine vs HF forward: logprobs max |diff| {worst:.2e}")
        engine.close()


@pytest.fixture(scope="module")
def synced(ray_local, model_dirs):
    """One ZeRO-3 GRPO step of the learner group on the untied Qwen3, synced into an HF and a vLLM engine."""
    pytest.importorskip("vllm", reason="vLLM is installed by `make` (the cpu or gpu extra)")
    import ray

    from atommem.engines.fleet import EngineFleet
    from atommem.learner.grpo import group_advantages
    from atommem.learner.learner_group import LearnerGroup
    from test_learner_group import make_trajectories

    path = str(model_dirs[False])
    cfg = Config()
    cfg.model.path, cfg.learner.num_cpus, cfg.grpo.lr, cfg.grpo.kl_coef = path, 1, 1e-2, 0.0
    cfg.engine.num_cpus, cfg.engine.max_batch_size, cfg.engine.enforce_eager, cfg.engine.kv_cache_gb = 0.5, 8, True, 0.25
    vllm_cfg = copy.deepcopy(cfg)
    vllm_cfg.engine.kind = "vllm"
    assert cfg.learner.zero_stage == 3
    with ThreadPoolExecutor(3) as pool:  # they start at once: each spends its start importing and loading
        starting = [pool.submit(LearnerGroup, cfg, path), pool.submit(EngineFleet, cfg, path), pool.submit(EngineFleet, vllm_cfg, path)]
    learner, hf, vllm = parts = [f.result() for f in starting]
    try:
        disk, (engine,) = load_model(path), vllm.handles  # vLLM's own loader maps the HF names too
        loaded = ray.get([engine.generate.remote(p, GREEDY) for p in PROMPTS])
        print(f"qwen3 (untied) vLLM engine on the weights on disk vs HF forward: logprobs max |diff| "
              f"{max(forward_check(disk, p, g, greedy=True) for p, g in zip(PROMPTS, loaded)):.2e}")
        before = learner.weights_digest()
        trajectories = make_trajectories(len(load_model(path).model.embed_tokens.weight))
        advantages = group_advantages([t.reward for t in trajectories], [t.uid for t in trajectories])
        metrics = learner.update_grpo([(ray.put(t), float(a)) for t, a in zip(trajectories, advantages)])
        assert metrics["rows_consumed"] == sum(t.num_turns for t in trajectories)
        assert learner.weights_digest() != before  # the step moved the weights
        for fleet in (hf, vllm):  # each builds its own group with the learner (the second replaces the first)
            fleet.sync_weights(learner, 1)
        model = load_model(path)
        model.load_state_dict(learner.state_dict())  # strict: untied, lm_head is a parameter of its own
        yield learner, hf, vllm, model
    finally:
        for part in parts:
            part.shutdown()


def test_a_zero3_grpo_step_synced_into_hf_and_vllm_gives_the_learners_tokens(synced):
    import ray

    learner, hf, vllm, model = synced
    assert hf.weights_digests() == [learner.weights_digest()]
    outputs = {}
    for name, fleet in (("hf", hf), ("vllm", vllm)):
        (handle,) = fleet.handles
        greedy = ray.get([handle.generate.remote(p, GREEDY) for p in PROMPTS])
        sampled = ray.get([handle.generate.remote(p, SAMPLED) for p in PROMPTS])
        assert {g.weight_version for g in greedy + sampled} == {1}
        worst = max([forward_check(model, p, g, greedy=True) for p, g in zip(PROMPTS, greedy)]
                    + [forward_check(model, p, g, greedy=False) for p, g in zip(PROMPTS, sampled)])
        outputs[name] = [g.token_ids for g in greedy]
        print(f"qwen3 (untied) after a ZeRO-3 GRPO step and its sync, {name} engine vs HF forward of the learner's "
              f"weights: logprobs max |diff| {worst:.2e}")
    assert outputs["hf"] == outputs["vllm"] and len({tuple(t) for t in outputs["hf"]}) > 1
