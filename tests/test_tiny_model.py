"""Tiny model: builds from synthetic episodes, saves an HF dir, reloads; clear errors for bad paths."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from atommem.config import ModelConfig, SynthConfig, TinyModelConfig
from atommem.data.synthetic import synthetic_vocabulary
from atommem.errors import UserError
from atommem.models.loading import load_model, load_tokenizer
from atommem.models.tiny import count_parameters, ensure_model
from helpers_models import TEST_SYNTH, make_tiny_model_dir, tiny_test_config


def expected_llama_params(hidden: int, layers: int, inter: int, vocab: int) -> int:
    per_layer = 4 * hidden * hidden + 3 * hidden * inter + 2 * hidden  # q,k,v,o + gate,up,down + 2 norms
    return vocab * hidden + layers * per_layer + hidden  # tied embeddings + final norm


def test_build_save_reload(tmp_path):
    path = make_tiny_model_dir(tmp_path, hidden=32, layers=2)
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()
    model = load_model(path)
    tok = load_tokenizer(path)
    cfg = tiny_test_config(32, 2)
    assert model.config.vocab_size == len(tok) <= cfg.vocab_size
    assert count_parameters(model) == expected_llama_params(32, 2, cfg.intermediate_size, len(tok))
    assert model.config.eos_token_id == tok.eos_token_id and model.config.pad_token_id == tok.pad_token_id
    for word in synthetic_vocabulary(TEST_SYNTH):
        assert len(tok.encode(" " + word, add_special_tokens=False)) == 1, word
    ids = torch.tensor([tok.encode(" zorp city lima", add_special_tokens=False)])
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tok)) and torch.isfinite(logits).all()


def test_seeded_init_is_reproducible(tmp_path):
    a = load_model(make_tiny_model_dir(tmp_path / "a"))
    b = load_model(make_tiny_model_dir(tmp_path / "b", hidden=32, layers=2))
    for (na, ta), (nb, tb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(ta, tb)


def test_ensure_model_builds_once_and_qwen2_works(tmp_path):
    tiny = TinyModelConfig(arch="qwen2", hidden_size=32, num_layers=1, num_heads=4, intermediate_size=64, vocab_size=1000)
    cfg = ModelConfig(path=str(tmp_path / "m"), tiny=tiny)
    path = ensure_model(cfg, SynthConfig(name_vocab=40))
    assert json.loads((path / "config.json").read_text())["model_type"] == "qwen2"
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert ensure_model(cfg, SynthConfig(name_vocab=40)) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # not rebuilt
    tok = load_tokenizer(path)
    prompt = tok.apply_chat_template([{"role": "user", "content": "pet of zorp ?"}], add_generation_prompt=True, tokenize=False)
    assert prompt == "<|user|>pet of zorp ?<|assistant|>"
    # Other settings than the build's: a stale directory is an error naming what changed, never reused.
    with pytest.raises(UserError, match=r"synth\.name_vocab differ.*delete it"):
        ensure_model(cfg, SynthConfig(name_vocab=41))
    with pytest.raises(UserError, match=r"tiny\.hidden_size"):
        ensure_model(ModelConfig(path=str(path), tiny=dataclasses.replace(tiny, hidden_size=64)), SynthConfig(name_vocab=40))
    assert ensure_model(ModelConfig(path=str(path)), SynthConfig(name_vocab=41)) == path  # a plain HF dir: used as is


def test_a_plain_tokenizer_loads_as_autotokenizer_would_without_importing_torch(tmp_path):
    """Every rollout actor loads the policy's tokenizer: AutoTokenizer imports torch and transformers' model
    registry (9 s of a fresh process here); the same class, imported directly, does not."""
    import subprocess
    import sys

    from transformers import AutoTokenizer

    path = make_tiny_model_dir(tmp_path)
    ours, auto = load_tokenizer(path), AutoTokenizer.from_pretrained(str(path))
    assert type(ours) is type(auto)
    chat = [{"role": "user", "content": "zorp city ?"}]
    assert ours.apply_chat_template(chat, add_generation_prompt=True) == auto.apply_chat_template(chat, add_generation_prompt=True)
    assert ours.encode("<add_memory> zorp city lima </add_memory>") == auto.encode("<add_memory> zorp city lima </add_memory>")
    probe = ("import sys; from atommem.models.loading import load_tokenizer; load_tokenizer(sys.argv[1]); "
             "print(sorted({'torch', 'sklearn'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    # a tokenizer of a model-specific class still goes through AutoTokenizer
    config = json.loads((path / "tokenizer_config.json").read_text())
    (path / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "Qwen2Tokenizer"}))
    assert type(load_tokenizer(path)).__name__ == "Qwen2Tokenizer"


def test_missing_paths_are_user_errors(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="does not exist"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        load_tokenizer(tmp_path / "empty")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="offline"):
        load_model("Qwen/Qwen3-8B")
    with pytest.raises(UserError, match="model.path is not set"):
        ensure_model(ModelConfig(path=None, tiny=TinyModelConfig()), SynthConfig())
    with pytest.raises(UserError, match="does not exist"):
        ensure_model(ModelConfig(path=str(tmp_path / "absent")), SynthConfig())


def test_cli_prints_parameters_and_vocab(tmp_path, capsys):
    from atommem.cli import main

    out = tmp_path / "cli-model"
    rc = main(
        ["model", "tiny", "--out", str(out), "--set", "model.tiny.hidden_size=32", "--set", "model.tiny.num_layers=1",
         "--set", "data.synth.name_vocab=40"]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["path"] == str(out) and report["vocab_size"] == len(load_tokenizer(out))
    assert report["parameters"] == count_parameters(load_model(out))


def test_revisions_corpus_makes_the_memory_action_words_single_tokens(tmp_path):
    """The tokenizer corpus plays the oracle on the configured task: on revisions it queries, modifies and
    reads `Memory N:` lines, so what a policy copies there (ids, the word Memory) is one token each."""
    from atommem.models.tiny import synthetic_corpus

    synth = SynthConfig(task="revisions", num_entities=3, num_attributes=3, facts_per_chunk=2, min_questions=2,
                        max_questions=2, revised_fraction=1.0, max_revisions=2, doc_num=6, name_vocab=40)
    corpus = synthetic_corpus(synth, episodes=8)
    assert any(t.startswith("<update_query>") for t in corpus) and any("<modify_memory> Memory " in t for t in corpus)
    tiny = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=4, intermediate_size=64, vocab_size=900)
    tok = load_tokenizer(ensure_model(ModelConfig(path=str(tmp_path / "m"), tiny=tiny), synth))
    pieces = tok.convert_ids_to_tokens(tok.encode("<modify_memory> Memory 3: zorp city lima </modify_memory>",
                                                  add_special_tokens=False))
    assert pieces[:4] == ["<modify_memory>", "ĠMemory", "Ġ3", ":"]


def test_subject_tokens_give_the_subject_a_token_per_attribute(tmp_path):
    synth = SynthConfig(task="revisions", num_entities=3, num_attributes=3, facts_per_chunk=2, min_questions=2,
                        max_questions=2, revised_fraction=1.0, max_revisions=2, doc_num=6, name_vocab=40,
                        one_entity_questions=True, subject="user")
    tiny = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=4, intermediate_size=64, vocab_size=900,
                           subject_tokens=True)
    tok = load_tokenizer(ensure_model(ModelConfig(path=str(tmp_path / "m"), tiny=tiny), synth))
    ids = tok.encode(" user city oslo . user pet owl . city of user ?", add_special_tokens=False)
    user_city, user_pet, plain_user = ids[0], ids[4], ids[-2]
    assert len({user_city, user_pet, plain_user}) == 3  # the question's "user" is followed by "?": the plain token
    assert tok.convert_ids_to_tokens(ids[1:4]) == ["Ġcity", "Ġoslo", "Ġ."] and tok.decode(ids) == " user city oslo . user pet owl . city of user ?"
    with pytest.raises(UserError, match="needs data.synth.subject"):
        ensure_model(ModelConfig(path=str(tmp_path / "n"), tiny=tiny), dataclasses.replace(synth, subject=None))
