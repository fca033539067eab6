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
