"""EngineFleet: the one owner of a run's engine actors (start with one set of settings, health, shutdown).
Weight sync through the fleet is covered with a real learner group in test_learner_group.py."""

from __future__ import annotations

import pytest

from atommem.config import Config
from atommem.engines.base import SamplingParams
from atommem.engines.fleet import EngineFleet
from atommem.errors import EngineError
from helpers_models import make_tiny_model_dir

pytestmark = pytest.mark.ray


def _cfg(**engine) -> Config:
    cfg = Config()
    cfg.engine.num_engines, cfg.engine.num_cpus, cfg.engine.max_batch_size = 2, 0.5, 4
    for k, v in engine.items():
        setattr(cfg.engine, k, v)
    return cfg


def test_fleet_starts_every_engine_ready_and_shutdown_kills_them(ray_local, tmp_path):
    model_dir = str(make_tiny_model_dir(tmp_path))
    fleet = EngineFleet(_cfg(), model_dir)
    handles = list(fleet.handles)
    reports = fleet.health()
    assert len(fleet) == 2 and all(r["ready"] and r["weight_version"] == 0 for r in reports)
    greedy = SamplingParams(temperature=0.0, max_tokens=4)
    outs = ray_local.get([h.generate.remote([5, 9, 30], greedy) for h in handles])
    assert outs[0].token_ids == outs[1].token_ids  # same weights, same settings
    fleet.shutdown()
    assert fleet.handles == []
    with pytest.raises(ray_local.exceptions.RayActorError):
        ray_local.get(handles[0].health.remote(), timeout=30)


def test_fleet_that_cannot_be_placed_says_which_settings_to_lower(ray_local, tmp_path):
    with pytest.raises(EngineError, match="engine.num_cpus"):
        EngineFleet(_cfg(num_cpus=64, num_engines=1), str(make_tiny_model_dir(tmp_path)), start_timeout_s=3)
