"""The tagged doc commands of README.md and docs/**/*.md (the convention in docs/index.md's source, issue 32/33).

A fenced block is marked by an HTML comment on the line right before its opening fence: `<!-- test -->` (its
commands run in `make test`, tests/test_doc_commands.py) or `<!-- no-test: <reason> -->`. A block that runs
one of `COMMANDS` with neither marker is an error, so no command reaches the docs untested.

A tagged command runs in its cheapest form that takes the same code path: `SMOKE` appends arguments to it
(argparse keeps an option's last value, so `--n 8` after `--n 1000` wins; `--set` overrides stack), a
`make TARGET` runs as its recipe (`make -n`) with the same appended arguments, a server (`atommem serve`) runs
in the background on a free port until the block ends, and a `--checkpoint` the workspace lacks is built first
as a fresh tiny model of the command's config. Commands run in one scratch workspace (a temp dir that links the
repository's configs, bench, jobs and .venv), so `runs/` there is the scratch one, never the repository's.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = re.compile(r"^\s*(\$\s+)?(\S*/)?(atommem|make|ray|curl)\b|^\s*(\$\s+)?(\S*/)?python\S*\s+(bench|jobs)/")
SHELLS = ("", "bash", "sh", "shell", "console", "zsh")  # fence info strings of blocks that may hold commands
LINKED = ("configs", "bench", "jobs", ".venv")

# Every config-taking atommem command runs on data, SFT, GRPO and evaluation shrunk to seconds.
SMALL_RUN = (
    "data.synth.num_samples=24", "data.dev_samples=6", "data.val_samples=6",
    "sft.teacher_episodes=12", "sft.val_episodes=6", "sft.teacher_workers=1", "sft.batch_size=2", "sft.steps=2",
    "sft.time_budget_s=2", "grpo.group_size=2", "grpo.batch_groups=2", "rollout.envs_per_worker=8",
    "rollout.num_samples=2", "trainer.steps=1", "trainer.time_budget_s=0.01", "trainer.eval_every=1",
    "eval.length_factors=[4]", "eval.length_samples=2", "engine.enforce_eager=true",
    "pretrain.steps=2", "pretrain.batch_size=2", "pretrain.mix_rows=2",
)


_SETS = [arg for item in SMALL_RUN for arg in ("--set", item)]

# Smoke arguments per program (its first words, without a leading path); a tagged command without an entry
# fails: give it one here.
SMOKE: dict[str, list[str]] = {
    "atommem demo": _SETS,
    "atommem data synth": ["--n", "8"],
    "atommem data prepare": _SETS,
    "atommem data show": [],
    "atommem model tiny": [],
    "atommem rollout": _SETS,
    "atommem collect-sft": _SETS,
    "atommem sft": _SETS,
    "atommem train": _SETS,
    "atommem eval": _SETS,
    "atommem serve": _SETS,
    "atommem compare-demos": [],
    "curl": ["--fail-with-body"],
    "python bench/rollout_async.py": [
        "--episodes", "8", "--envs", "4", "--slots", "4", "--repeats", "1", "--hf-episodes", "2", "--hf-envs", "2",
        "--hf-max-tokens", "4", "--vllm-episodes", "4", "--vllm-envs", "4", "--vllm-max-tokens", "16", "--vllm-eager",
    ],
    "python bench/memory_ops.py": ["--episodes", "8", "--entries", "20"],
    "python bench/copy_probe.py": ["--seeds", "0", "--max-steps", "2", "--val-every", "1", *_SETS],
    "python bench/weight_sync.py": ["--hidden", "64", "--layers", "1", "--vocab", "256", "--repeats", "1", "--no-many-tensors"],
    "python bench/learner_logprobs.py": ["--rows", "4", "--prompt", "32", "--response", "4", "--repeats", "1"],
}
SERVERS = ("atommem serve",)


@dataclass
class Block:
    path: str  # relative to the repository
    line: int  # of the opening fence
    marker: str | None  # "test", "no-test: <reason>", or None
    lang: str  # the fence's info string ("bash", "text", ...)
    commands: list[str] = field(default_factory=list)  # logical lines, continuations joined, comments kept

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def runs_commands(self) -> bool:
        return self.lang in SHELLS and any(COMMANDS.search(c) for c in self.commands)


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of one Markdown file, with the marker on the line before each opening fence."""
    lines = path.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        opening = re.match(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
        if not opening:
            i += 1
            continue
        fence, lang, start = opening.group(1), opening.group(2).lower(), i
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1
        before = lines[start - 1].strip() if start else ""
        marker = re.fullmatch(r"<!--\s*(test|no-test:.*?)\s*-->", before)
        where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        out.append(Block(str(where), start + 1, marker.group(1).strip() if marker else None, lang, _logical(body)))
    return out


def _logical(body: list[str]) -> list[str]:
    """Shell lines: a trailing backslash or an open quote continues onto the next line; comment lines dropped."""
    joined, pending = [], ""
    for line in body:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        pending += line
        if _open_quote(pending):
            pending += "\n"
            continue
        joined.append(pending)
        pending = ""
    joined += [pending] if pending.strip() else []
    return [c.strip() for c in joined if c.strip() and not c.strip().startswith("#")]


def _open_quote(text: str) -> bool:
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return True
    return False


def program(words: list[str]) -> str:
    """The SMOKE key of a command's words: `.venv/bin/atommem data synth ...` -> "atommem data synth"."""
    words = [Path(words[0]).name, *words[1:]]
    for n in (3, 2, 1):
        key = " ".join(words[:n])
        if key in SMOKE or key in ("make",):
            return key
    return " ".join(words[:2])


class Workspace:
    """A scratch directory the commands run in, linking what they read from the repository."""

    def __init__(self, path: Path):
        self.path = path
        for name in LINKED:
            (path / name).symlink_to(ROOT / name)
        self.env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}

    def commands(self, line: str) -> list[list[str]]:
        """One doc line as the commands to run: a `make TARGET` is its recipe, each with its smoke arguments."""
        words = shlex.split(line, comments=True)
        if any(w in ("&&", "||", "|", ";") or w.endswith(";") for w in words):
            raise AssertionError(f"`{line}`: one command per line, please (the runner appends smoke arguments)")
        if program(words) == "make":
            recipe = subprocess.run(["make", "-n", "-s", *words[1:]], cwd=ROOT, capture_output=True, text=True, check=True)
            return [self._smoke(shlex.split(r)) for r in recipe.stdout.splitlines() if r.strip()]
        return [self._smoke(words)]

    def _smoke(self, words: list[str]) -> list[str]:
        key = program(words)
        if key not in SMOKE:
            raise AssertionError(f"tests/doc_commands.py has no smoke size for `{key}`: add one to SMOKE")
        return words + SMOKE[key]

    def prepare(self, words: list[str]) -> None:
        """A `--checkpoint` the workspace lacks: the command's config's tiny model (built once, at its model.path)."""
        if "--checkpoint" not in words:
            return
        checkpoint = self.path / words[words.index("--checkpoint") + 1]
        if checkpoint.exists():
            return
        from atommem.config import load_config

        config = ["--config", words[words.index("--config") + 1]] if "--config" in words else []
        with contextlib.chdir(self.path):
            model = self.path / load_config(config[1] if config else None).model.path
        if not model.exists():
            self.run(["atommem", "model", "tiny", "--out", str(model), *config])
        shutil.copytree(model, checkpoint)

    def run(self, words: list[str], timeout: float = 900) -> str:
        """An atommem command runs in this process (its imports and its local Ray are shared by the commands
        that follow: `runtime.init_ray` joins a running one), anything else as a subprocess."""
        if program(words).startswith("atommem"):
            return self._in_process(words)
        proc = subprocess.run(words, cwd=self.path, env=self.env, capture_output=True, text=True, timeout=timeout)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"`{shlex.join(words)}` exited {proc.returncode}:\n{output[-6000:]}"
        return output

    def _in_process(self, words: list[str]) -> str:
        from atommem.cli import main

        printed = io.StringIO()
        with contextlib.chdir(self.path), contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            try:
                code = main(words[1:])
            except SystemExit as exc:  # argparse
                code = exc.code
        assert code in (0, None), f"`{shlex.join(words)}` exited {code}:\n{printed.getvalue()[-6000:]}"
        return printed.getvalue()

    def run_block(self, block: Block) -> list[tuple[str, float]]:
        """Every command of the block in order; servers stay up until its end. Returns (command, seconds to
        prepare and run it; a server's until it answers)."""
        lines = [w for line in block.commands for w in self.commands(line)]
        ports: dict[str, str] = {}
        servers: list[subprocess.Popen] = []
        timings = []
        try:
            for words in lines:
                words = [_replace_ports(w, ports) for w in words]
                start = time.perf_counter()
                self.prepare(words)
                if program(words) in SERVERS:
                    words, port = _free_port(words, ports)
                    servers.append(self._serve(words, port))
                else:
                    self.run(words)
                timings.append((shlex.join(words), time.perf_counter() - start))
        finally:
            for server in servers:
                _stop(server)
        return timings

    def _serve(self, words: list[str], port: int, timeout: float = 300) -> subprocess.Popen:
        log = self.path / f"server-{port}.log"
        with open(log, "w") as out:
            server = subprocess.Popen(words, cwd=self.path, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
                    if answer.status == 200:
                        return server
            except OSError:
                time.sleep(1)
        _stop(server)
        raise AssertionError(f"`{shlex.join(words)}` did not answer /healthz:\n{log.read_text()[-6000:]}")


def _free_port(words: list[str], ports: dict[str, str]) -> tuple[list[str], int]:
    """The server on a free port (the doc's may be taken on a shared machine); later commands follow it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if "--port" in words:
        i = words.index("--port") + 1
        ports[words[i]] = str(port)
        words = words[:i] + [str(port)] + words[i + 1 :]
    else:
        words = words + ["--port", str(port)]
    return words, port


def _replace_ports(word: str, ports: dict[str, str]) -> str:
    for old, new in ports.items():
        word = re.sub(rf":{old}\b", f":{new}", word)
    return word


def _stop(server: subprocess.Popen) -> None:
    """SIGTERM the server's process group (it drains), SIGKILL what is left after a grace period."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
