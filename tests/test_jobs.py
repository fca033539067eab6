"""jobs/: one thin entry point per stage; shared parsing, Ray joining and dispatch in atommem.jobs_common."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from atommem import jobs_common
from atommem.config import ClusterConfig, Config

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
    assert imports <= {"sys", "atommem.jobs_common"}, imports
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "main"]
    assert [c.args[0].value for c in calls] == [name]  # dispatches to its own job
    assert name in jobs_common.JOBS or name in jobs_common.CLI_JOBS


def test_every_job_file_in_jobs_is_known():
    assert {p.stem for p in (ROOT / "jobs").glob("*.py")} == set(STAGES)


@pytest.mark.parametrize("name", sorted(jobs_common.JOBS))
def test_job_help_lists_config_and_set(name):
    text = jobs_common.job_parser(name).format_help()
    assert "--config" in text and "--set" in text
    assert ("--resume" in text) == (name == "train_grpo")


def test_job_file_help_runs():
    out = _run_job("train_grpo", "--help")
    assert out.returncode == 0, out.stderr
    assert "--resume" in out.stdout


def test_bad_override_is_a_one_line_error_naming_the_key():
    out = _run_job("train_grpo", "--config", "configs/tiny_cpu.yaml", "--set", "grpo.learning_rate=1e-6")
    assert out.returncode == 2
    assert "grpo.learning_rate" in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_config_file_is_a_user_error():
    out = _run_job("collect_sft", "--config", "configs/does_not_exist.yaml")
    assert out.returncode == 2
    assert "does_not_exist.yaml" in out.stderr and "Traceback" not in out.stderr


@pytest.fixture
def calls(monkeypatch):
    """Replace Ray joining and the library stages with recorders."""
    record: dict[str, list] = {"init_ray": []}
    from atommem import runtime

    monkeypatch.setattr(runtime, "init_ray", lambda cluster=None, **kw: record["init_ray"].append(cluster))

    def recorder(key, result):
        def fn(*args, **kwargs):
            record.setdefault(key, []).append((args, kwargs))
            return result
        return fn

    train = types.ModuleType("atommem.train")
    train.collect_sft = recorder("collect_sft", Path("/tmp/sft_data"))
    train.train_sft = recorder("train_sft", Path("/tmp/sft/model"))
    train.train_grpo = recorder("train_grpo", Path("/tmp/grpo/model"))
    eval_cli = types.ModuleType("atommem.eval.cli")
    eval_cli.main = recorder("evaluate", 0)
    rollout_cli = types.ModuleType("atommem.rollout.cli")
    rollout_cli.main = recorder("rollout", 0)
    import atommem
    import atommem.eval
    import atommem.rollout

    for parent, name, module in [(atommem, "train", train), (atommem.eval, "cli", eval_cli),
                                 (atommem.rollout, "cli", rollout_cli)]:
        monkeypatch.setitem(sys.modules, module.__name__, module)
        monkeypatch.setattr(parent, name, module, raising=False)
    return record


def test_train_grpo_joins_ray_and_passes_overrides_and_resume(calls, capsys):
    rc = jobs_common.main("train_grpo", ["--config", "configs/tiny_cpu.yaml", "--set", "grpo.lr=2e-6",
                                         "--set", "trainer.steps=3", "--set", "cluster.num_cpus=1", "--resume"])
    assert rc == 0
    (args, kwargs), = calls["train_grpo"]
    cfg = args[0]
    assert isinstance(cfg, Config)
    assert cfg.grpo.lr == pytest.approx(2e-6) and cfg.trainer.steps == 3
    assert kwargs == {"resume": True}
    assert calls["init_ray"] == [ClusterConfig(num_cpus=1)]
    assert "/tmp/grpo/model" in capsys.readouterr().out


def test_train_grpo_without_resume(calls):
    assert jobs_common.main("train_grpo", ["--config", "configs/tiny_cpu.yaml"]) == 0
    assert calls["train_grpo"][0][1] == {"resume": False}


@pytest.mark.parametrize("name", ["collect_sft", "train_sft"])
def test_sft_stages_call_the_library(calls, name):
    assert jobs_common.main(name, ["--config", "configs/tiny_cpu.yaml", "--set", "sft.steps=7"]) == 0
    (args, kwargs), = calls[name]
    assert args[0].sft.steps == 7 and kwargs == {}
    assert len(calls["init_ray"]) == 1


@pytest.mark.parametrize("name, extra", [("rollout", ["--policy", "oracle"]),
                                         ("evaluate", ["--checkpoint", "ck", "--policies", "atommem,rag"])])
def test_cli_jobs_hand_everything_to_the_owning_cli(calls, name, extra):
    argv = ["--config", "configs/tiny_cpu.yaml", "--set", "rollout.num_samples=2", *extra]
    assert jobs_common.main(name, argv) == 0
    assert calls[name] == [((argv,), {})]
    assert calls["init_ray"] == []  # the owning CLI joins Ray when it needs to


def test_cli_job_help_is_the_owning_clis():
    out = _run_job("evaluate", "--help")
    assert out.returncode == 0, out.stderr
    assert "--checkpoint" in out.stdout and "--policies" in out.stdout and "--set" in out.stdout


def test_prepare_data_synthesises_the_splits_without_ray(tmp_path):
    out = _run_job("prepare_data", "--config", "configs/tiny_cpu.yaml",
                   "--set", f"data.train={tmp_path / 'train'}", "--set", f"data.dev={tmp_path / 'dev'}",
                   "--set", "data.synth.num_samples=12", "--set", "data.dev_samples=3")
    assert out.returncode == 0, out.stderr
    paths = json.loads(out.stdout)
    assert paths == {"train": str(tmp_path / "train"), "dev": str(tmp_path / "dev")}
    from atommem.data.schema import read_samples

    assert len(read_samples(tmp_path / "train")) == 12
    assert len(read_samples(tmp_path / "dev")) == 3
    assert "Started a local Ray" not in out.stderr
