"""atommem/checkpoints.py without Ray: atomic publish, newest-complete lookup, retention, config check."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from atommem.config import load_config
from atommem.errors import UserError
from atommem.checkpoints import (
    CRASH_ENV,
    MANIFEST,
    CheckpointManager,
    IncompleteCheckpoint,
    atomic_dir,
    verify,
)


def write_ckpt(root: Path, step: int, **meta) -> Path:
    """A checkpoint shaped like a learner's: per-rank shard files under state/ plus `latest`."""
    with atomic_dir(root / f"step-{step}", {"step": step, **meta}) as staging:
        (staging / "state").mkdir()
        for rank in range(2):
            (staging / "state" / f"rank{rank}.pt").write_bytes(bytes([step]) * (100 + rank))
        (staging / "latest").write_text("state")
    return root / f"step-{step}"


def test_a_published_checkpoint_lists_every_file_and_leaves_no_staging(tmp_path):
    path = write_ckpt(tmp_path, 3, config={"grpo.group_size": 8})
    manifest = verify(path)
    assert manifest["files"] == {"latest": 5, "state/rank0.pt": 100, "state/rank1.pt": 101}
    assert manifest["step"] == 3 and manifest["config"] == {"grpo.group_size": 8}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-3"]


def test_an_error_inside_the_write_leaves_nothing_behind(tmp_path):
    write_ckpt(tmp_path, 1)
    with pytest.raises(RuntimeError, match="rank died"):
        with atomic_dir(tmp_path / "step-2") as staging:
            (staging / "half.pt").write_bytes(b"x" * 10)
            raise RuntimeError("rank died")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-1"]


def test_kill_9_inside_a_write_keeps_the_previous_checkpoint(tmp_path, capsys):
    """The crash hook kills the writer after its files are written and before the publish."""
    write_ckpt(tmp_path, 1)
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, 'tests'); "
        "from test_checkpoints import write_ckpt; write_ckpt(Path(sys.argv[1]), 2)"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=root, capture_output=True, text=True,
                         env={**os.environ, CRASH_ENV: "checkpoint-write:step-2"}, timeout=120)
    assert out.returncode == -signal.SIGKILL, out.stderr
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "step-1"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".step-2.partial-")
    assert (tmp_path / leftovers[0] / "state" / "rank1.pt").is_file()  # every rank's files, but no manifest

    manager = CheckpointManager(tmp_path)
    assert manager.latest().step == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and leftovers[0] in err[0]


def test_torn_and_unreadable_checkpoints_are_skipped_with_one_warning(tmp_path, capsys):
    write_ckpt(tmp_path, 1)
    write_ckpt(tmp_path, 2)
    truncated = write_ckpt(tmp_path, 5)
    (truncated / "state" / "rank1.pt").write_bytes(b"\x05" * 40)  # what a kill mid-write leaves
    legacy = tmp_path / "step-7" / "state"  # written in place, never finished: no manifest
    legacy.mkdir(parents=True)
    (legacy / "rank0.pt").write_bytes(b"x")
    garbled = write_ckpt(tmp_path, 6)
    (garbled / MANIFEST).write_text("{not json")
    missing = write_ckpt(tmp_path, 4)
    (missing / "state" / "rank0.pt").unlink()

    ckpt = CheckpointManager(tmp_path).latest()
    assert ckpt.step == 2 and ckpt.path == tmp_path / "step-2"
    (line,) = capsys.readouterr().err.strip().splitlines()
    for name, why in [("step-5", "rank1.pt has 40 of 101 bytes"), ("step-7", "no checkpoint.json"),
                      ("step-6", "unreadable"), ("step-4", "lacks state/rank0.pt")]:
        assert name in line and why in line, (name, line)
    with pytest.raises(IncompleteCheckpoint, match="40 of 101"):
        verify(truncated)


def test_no_checkpoint_at_all(tmp_path, capsys):
    assert CheckpointManager(tmp_path / "none").latest() is None
    assert CheckpointManager(tmp_path).latest() is None
    assert capsys.readouterr().err == ""


def test_retention_keeps_the_newest_complete_and_removes_leftovers(tmp_path):
    for step in (1, 2, 3, 4):
        write_ckpt(tmp_path, step)
    (tmp_path / ".step-5.partial-0123456789ab").mkdir()
    torn = tmp_path / "step-9"
    torn.mkdir()
    manager = CheckpointManager(tmp_path, keep=2)
    removed = manager.prune()
    assert sorted(p.name for p in removed) == [".step-5.partial-0123456789ab", "step-1", "step-2", "step-9"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-3", "step-4"]
    assert CheckpointManager(tmp_path, keep=0).prune() == []  # 0 keeps every complete one


def test_rewriting_a_step_replaces_a_torn_directory_of_that_name(tmp_path):
    torn = tmp_path / "step-2"
    (torn / "state").mkdir(parents=True)
    (torn / "state" / "rank0.pt").write_bytes(b"x")
    write_ckpt(tmp_path, 2)
    assert verify(torn)["files"]["state/rank0.pt"] == 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-2"]


def test_resume_under_a_different_config_names_the_keys_that_matter(tmp_path):
    cfg = load_config("configs/tiny_cpu.yaml")
    manager = CheckpointManager(tmp_path, cfg=cfg)
    path = manager.path(3)
    with atomic_dir(path, manager.meta(3, weight_version=3)) as staging:
        (staging / "f").write_text("x")
    ckpt = manager.latest()
    assert json.loads((path / MANIFEST).read_text())["weight_version"] == 3
    manager.check_compatible(ckpt)
    # Learning rate, step count and logging may change between runs of one training.
    CheckpointManager(tmp_path, cfg=load_config("configs/tiny_cpu.yaml", ["grpo.lr=1e-3", "trainer.steps=9"])).check_compatible(ckpt)
    other = load_config("configs/tiny_cpu.yaml", ["grpo.group_size=4", "model.tiny.hidden_size=64"])
    with pytest.raises(UserError) as err:
        CheckpointManager(tmp_path, cfg=other).check_compatible(ckpt)
    message = str(err.value)
    assert "grpo.group_size: 8 -> 4" in message and "model.tiny" in message and "trainer.run_dir" in message
    assert "grpo.lr" not in message
