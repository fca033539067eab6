"""`atommem rollout` end to end on a local Ray: oracle through the CLI -> Parquet trajectories, EM 1.0."""

from __future__ import annotations

import json

import pytest

from atommem.cli import main as cli_main
from atommem.config import save_config
from atommem.data.schema import write_samples
from atommem.data.synthetic import generate_synthetic
from atommem.rollout.parquet import read_trajectories
from helpers_models import TEST_SYNTH, make_tiny_model_dir
from rollout_support import small_config

pytestmark = pytest.mark.ray


def test_cli_oracle_rollout_writes_token_level_trajectories(ray_local, tmp_path, capsys):
    cfg = small_config(envs=8)
    cfg.data.synth = TEST_SYNTH
    cfg.model.path = str(make_tiny_model_dir(tmp_path))
    cfg.trainer.run_dir = str(tmp_path / "run")
    config = tmp_path / "cfg.yaml"
    save_config(cfg, config)
    data = tmp_path / "data"
    write_samples(generate_synthetic(TEST_SYNTH, n=5, seed=9), data)

    argv = ["rollout", "--config", str(config), "--policy", "oracle", "--num-samples", "4", "--group-size", "2",
            "--data", str(data), "--no-progress", "--set", "rollout.num_workers=1"]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "EM 1.000" in printed and "actions per turn" in printed

    out = tmp_path / "run" / "trajectories"
    trajs = read_trajectories(out)
    assert len(trajs) == 8 and len({t.episode_id for t in trajs}) == 8
    assert all(t.reward == 1.0 for t in trajs)
    assert all(turn.prompt_ids and turn.response_ids for t in trajs for turn in t.turns)  # SFT-ready token ids
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 8 and summary["em"] == 1.0
    assert summary["action_rates"]["create"] > 0 and summary["action_rates"]["error"] == 0


def test_cli_model_policy_without_a_model_is_a_user_error(tmp_path, capsys):
    cfg = small_config()
    config = tmp_path / "cfg.yaml"
    save_config(cfg, config)
    assert cli_main(["rollout", "--config", str(config), "--policy", "model", "--data", str(tmp_path)]) == 2
    assert "model.path" in capsys.readouterr().err


def test_play_fresh_model_on_engine_actors(ray_local, tmp_path):
    from atommem.env.memory_env import MemoryEnv
    from atommem.memory.embedders import make_embedder
    from atommem.models.loading import load_tokenizer
    from atommem.rollout.play import play

    cfg = small_config(envs=4, workers=1)
    cfg.data.synth = TEST_SYNTH
    cfg.sampling.max_tokens = 8
    cfg.engine.num_engines = 1
    cfg.engine.num_cpus = 0.5
    cfg.env.format_penalty = 0.05  # the reward then also counts the episode's error turns (and goes below 0)
    model_dir = make_tiny_model_dir(tmp_path)
    samples = generate_synthetic(TEST_SYNTH, n=2, seed=11)
    results, _ = play(cfg, samples, 2, "model", str(model_dir), progress=False)
    assert sorted(s.episode_id for _, s in results) == sorted(f"{x.id}#{g}" for x in samples for g in range(2))
    trajs = ray_local.get([ref for ref, _ in results])  # engines and runners are gone; the driver owns these
    turns = [turn for t in trajs for turn in t.turns]
    assert sum(s.num_turns for _, s in results) == len(turns)
    assert sum(s.generated_tokens for _, s in results) == sum(len(t.response_ids) for t in turns) > 0
    assert all(1 <= len(t.response_ids) <= 8 and len(t.logprobs) == len(t.response_ids) for t in turns)
    assert all(t.weight_version == 0 and t.prompt_ids for t in turns)
    assert {t.metadata["engine"] for t in trajs} == {0}
    # random weights: (strict) format errors on almost every turn, which the summaries count
    assert sum(s.num_errors for _, s in results) > 0
    # The played responses through a fresh env: the engine was sent exactly the env's prompts, and the
    # trajectory and its summary carry the env's own scores of the episode.
    tok = load_tokenizer(str(model_dir))
    by_id = {x.id: x for x in samples}
    for traj, (_, summary) in zip(trajs, results):
        env = MemoryEnv(cfg.env, cfg.memory, make_embedder(cfg.embedder), tokenizer=tok)
        env.reset(options={"sample": by_id[traj.sample_id]})
        for turn in traj.turns:
            assert env.prompt_ids(tok) == turn.prompt_ids
            env.step(turn.response_text, complete=turn.response_ids[-1] == tok.eos_token_id)
        res = env.result()
        assert env.done and res.num_turns == traj.num_turns
        assert (traj.reward, traj.answers, traj.num_errors) == (res.reward, res.answers, res.num_errors)
        assert (summary.reward, summary.num_errors) == (res.reward, res.num_errors)
    assert min(s.reward for _, s in results) < 0  # the penalty applied: rewards are not clipped to [0, 1]
