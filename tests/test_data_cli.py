import json
from pathlib import Path

import pytest

from atommem.cli import main
from atommem.config import Config, ConfigError, SynthConfig
from atommem.data import output
from atommem.data.prepare import DEV_SEED_OFFSET, prepare
from atommem.data.schema import read_samples
from atommem.data.synthetic import generate_synthetic

FIX = Path(__file__).parent / "fixtures"


def test_synth_writes_what_the_generator_makes(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["data", "synth", "--out", str(out), "--n", "5", "--seed", "3"]) == 0
    assert "wrote 5 synthetic samples" in capsys.readouterr().out
    got = read_samples(out)
    want = generate_synthetic(SynthConfig(), n=5, seed=3)
    assert [s.to_row() for s in got] == [s.to_row() for s in want]
    info = json.loads((out / "dataset.json").read_text())
    assert info["source"] == "synthetic" and info["num_samples"] == 5 and info["synth"]["seed"] == 3


def test_synth_config_file_and_doc_num(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("data:\n  synth:\n    num_samples: 4\n    num_entities: 5\n    seed: 9\n")
    out = tmp_path / "synth"
    assert main(["data", "synth", "--out", str(out), "--config", str(cfg_file), "--doc-num", "12"]) == 0
    got = read_samples(out)
    want = generate_synthetic(SynthConfig(num_samples=4, num_entities=5, seed=9, doc_num=12))
    assert [s.to_row() for s in got] == [s.to_row() for s in want]
    assert all(len(s.documents) == 12 for s in got)


def test_build_and_show(tmp_path, capsys):
    out = tmp_path / "wiki"
    argv = ["data", "build", "--source", "2wiki", "--input", str(FIX / "2wiki_dev_mini.json"),
            "--aliases", str(FIX / "2wiki_id_aliases_mini.json"), "--out", str(out), "--doc-num", "16", "--seed", "2"]
    assert main(argv) == 0
    assert "(10 questions)" in capsys.readouterr().out
    samples = read_samples(out)
    assert sum(len(s.questions) for s in samples) == 10
    assert all(s.source == "2wiki" and len(s.documents) == 16 for s in samples)
    assert any("American" in q.answers for s in samples for q in s.questions)

    assert main(["data", "show", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_samples"] == len(samples)
    assert summary["by_source"] == {"2wiki": len(samples)}
    assert summary["documents_per_sample"] == {"min": 16, "mean": 16.0, "max": 16}
    assert sum(summary["questions_per_sample"]["histogram"].values()) == len(samples)
    words = [sum(2 + len(d.title.split()) + len(d.text.split()) for d in s.documents) for s in samples]
    hist = summary["context_words"]["histogram"]
    assert sum(b["count"] for b in hist) == len(samples)
    assert all(any(b["lo"] <= w < b["hi"] for b in hist) for w in words)
    assert summary["info"]["params"]["doc_num"] == 16

    assert main(["data", "show", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"{len(samples)} samples, 10 questions" in text and "by source: 2wiki" in text
    assert "context length (whitespace tokens)" in text and "#" in text


def test_build_musique_limit(tmp_path):
    out = tmp_path / "m"
    argv = ["data", "build", "--source", "musique", "--input", str(FIX / "musique_dev_mini.jsonl"), "--out", str(out),
            "--doc-num", "8", "--limit", "4", "--max-questions", "2"]
    assert main(argv) == 0
    samples = read_samples(out)
    assert sum(len(s.questions) for s in samples) == 4
    assert all(len(s.questions) <= 2 for s in samples)


def test_bad_input_exits_nonzero_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "hotpot_dev.json"
    raw = json.loads((FIX / "hotpot_dev_distractor_mini.json").read_text())
    raw[4]["supporting_facts"] = "none"
    bad.write_text(json.dumps(raw))
    out = tmp_path / "out"
    assert main(["data", "build", "--source", "hotpotqa", "--input", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "hotpot_dev.json record 4" in err and "field 'supporting_facts'" in err
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]

    assert main(["data", "build", "--source", "hotpotqa", "--input", str(FIX / "hotpot_dev_distractor_mini.json"),
                 "--aliases", "x.json", "--out", str(out)]) == 2
    assert "--aliases applies to --source 2wiki only" in capsys.readouterr().err
    assert main(["data", "show", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "build", "--source", "squad", "--input", str(bad), "--out", str(out)])


def test_existing_output_needs_overwrite_and_failures_leave_it_intact(tmp_path, capsys, monkeypatch):
    out = tmp_path / "s"
    assert main(["data", "synth", "--out", str(out), "--n", "2"]) == 0
    before = read_samples(out)
    assert main(["data", "synth", "--out", str(out), "--n", "3"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err

    def boom(samples, out_dir):
        Path(out_dir, "part-00000.parquet").write_text("half")
        raise OSError("disk full")

    monkeypatch.setattr(output, "write_samples", boom)
    with pytest.raises(OSError, match="disk full"):
        main(["data", "synth", "--out", str(out), "--n", "3", "--overwrite"])
    assert [s.to_row() for s in read_samples(out)] == [s.to_row() for s in before]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no temp dir left behind
    monkeypatch.undo()

    assert main(["data", "synth", "--out", str(out), "--n", "3", "--overwrite"]) == 0
    assert len(read_samples(out)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_prepare_synthesises_missing_splits_once(tmp_path):
    cfg = Config()
    cfg.data.train = str(tmp_path / "train")
    cfg.data.dev = str(tmp_path / "dev")
    cfg.data.test = str(tmp_path / "test")
    cfg.data.synth.num_samples = 6
    cfg.data.synth.seed = 4
    cfg.data.dev_samples = 3
    paths = prepare(cfg)
    assert paths == {"train": tmp_path / "train", "dev": tmp_path / "dev", "test": tmp_path / "test"}
    train, dev, test = (read_samples(paths[k]) for k in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (6, 3, 3)
    assert [s.to_row() for s in dev] == [s.to_row() for s in generate_synthetic(cfg.data.synth, n=3, seed=4 + DEV_SEED_OFFSET)]
    assert not {s.id for s in train} & {s.id for s in dev} and not {s.id for s in dev} & {s.id for s in test}

    mtime = (paths["train"] / "part-00000.parquet").stat().st_mtime_ns
    assert prepare(cfg)["train"] == paths["train"]  # existing data is kept, not regenerated
    assert (paths["train"] / "part-00000.parquet").stat().st_mtime_ns == mtime


def test_prepare_refuses_data_synthesised_with_other_settings(tmp_path):
    cfg = Config()
    cfg.data.train, cfg.data.dev = str(tmp_path / "train"), str(tmp_path / "dev")
    cfg.data.synth.num_samples, cfg.data.dev_samples = 4, 2
    paths = prepare(cfg)
    cfg.data.synth.facts_per_chunk += 1
    with pytest.raises(ConfigError, match=r"data\.train: .*facts_per_chunk 4 -> 5.*delete it"):
        prepare(cfg)
    # A split written before a setting existed was made as its default makes it: still the config's data.
    cfg.data.synth.facts_per_chunk -= 1
    for split in ("train", "dev"):
        info = json.loads((paths[split] / output.INFO_FILE).read_text())
        del info["synth"]["numbered_titles"]
        (paths[split] / output.INFO_FILE).write_text(json.dumps(info))
    assert prepare(cfg) == paths
    cfg.data.synth.numbered_titles = "random"
    with pytest.raises(ConfigError, match=r"numbered_titles 'position' -> 'random'"):
        prepare(cfg)
    # A dataset that is not ours (no synthesis record, e.g. built from real files) is used as is.
    (paths["train"] / output.INFO_FILE).write_text('{"source": "hotpotqa"}')
    (paths["dev"] / output.INFO_FILE).unlink()
    assert prepare(cfg) == paths
    assert len(read_samples(paths["train"])) == 4


def test_prepare_default_dev_size_and_unset_paths(tmp_path):
    cfg = Config()
    with pytest.raises(ConfigError, match="data.train is not set"):
        prepare(cfg)
    cfg.data.train, cfg.data.dev = str(tmp_path / "tr"), str(tmp_path / "dv")
    cfg.data.synth.num_samples = 20
    paths = prepare(cfg)
    assert len(read_samples(paths["dev"])) == 2 and "test" not in paths
