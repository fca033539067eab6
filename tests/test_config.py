import pytest

from atommem.config import Config, ConfigError, load_config


def test_defaults_match_paper_settings():
    cfg = Config()
    assert (cfg.grpo.group_size, cfg.grpo.batch_groups, cfg.grpo.clip_low, cfg.grpo.clip_high) == (8, 8, 0.2, 0.28)
    assert (cfg.memory.top_k, cfg.env.chunk_tokens, cfg.env.chunk_overlap, cfg.env.max_chunks) == (6, 4000, 100, 40)


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("grpo:\n  lr: 1e-6\nenv:\n  chunk_tokens: 64\n")
    cfg = load_config(p, ["grpo.kl_coef=0.02", "engine.kind=openai", "eval.policies=[rag, oracle]"])
    assert cfg.grpo.lr == 1e-6 and cfg.env.chunk_tokens == 64 and cfg.grpo.kl_coef == 0.02
    assert cfg.engine.kind == "openai" and cfg.eval.policies == ["rag", "oracle"]
    assert cfg.model.tiny is None
    cfg = load_config(None, ["model.tiny.hidden_size=64"])
    assert cfg.model.tiny.hidden_size == 64 and cfg.model.tiny.num_layers == 4


@pytest.mark.parametrize(
    "text, needle",
    [
        ("grpo:\n  lrr: 1\n", "grpo.lrr"),
        ("grpoo:\n  lr: 1\n", "grpoo"),
        ("grpo:\n  group_size: eight\n", "grpo.group_size"),
        ("engine:\n  kind: tpu\n", "engine.kind"),
        ("env:\n  strict_format: 1\n", "env.strict_format"),
        ("sft:\n  teacher_workers: -1\n", "sft.teacher_workers"),
        ("env:\n  chunk_by: documents\n", "env.chunk_overlap must be 0"),
        ("env:\n  chunk_by: pages\n", "env.chunk_by"),
        ("- a\n- b\n", "mapping"),
        ("memory:\n  min_score: 1.5\n", "memory.min_score is a cosine score"),
        ("memory:\n  min_score: -2\n", "memory.min_score is a cosine score"),
        ("memory:\n  tie_margin: -0.1\n", "memory.tie_margin must be >= 0"),
        ("memory:\n  top_k: 0\n", "memory.top_k must be >= 1"),
        ("memory:\n  max_entries: 0\n", "memory.max_entries must be >= 1"),
        ("learner:\n  adam_eps: 0\n", "learner.adam_eps must be > 0"),
        ("learner:\n  adam_betas: [0.9]\n", "learner.adam_betas must be two numbers"),
        ("learner:\n  adam_betas: [0.9, 1.0]\n", "learner.adam_betas must be two numbers"),
        ("pretrain:\n  prompt_share: 1.5\n", "pretrain.prompt_share must be in"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, needle):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(p)


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
