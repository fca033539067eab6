"""jobs/: one thin entry point per stage, each running a command of the one registry (atommem.commands)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from atommem.commands import COMMANDS, JOBS, run_command

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["prepare_data", "collect_sft", "train_sft", "train_grpo", "evaluate", "serve", "rollout"]


def _run_job(name: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "jobs" / f"{name}.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("name", STAGES)
def test_job_file_is_a_thin_entry_point(name):
    path = ROOT / "jobs" / f"{name}.py"
    tree = ast.parse(path.read_text())
    assert ast.get_docstring(tree), f"{path} needs a docstring with its command line"
    defs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    assert not defs, f"{path} defines {[d.name for d in defs]}: logic belongs in the library"
    imports = {(n.module if isinstance(n, ast.ImportFrom) else a.name) for n in ast.walk(tree)
               if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    assert imports <= {"sys", "atommem.commands"}, imports
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "run_job"]
    assert [c.args[0].value for c in calls] == [name]  # dispatches to its own job
    assert name in JOBS


def test_every_job_file_in_jobs_is_known():
    assert {p.stem for p in (ROOT / "jobs").glob("*.py")} == set(STAGES) == set(JOBS)


@pytest.mark.parametrize("name", sorted(set(COMMANDS) - {"data", "env", "model", "compare-demos"}))
def test_command_help_lists_config_and_set(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_command(name, ["--help"])
    text = capsys.readouterr().out
    assert exit_.value.code == 0 and "--config" in text and "--set" in text
    assert ("--resume" in text) == (name == "train")



def test_eval_help_names_every_registered_policy(capsys):
    from atommem.baselines import BASELINES

    with pytest.raises(SystemExit):
        run_command("eval", ["--help"])
    listed = "".join(capsys.readouterr().out.split()).split("comma-separated:")[1].split("--out")[0]
    assert set(listed.split(",")) == {"atommem", "oracle", *BASELINES}

def test_job_file_help_runs():
    out = _run_job("train_grpo", "--help")
    assert out.returncode == 0, out.stderr
    assert "--resume" in out.stdout


def test_bad_override_is_a_one_line_error_naming_the_key():
    out = _run_job("train_grpo", "--config", "configs/tiny_cpu.yaml", "--set", "grpo.learning_rate=1e-6")
    assert out.returncode == 2
    assert "grpo.learning_rate" in out.stderr
    assert "Traceback" not in out.stderr


def test_train_grpo_resume_without_a_complete_checkpoint_is_a_user_error(tmp_path):
    """Decided before Ray or any actor starts (the full kill -9 / resume cycle is tests/test_crash_resume.py)."""
    torn = tmp_path / "run" / "checkpoints" / "step-3"
    torn.mkdir(parents=True)  # never finished: no manifest
    out = _run_job("train_grpo", "--config", "configs/tiny_cpu.yaml", "--set", f"trainer.run_dir={tmp_path / 'run'}",
                   "--resume")
    assert out.returncode == 2, out.stderr
    assert f"no complete checkpoint under {tmp_path / 'run' / 'checkpoints'}" in out.stderr
    assert "step-3 (" in out.stderr and "Started a local Ray" not in out.stderr and "Traceback" not in out.stderr


def test_missing_config_file_is_a_user_error():
    out = _run_job("collect_sft", "--config", "configs/does_not_exist.yaml")
    assert out.returncode == 2
    assert "does_not_exist.yaml" in out.stderr and "Traceback" not in out.stderr


def test_cli_job_help_is_the_owning_clis():
    out = _run_job("evaluate", "--help")
    assert out.returncode == 0, out.stderr
    assert "--checkpoint" in out.stdout and "--policies" in out.stdout and "--set" in out.stdout


def test_prepare_data_synthesises_the_splits_without_ray(tmp_path):
    out = _run_job("prepare_data", "--config", "configs/tiny_cpu.yaml",
                   "--set", f"data.train={tmp_path / 'train'}", "--set", f"data.dev={tmp_path / 'dev'}", "--set", "data.val=null",
                   "--set", "data.synth.num_samples=12", "--set", "data.dev_samples=3")
    assert out.returncode == 0, out.stderr
    paths = json.loads(out.stdout)
    assert paths == {"train": str(tmp_path / "train"), "dev": str(tmp_path / "dev")}
    from atommem.data.schema import read_samples

    assert len(read_samples(tmp_path / "train")) == 12
    assert len(read_samples(tmp_path / "dev")) == 3
    assert "Started a local Ray" not in out.stderr
