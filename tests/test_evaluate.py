import json

import pytest

from atommem.config import Config, SynthConfig
from atommem.data.schema import write_samples
from atommem.data.synthetic import generate_synthetic
from atommem.errors import UserError
from atommem.commands import eval as cli
from atommem.eval.evaluate import evaluate


def _cfg(tmp_path):
    cfg = Config()
    cfg.env.chunk_tokens = 48
    cfg.env.chunk_overlap = 0
    cfg.eval.length_buckets = [100, 300]
    cfg.trainer.run_dir = str(tmp_path / "run")
    return cfg


@pytest.fixture
def data(tmp_path):
    samples = generate_synthetic(SynthConfig(max_questions=3), n=6, seed=0)
    samples += generate_synthetic(SynthConfig(max_questions=3, doc_num=20), n=6, seed=1)
    return str(write_samples(samples, tmp_path / "dev"))


def test_evaluate_scripted_policies_writes_reports(tmp_path, data):
    report = evaluate(_cfg(tmp_path), None, data, ["oracle", "rag-scripted", "truncate-scripted"])
    out = tmp_path / "run" / "eval"
    assert {p.name for p in out.iterdir()} >= {"eval.json", "eval.md", "em_by_length.png", "action_rates.png"}
    saved = json.loads((out / "eval.json").read_text())
    assert saved["policies"]["oracle"]["em"] == 1.0
    assert saved["policies"]["oracle"]["questions"] == sum(len(e["correct"]) for e in saved["episodes"]["oracle"])
    assert len(saved["episodes"]["rag-scripted"]) == 12  # every sample scored
    assert [c["policy"] for c in report["comparisons"]] == ["rag-scripted", "truncate-scripted"]
    assert report["comparisons"][1]["em_diff"] < 0  # truncation loses long contexts
    md = (out / "eval.md").read_text()
    assert "| truncate-scripted |" in md and "EM by context length" in md and "paired bootstrap" in md


def test_evaluate_user_errors(tmp_path, data):
    with pytest.raises(UserError, match="unknown policy"):
        evaluate(_cfg(tmp_path), None, data, ["nope"])
    with pytest.raises(UserError, match="--checkpoint"):
        evaluate(_cfg(tmp_path), None, data, ["atommem"])


def test_cli_prints_summary(tmp_path, data, capsys):
    assert cli.main(["--data", data, "--policies", "oracle,memagent-scripted", "--out", str(tmp_path / "o"),
                     "--set", "env.chunk_tokens=48"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["policies"]) == {"oracle", "memagent-scripted"}
    assert (tmp_path / "o" / "eval.md").is_file()


def test_evaluate_model_policies_on_ray(ray_local, tmp_path, data):
    from tests.helpers_models import make_tiny_model_dir

    cfg = _cfg(tmp_path)
    cfg.sampling.max_tokens = 6
    cfg.env.chunk_tokens = 96  # BPE tokens now: overlap so that no fact is cut in two for the oracle
    cfg.env.chunk_overlap = 16
    cfg.env.max_answer_steps = 2
    cfg.engine.num_cpus = 0.5
    cfg.rollout.num_cpus_per_worker = 0.5
    cfg.data.dev_samples = 4
    model = make_tiny_model_dir(tmp_path)
    report = evaluate(cfg, str(model), data, ["atommem", "rag", "oracle"])
    pol = report["policies"]
    assert pol["oracle"]["em"] == 1.0 and pol["atommem"]["episodes"] == 4 and pol["rag"]["episodes"] == 4
    assert pol["rag"]["action_rates"]["create"] > 0  # the RAG workflow indexed chunks through the real env
    assert len(report["comparisons"]) == 2
