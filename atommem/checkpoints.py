"""Crash-safe training checkpoints on a (shared) file system: atomic publish, newest-complete lookup,
retention and a config-compatibility check. No Ray here, so all of it is unit-testable.

Writing `<root>/step-N`: every file (each learner rank's DeepSpeed shards and RNG state, the trainer's
sampler and RNG state inside rank 0's client state) goes into a staging directory beside it
(`<root>/.step-N.partial-<nonce>`). Every file and directory is fsynced, then a manifest
(`checkpoint.json`: each file's size, the step, the config keys a resume depends on) is written last
and fsynced, and one rename publishes the directory. A kill at any moment leaves the earlier
checkpoints untouched plus, at worst, a staging leftover that is never loaded.

Reading: a checkpoint counts only when its manifest parses and lists exactly the files present with
their sizes. `CheckpointManager.latest` returns the newest such one and names every skipped
directory (torn by a kill, written before manifests existed, a staging leftover) in one warning line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import sys
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from atommem.config import Config, to_dict
from atommem.errors import UserError

MANIFEST = "checkpoint.json"
FORMAT = 1
CRASH_ENV = "ATOMMEM_CRASH_AT"  # test hook: "<point>:<checkpoint name>" SIGKILLs this process there
_STEP = re.compile(r"^step-(\d+)$")
_STAGING = re.compile(r"^\.(.+)\.(partial|replaced)-[0-9a-f]+$")

# Config keys a checkpoint cannot be resumed under a different value of: the weights' shape and
# dtype, the data order it recorded a position in, the batch layout, and the rank layout of the files.
RESUME_KEYS = (
    "model.path",
    "model.dtype",
    "model.tiny",
    "data.train",
    "grpo.group_size",
    "grpo.batch_groups",
    "learner.num_learners",
    "learner.zero_stage",
    "trainer.seed",
)


class IncompleteCheckpoint(UserError):
    """A checkpoint directory that must not be loaded; the message says why."""


def crash_point(point: str, name: str) -> None:
    """Test hook: kill -9 this process when $ATOMMEM_CRASH_AT is `<point>:<name>` (e.g. checkpoint-write:step-2)."""
    if os.environ.get(CRASH_ENV) == f"{point}:{name}":
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


# ----------------------------------------------------------------------------- what the weights are


def weights_digest(named_tensors: Iterable[tuple[str, Any]]) -> str:
    """sha256 of a set of named tensors: each one's name, dtype, shape and bytes, taken in name order, so
    two sets digest equal exactly when they hold the same weights under the same names. Streams: pass
    tensors one at a time (a gathered ZeRO-3 bucket, an engine's parameters), none is kept."""
    import torch

    entries = []
    for name, tensor in named_tensors:
        t = tensor.detach().to("cpu").contiguous()
        raw = t.view(torch.uint8) if t.dim() else t.reshape(1).view(torch.uint8)
        entries.append((name, str(t.dtype), tuple(t.shape), hashlib.sha256(raw.numpy().tobytes()).hexdigest()))
    return hashlib.sha256(json.dumps(sorted(entries)).encode()).hexdigest()


# ----------------------------------------------------------------------------- durability


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | Path) -> None:
    """fsync every file under `root`, then every directory bottom-up (so new names are durable too)."""
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            _fsync_path(Path(dirpath) / name)
        _fsync_path(Path(dirpath))


def _file_sizes(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): p.stat().st_size
        for p in sorted(root.rglob("*"))
        if p.is_file() and p != root / MANIFEST
    }


def _nonce() -> str:
    return uuid.uuid4().hex[:12]


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def publish(staging: Path, final: Path, meta: dict[str, Any] | None = None) -> Path:
    """Make `staging` durable, write its manifest last, then rename it to `final` (replacing any old one)."""
    fsync_tree(staging)
    manifest = {"format": FORMAT, "name": final.name, **(meta or {}), "files": _file_sizes(staging)}
    tmp = staging / f".{MANIFEST}.tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, staging / MANIFEST)
    _fsync_path(staging)
    old = None
    if final.exists():  # a torn leftover of the same step, or a deliberate rewrite: moved aside, then removed
        old = final.parent / f".{final.name}.replaced-{_nonce()}"
        os.rename(final, old)
    os.rename(staging, final)
    _fsync_path(final.parent)
    if old is not None:
        _remove(old)
    return final


