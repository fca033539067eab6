"""Every shipped config loads; bad keys and types are errors naming the key; the Qwen3-8B configs carry the paper's settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from atommem.config import Config, ConfigError, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
GPUS_PER_NODE = 8  # the paper's 1x8 GPU node


def test_configs_exist():
    names = {p.name for p in CONFIGS}
    assert {"qwen3_8b_sft.yaml", "qwen3_8b_grpo.yaml"} <= names, names


def _leaves(tree: dict, keys: tuple = ()):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, keys + (key,))
        else:
            yield keys + (key,), value


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_loads_with_every_value_it_sets(path):
    cfg = load_config(path)
    leaves = list(_leaves(yaml.safe_load(path.read_text())))
    assert leaves
    for keys, want in leaves:
        got = cfg
        for key in keys:
            got = got[key] if isinstance(got, dict) else getattr(got, key)
        if isinstance(got, float) and isinstance(want, str):
            want = float(want)  # YAML 1.1 reads `1e-6` (no dot) as a string
        assert got == want, ".".join(keys)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_accepts_dotted_overrides(path):
    cfg = load_config(path, ["grpo.lr=3e-6", "rollout.max_workers=5", "trainer.run_dir=/tmp/x"])
    assert cfg.grpo.lr == pytest.approx(3e-6)
    assert cfg.rollout.max_workers == 5
    assert cfg.trainer.run_dir == "/tmp/x"


@pytest.mark.parametrize(
    "override, key",
    [
        ("grpo.learning_rate=1e-6", "grpo.learning_rate"),
        ("rollout.min_workers=two", "rollout.min_workers"),
        ("engine.kind=tensorrt", "engine.kind"),
        ("sampling.top_p=[1]", "sampling.top_p"),
        ("nosuchsection.x=1", "nosuchsection"),
    ],
)
def test_bad_override_names_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(CONFIGS[0], [override])


def test_bad_key_and_type_in_a_file_name_the_key(tmp_path):
    bad_key = tmp_path / "bad_key.yaml"
    bad_key.write_text("rollout:\n  num_workers: 2\n  autoscale: true\n")
    with pytest.raises(ConfigError, match=r"rollout\.autoscale"):
        load_config(bad_key)
    bad_type = tmp_path / "bad_type.yaml"
    bad_type.write_text("learner:\n  num_gpus: lots\n")
    with pytest.raises(ConfigError, match=r"learner\.num_gpus"):
        load_config(bad_type)


def _gpus(cfg: Config) -> float:
    engines = cfg.engine.num_engines * cfg.engine.num_gpus * cfg.engine.tensor_parallel_size
    learners = cfg.learner.num_learners * cfg.learner.num_gpus
    return engines + learners  # engines and learners never share a GPU


@pytest.mark.parametrize("name", ["qwen3_8b_sft.yaml", "qwen3_8b_grpo.yaml"])
def test_qwen3_configs_carry_the_paper_settings(name):
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / name)
    assert cfg.model.dtype == "bfloat16"
    assert (cfg.sampling.temperature, cfg.sampling.top_p, cfg.sampling.max_tokens) == (1.0, 0.99, 4096)
    assert (cfg.env.max_chunks, cfg.env.chunk_tokens, cfg.env.chunk_overlap) == (40, 4000, 100)
    assert cfg.data.synth.doc_num == 200
    assert cfg.memory.top_k == 6
    assert cfg.embedder.kind == "openai" and "Qwen3-Embedding" in cfg.embedder.model
    assert cfg.embedder.base_url and cfg.embedder.query_instruction.strip()
    assert cfg.learner.zero_stage == 3
    assert cfg.learner.num_gpus >= 1
    assert _gpus(cfg) <= GPUS_PER_NODE
    assert cfg.rollout.worker_resource  # rollout workers land on the autoscaled CPU nodes
    assert cfg.rollout.min_workers <= cfg.rollout.num_workers <= cfg.rollout.max_workers


def test_qwen3_grpo_config_is_the_paper_recipe():
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "qwen3_8b_grpo.yaml")
    g = cfg.grpo
    assert (g.group_size, g.batch_groups) == (8, 8)
    assert g.lr == pytest.approx(1e-6)
    assert (g.clip_low, g.clip_high, g.dual_clip, g.kl_coef) == (0.2, 0.28, 3.0, 0.001)
    assert g.std_normalize is False
    assert cfg.engine.kind == "vllm" and cfg.engine.num_gpus >= 1
    assert _gpus(cfg) == GPUS_PER_NODE  # every GPU of the node is used
    # One step's episodes fit in the pool at its starting size.
    assert g.group_size * g.batch_groups <= cfg.rollout.num_workers * cfg.rollout.envs_per_worker


def test_qwen3_sft_config_keeps_good_teacher_episodes():
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "qwen3_8b_sft.yaml")
    assert cfg.sft.min_reward == 0.5
    assert cfg.sft.teacher == "openai" and cfg.engine.base_url
    assert cfg.learner.num_learners * cfg.learner.num_gpus == GPUS_PER_NODE


@pytest.mark.parametrize("name", ["tiny_cpu.yaml", "tiny_cpu_v1.yaml", "tiny_cpu_60min.yaml", "tiny_cpu_overwrite.yaml"])
def test_demo_config_chunks_hold_exactly_one_document_of_whole_facts(tmp_path, name):
    """The demo configs size chunk_tokens to one document (facts_per_chunk facts) of the tiny tokenizer: a
    chunk boundary inside a fact would leave the policy half a fact to copy (the demo's copy skill depends on it)."""
    import dataclasses
    import re

    from atommem.data.synthetic import generate_synthetic
    from atommem.env.chunking import chunk_documents
    from atommem.models.loading import load_tokenizer
    from atommem.models.tiny import ensure_model

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / name)
    tok = load_tokenizer(ensure_model(dataclasses.replace(cfg.model, path=str(tmp_path / "m")), cfg.data.synth))
    per_doc = cfg.data.synth.facts_per_chunk
    header = r"Document \d+:\n" if cfg.env.chunk_by == "tokens" else ""  # by documents a chunk has no position header
    doc = re.compile(r"^%snotes \d+\n((?: \w+ \w+ \w+ \.){%d})$" % (header, per_doc))
    for sample in generate_synthetic(cfg.data.synth, n=50, seed=3):
        chunks = chunk_documents(
            sample.documents, cfg.env.chunk_tokens, cfg.env.chunk_overlap, cfg.env.max_chunks, tok, by=cfg.env.chunk_by
        )
        assert not chunks.truncated
        assert [doc.match(c)[1] for c in chunks.chunks] == [d.text for d in sample.documents]


def _flat_config(name: str) -> dict:
    import dataclasses

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    return flat(dataclasses.asdict(load_config(Path(__file__).resolve().parents[1] / "configs" / name)))


def test_the_60min_config_is_the_demo_with_more_training_only():
    """The longer run's numbers stand for the demo's task and model: the two configs may differ in training time only."""
    demo, long = _flat_config("tiny_cpu.yaml"), _flat_config("tiny_cpu_60min.yaml")
    assert {k for k in demo if demo[k] != long[k]} == {"sft.steps", "sft.time_budget_s", "trainer.time_budget_s", "trainer.eval_every"}
    assert long["sft.steps"] > demo["sft.steps"] and long["trainer.time_budget_s"] > demo["trainer.time_budget_s"]


def test_the_overwrite_config_is_the_demo_with_memagents_action_set_only():
    """Atomic vs overwrite is a comparison of action sets: same task, model, data and training budgets."""
    demo, over = _flat_config("tiny_cpu.yaml"), _flat_config("tiny_cpu_overwrite.yaml")
    assert {k for k in demo if demo[k] != over[k]} == {"env.action_set", "sft.teacher"}
    assert (over["env.action_set"], over["sft.teacher"]) == ("overwrite", "memagent-scripted")
