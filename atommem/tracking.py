"""Run directories: config snapshot, per-step metrics (JSONL, TensorBoard, optional W&B) and plots."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable

from atommem.config import Config, save_config


class RunLogger:
    """Appends one JSON object per step to `<run_dir>/metrics.jsonl` and mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: str | Path, cfg: Config | None = None, tensorboard: bool = True, wandb: bool = False):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if cfg is not None:
            save_config(cfg, self.run_dir / "config.yaml")
        self.path = self.run_dir / "metrics.jsonl"
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        self._wandb = None
        if wandb:
            import wandb as wandb_mod  # optional; not a dependency

            os.environ.setdefault("WANDB_MODE", "offline")
            self._wandb = wandb_mod.init(dir=str(self.run_dir), config=None, reinit=True)

    def log(self, step: int, record: dict[str, Any], phase: str = "grpo") -> dict:
        row = {"phase": phase, "step": step, "time": time.time(), **record}
        with self.path.open("a") as f:
            f.write(json.dumps(row, default=float) + "\n")
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self._tb is not None:
            for k, v in scalars.items():
                if math.isfinite(v):
                    self._tb.add_scalar(f"{phase}/{k}", v, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log({f"{phase}/{k}": v for k, v in scalars.items()}, step=step)
        return row

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def plot_series(
    rows: Iterable[dict], keys: list[str], out_png: str | Path, title: str, x: str = "step", phase: str | None = None
) -> Path | None:
    """One line per key over `x`; rows lacking a key are skipped. Returns None when nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if phase is None or r.get("phase") == phase]
    fig, ax = plt.subplots(figsize=(7, 4))
    plotted = False
    for key in keys:
        pts = [(r[x], r[key]) for r in rows if key in r and r[key] is not None and x in r]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o" if len(pts) < 30 else None, label=key)
            plotted = True
    if not plotted:
        plt.close(fig)
        return None
    ax.set_xlabel(x)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)
