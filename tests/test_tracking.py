"""RunLogger: metrics.jsonl rows, the config snapshot, and TensorBoard scalars read back from the event files."""

from __future__ import annotations

import math

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from atommem.config import Config, load_config
from atommem.tracking import RunLogger, read_metrics


def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_gets_each_numeric_value_under_its_phase_and_step(tmp_path):
    cfg = Config()
    cfg.grpo.lr = 3e-6
    logger = RunLogger(tmp_path, cfg, tensorboard=True)
    logger.log(1, {"loss": 0.5, "em": 1, "note": "text", "flag": True, "kl": math.nan})
    logger.log(2, {"loss": 0.25, "em": 0})
    logger.log(1, {"loss": 2.0}, phase="sft")
    logger.close()

    # numbers only: text and booleans are not scalars, and a NaN is left out rather than drawn
    assert _scalars(tmp_path / "tensorboard") == {
        "grpo/loss": [(1, 0.5), (2, 0.25)],
        "grpo/em": [(1, 1.0), (2, 0.0)],
        "sft/loss": [(1, 2.0)],
    }
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["phase"], r["step"], r["loss"]) for r in rows] == [("grpo", 1, 0.5), ("grpo", 2, 0.25), ("sft", 1, 2.0)]
    assert rows[0]["note"] == "text" and rows[0]["flag"] is True and math.isnan(rows[0]["kl"])
    assert load_config(tmp_path / "config.yaml").grpo.lr == 3e-6


def test_without_tensorboard_only_the_jsonl_is_written(tmp_path):
    logger = RunLogger(tmp_path, None, tensorboard=False)
    logger.log(1, {"loss": 0.5})
    logger.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]