@contextmanager
def atomic_dir(final: str | Path, meta: dict[str, Any] | None = None) -> Iterator[Path]:
    """Yield a staging directory beside `final`; when the block returns, publish it as `final`.

    An exception in the block removes the staging directory and leaves `final` as it was."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".{final.name}.partial-{_nonce()}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        _remove(staging)
        raise
    crash_point("checkpoint-write", final.name)
    publish(staging, final, meta)


def verify(path: str | Path) -> dict:
    """The manifest of a complete checkpoint at `path`; IncompleteCheckpoint says what is wrong otherwise."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise IncompleteCheckpoint(f"{path} has no {MANIFEST} (never finished, or written before atomic checkpoints)")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = dict(manifest["files"])
    except (ValueError, KeyError, TypeError) as exc:
        raise IncompleteCheckpoint(f"{manifest_path} is unreadable ({exc})") from None
    present = _file_sizes(path)
    for rel, size in files.items():
        if rel not in present:
            raise IncompleteCheckpoint(f"{path} lacks {rel}")
        if present[rel] != size:
            raise IncompleteCheckpoint(f"{path / rel} has {present[rel]} of {size} bytes")
    extra = sorted(set(present) - set(files))
    if extra:
        raise IncompleteCheckpoint(f"{path} has files its manifest does not list: {', '.join(extra[:3])}")
    return manifest


# ----------------------------------------------------------------------------- config compatibility


def config_fingerprint(cfg: Config) -> dict[str, Any]:
    """The values of RESUME_KEYS in `cfg` (JSON-able)."""
    tree = to_dict(cfg)
    out: dict[str, Any] = {}
    for key in RESUME_KEYS:
        node: Any = tree
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out[key] = node
    return json.loads(json.dumps(out, default=str))


def config_differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """`key: saved -> now` for every resume key whose value differs (keys absent from `saved` are skipped)."""
    return [f"{k}: {saved[k]!r} -> {now.get(k)!r}" for k in RESUME_KEYS if k in saved and saved[k] != now.get(k)]


# ----------------------------------------------------------------------------- the checkpoint directory


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    manifest: dict

    @classmethod
    def open(cls, path: str | Path) -> "Checkpoint":
        """The complete checkpoint at `path` (IncompleteCheckpoint otherwise)."""
        manifest = verify(path)
        return cls(Path(path), int(manifest.get("step", -1)), manifest)


class CheckpointManager:
    """`<root>/step-N` checkpoints of one run: where the next one goes, the newest complete one, retention."""

    def __init__(self, root: str | Path, keep: int = 2, cfg: Config | None = None):
        if keep < 0:
            raise UserError(f"trainer.keep_checkpoints must be >= 0 (0 keeps all), got {keep}")
        self.root = Path(root)
        self.keep = keep
        self.fingerprint = config_fingerprint(cfg) if cfg is not None else {}

    def path(self, step: int) -> Path:
        return self.root / f"step-{step}"

    def meta(self, step: int, **info: Any) -> dict[str, Any]:
        """Manifest fields of the checkpoint of `step`: the step, the resume keys' values, and `info`."""
        return {"step": step, "config": self.fingerprint, **info}

    def scan(self) -> tuple[list[Checkpoint], list[tuple[Path, str]]]:
        """(complete checkpoints newest first, [(directory, why it is skipped)] for the rest)."""
        complete: list[Checkpoint] = []
        skipped: list[tuple[Path, str]] = []
        if not self.root.is_dir():
            return complete, skipped
        for p in sorted(self.root.iterdir()):
            if not p.is_dir():
                continue
            m = _STEP.match(p.name)
            if m:
                try:
                    complete.append(Checkpoint(p, int(m[1]), verify(p)))
                except IncompleteCheckpoint as exc:
                    skipped.append((p, str(exc)))
            elif _STAGING.match(p.name):
                skipped.append((p, "a write that never finished"))
        complete.sort(key=lambda c: c.step, reverse=True)
        return complete, skipped

    def latest(self, warn: bool = True) -> Checkpoint | None:
        """The newest complete checkpoint; skipped directories are named in one warning line on stderr."""
        complete, skipped = self.scan()
        if skipped and warn:
            names = "; ".join(f"{p.name} ({why})" for p, why in skipped)
            print(f"warning: skipping incomplete checkpoints under {self.root} (removed at the next save): {names}",
                  file=sys.stderr)
        return complete[0] if complete else None

    def check_compatible(self, ckpt: Checkpoint) -> None:
        """Refuse to resume `ckpt` under a config that differs in a key it depends on."""
        diffs = config_differences(ckpt.manifest.get("config", {}), self.fingerprint)
        if diffs:
            raise UserError(
                f"cannot resume {ckpt.path}: it was written with another config ({'; '.join(diffs)}); "
                "resume with the same values, or start a new run in another trainer.run_dir"
            )

    def prune(self) -> list[Path]:
        """Delete all but the newest `keep` complete checkpoints, and every incomplete leftover."""
        complete, skipped = self.scan()
        doomed = [p for p, _ in skipped] + ([c.path for c in complete[self.keep:]] if self.keep else [])
        for p in doomed:
            _remove(p)
        if doomed:
            _fsync_path(self.root)
        return doomed
