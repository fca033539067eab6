"""Learning-rate schedule multipliers and the DeepSpeed config, checked by hand (no Ray, no DeepSpeed)."""

from __future__ import annotations

import math

import pytest

from atommem.config import Config
from atommem.learner.learner_worker import deepspeed_config, lr_lambda


def test_warmup_then_constant():
    f = lr_lambda(warmup_steps=4, total_steps=100, schedule="constant")
    assert [f(s) for s in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


def test_warmup_then_cosine_to_zero():
    f = lr_lambda(warmup_steps=2, total_steps=12, schedule="cosine")
    assert f(0) == pytest.approx(0.5)
    assert f(2) == pytest.approx(1.0)
    assert f(7) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))  # half way through the decay
    assert f(12) == pytest.approx(0.0, abs=1e-12) and f(50) == pytest.approx(0.0, abs=1e-12)


def test_deepspeed_config_cpu_vs_gpu():
    cfg = Config()
    cpu = deepspeed_config(cfg, on_gpu=False, lr=1e-5)
    gpu = deepspeed_config(cfg, on_gpu=True, lr=1e-5)
    assert cpu["zero_optimization"]["stage"] == 3 and cpu["gradient_clipping"] == cfg.learner.grad_clip
    assert cpu["optimizer"]["params"]["torch_adam"] is True and cpu["bf16"]["enabled"] is False
    assert gpu["optimizer"]["params"]["torch_adam"] is False and gpu["bf16"]["enabled"] is True


def test_cosine_decays_to_its_floor_and_stays_there():
    f = lr_lambda(warmup_steps=0, total_steps=10, schedule="cosine", min_ratio=0.1)
    assert f(0) == pytest.approx(1.0) and f(5) == pytest.approx(0.1 + 0.9 * 0.5)
    assert f(10) == pytest.approx(0.1) and f(10_000) == pytest.approx(0.1)  # the control trains on at the floor


def test_min_lr_ratio_out_of_range_is_a_config_error():
    from atommem.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="learner.min_lr_ratio must be in"):
        load_config(overrides=["learner.min_lr_ratio=1.5"])


def test_hold_steps_keep_the_full_lr_before_the_cosine_starts():
    held = lr_lambda(warmup_steps=2, total_steps=12, schedule="cosine", min_ratio=0.1, hold_steps=4)
    plain = lr_lambda(warmup_steps=2, total_steps=12, schedule="cosine", min_ratio=0.1)
    assert [held(s) for s in range(6)] == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0] and plain(5) < 1.0
    assert held(9) == pytest.approx(0.1 + 0.9 * 0.5) and held(12) == pytest.approx(0.1)  # half-way through 6..12


def test_sft_hold_steps_reach_the_supervised_stages_learner_only():
    from atommem.config import load_config
    from atommem.trainer.pretrain import sft_learner_config

    cfg = load_config(overrides=["sft.lr_schedule=cosine", "sft.hold_steps=30"])
    assert sft_learner_config(cfg).learner.hold_steps == 30 and cfg.learner.hold_steps == 0


def test_the_base_stage_keeps_a_constant_lr_under_sfts_cosine():
    from atommem.config import load_config
    from atommem.trainer.pretrain import base_learner_config

    cfg = load_config(overrides=["sft.lr_schedule=cosine", "sft.hold_steps=30", "sft.learner_cpus=2", "sft.zero_stage=0"])
    base = base_learner_config(cfg).learner
    assert (base.lr_schedule, base.hold_steps, base.num_cpus, base.zero_stage) == ("constant", 0, 2, 0)


def test_adam_settings_reach_the_deepspeed_optimizer():
    from atommem.config import load_config

    cfg = load_config(overrides=["learner.adam_eps=1e-5", "learner.adam_betas=[0.9, 0.95]"])
    params = deepspeed_config(cfg, on_gpu=False, lr=1e-5)["optimizer"]["params"]
    assert params["eps"] == 1e-5 and params["betas"] == [0.9, 0.95]
    assert deepspeed_config(Config(), on_gpu=False, lr=1e-5)["optimizer"]["params"]["eps"] == 1e-8  # torch's default
