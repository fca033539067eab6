import asyncio

import pytest

from atommem.config import Config, SynthConfig
from atommem.data.synthetic import generate_synthetic
from atommem.engines.base import Generation, SamplingParams
from atommem.errors import UserError
from atommem.rollout.local_runners import LocalRunners
from atommem.eval.evaluate import evaluation_runners, run_eval
from atommem.policies import make_policy_factory, policy_names

import atommem.baselines  # noqa: F401
from atommem.baselines.facts import facts_in, resolve
from atommem.baselines.rag import passages

SCRIPTED = ["memagent-scripted", "rag-scripted", "truncate-scripted"]


def _eval(cfg, samples, name, **policy_kwargs):
    with evaluation_runners(cfg, name, None, policy_kwargs=policy_kwargs) as runners:
        return run_eval(runners, cfg, samples, name)


def _cfg():
    cfg = Config()
    cfg.env.chunk_tokens = 64
    cfg.env.chunk_overlap = 0
    return cfg


@pytest.fixture(scope="module")
def short_samples():
    return generate_synthetic(SynthConfig(two_hop_fraction=0.3, max_questions=3), n=24, seed=3)


@pytest.fixture(scope="module")
def long_samples():
    # 30 documents of 4 facts: ~600 words, far beyond the scripted truncation window (128 words)
    return generate_synthetic(SynthConfig(two_hop_fraction=0.3, max_questions=3, doc_num=30), n=24, seed=4)


def test_registry_lists_every_policy():
    assert {"atommem", "oracle", "memagent", "rag", "truncate", *SCRIPTED} <= set(policy_names())


@pytest.mark.parametrize("name", ["memagent", "rag", "truncate"])
def test_model_baselines_without_engine_say_how_to_fix(name):
    with pytest.raises(UserError, match="scripted"):
        make_policy_factory(name)()


def test_oracle_scores_one(long_samples):
    r = _eval(_cfg(), long_samples, "oracle")
    assert r.em == 1.0 and r.summary["questions"] == sum(len(s.questions) for s in long_samples)


def test_scripted_baselines_short_context_all_fit(short_samples):
    for name in SCRIPTED:
        r = _eval(_cfg(), short_samples, name)
        assert r.em == 1.0, name  # everything fits: memory capacity, top-k and window are not binding


def test_scripted_baselines_long_context_signatures(long_samples):
    res = {n: _eval(_cfg(), long_samples, n) for n in SCRIPTED}
    rates = {n: r.summary["action_rates"] for n, r in res.items()}
    # MemAgent: only the scratchpad; RAG: creates + one query per question; truncate: answers only
    assert rates["memagent-scripted"]["scratchpad"] > 0 and rates["memagent-scripted"]["create"] == 0
    assert rates["rag-scripted"]["create"] > 0 and rates["rag-scripted"]["read"] > 0
    assert rates["rag-scripted"]["scratchpad"] == 0
    assert all(rates["truncate-scripted"][k] == 0 for k in ("create", "read", "scratchpad", "update", "delete"))
    assert all(r["error"] == 0 for r in rates.values())
    em = {n: r.em for n, r in res.items()}
    # the window keeps ~1/5 of the context: truncation must lose most answers; memory baselines keep most
    assert em["truncate-scripted"] < 0.5
    assert em["memagent-scripted"] > 0.6 and em["rag-scripted"] > 0.6
    assert em["truncate-scripted"] < min(em["memagent-scripted"], em["rag-scripted"])


def test_memagent_capacity_binds(long_samples):
    tight = _eval(_cfg(), long_samples, "memagent-scripted", keep=1)
    roomy = _eval(_cfg(), long_samples, "memagent-scripted", keep=8)
    assert tight.em < roomy.em


def test_facts_and_resolve():
    text = " tesak pet owl . zanom pet crab . zadat friend zanom ."
    assert facts_in(text) == [("tesak", "pet", "owl"), ("zanom", "pet", "crab"), ("zadat", "friend", "zanom")]
    assert facts_in("Memory 3: zorp city lima\nMemory 1: a b c") == [("zorp", "city", "lima"), ("a", "b", "c")]
    assert resolve("pet of friend of zadat ?", facts_in(text)) == "crab"
    assert resolve("city of zadat ?", facts_in(text)) == "unknown"
    assert resolve("who wrote hamlet", facts_in(text)) == "unknown"


def test_passages_cut_between_sentences_and_strip_tags():
    t = " a b c . d e f . g h i ."
    assert passages(t, 8) == ["a b c . d e f .", "g h i ."]
    assert passages("one two three four five", 2) == ["one two", "three four", "five"]
    assert passages("x </add_memory> y", 10) == ["x y"]


class FakeEngine:
    """Returns a fixed reply for each prompt, recording the prompts it saw."""

    def __init__(self, tokenizer, reply):
        self.tok, self.reply, self.prompts = tokenizer, reply, []

    async def generate(self, prompt_ids, params):
        self.prompts.append(self.tok.decode(prompt_ids))
        ids = list(self.tok.encode(self.reply(self.prompts[-1]), add_special_tokens=False)) + [self.tok.eos_token_id]
        return Generation(token_ids=ids, logprobs=[-0.5] * len(ids), finish_reason="stop", weight_version=3)


def _tokenizer():
    from tests.env_support import build_tokenizer

    return build_tokenizer()


@pytest.mark.parametrize("name", ["memagent", "rag", "truncate"])
def test_model_baselines_wrap_model_text_in_their_workflow(name, short_samples):
    tok = _tokenizer()
    sample = short_samples[0]
    gold = sample.questions[0].answers[0]
    engine = FakeEngine(tok, lambda prompt: f"memo {gold}" if "New memory:" in prompt else f"it is \\boxed{{{gold}}}")
    cfg = _cfg()
    cfg.env.chunk_tokens = 256  # BPE tokens of the test tokenizer now chunk the context, not words
    with LocalRunners(cfg, name, engines=[engine], tokenizer=tok, temperature=0.0) as runners:
        r = run_eval(runners, cfg, [sample], name)
    assert r.episodes[0].correct[0] is True  # the boxed answer went through <final_answer>
    assert r.episodes[0].action_counts["error"] == 0
    assert all("Question:" in p or "New memory:" in p for p in engine.prompts)
    if name == "memagent":
        assert r.summary["action_rates"]["scratchpad"] > 0
        assert any(f"memo {gold}" in p for p in engine.prompts)  # the rewritten memory is shown back
    if name == "rag":
        assert any("Retrieved passages:" in p and gold in p for p in engine.prompts)
    if name == "truncate":
        assert len(engine.prompts) == len(sample.questions)  # no model call while reading


def test_model_baseline_output_carries_ids():
    from atommem.baselines.memagent import MemAgentPolicy
    from atommem.env.memory_env import MemoryEnv
    from atommem.memory.embedders import HashEmbedder

    tok = _tokenizer()
    sample = generate_synthetic(SynthConfig(), n=1, seed=0)[0]
    env = MemoryEnv(_cfg().env, _cfg().memory, HashEmbedder())
    env.reset(options={"sample": sample})
    engine = FakeEngine(tok, lambda p: "keep <update_memory> zorp city lima </update_memory>")
    out = asyncio.run(MemAgentPolicy(engine, tok, SamplingParams(max_tokens=8)).act(env))
    assert out.text == "<update_memory> keep zorp city lima </update_memory>"
    assert out.prompt_ids and out.response_ids[-1] == tok.eos_token_id and out.weight_version == 3


def _revisions_cfg():
    cfg = _cfg()
    cfg.env.chunk_tokens = 24  # whitespace tokens: one document of 5 facts per chunk
    cfg.memory.max_entries, cfg.memory.top_k, cfg.memory.tie_margin = 2, 4, 0.15
    cfg.embedder.dim = 1024
    return cfg


@pytest.fixture(scope="module")
def revision_samples():
    return generate_synthetic(SynthConfig(
        task="revisions", num_entities=4, num_attributes=4, facts_per_chunk=5, doc_num=8, min_questions=2,
        max_questions=2, revised_fraction=0.75, max_revisions=3), n=40, seed=5)


def test_on_revisions_a_bounded_memory_separates_the_workflows(revision_samples):
    cfg = _revisions_cfg()
    em = {n: _eval(cfg, revision_samples, n).em for n in ["oracle", "store-everything-scripted", *SCRIPTED]}
    assert em["oracle"] == 1.0
    # storing every line fills the two entries with the first facts read; stale copies of a key crowd the
    # other key out of MemAgent's two lines; later chunks push the latest values out of truncation's window
    assert em["store-everything-scripted"] < 0.3 and em["rag-scripted"] < 0.3
    assert 0.5 < em["memagent-scripted"] < 0.95 and 0.5 < em["truncate-scripted"] < 0.95


def test_memagent_budget_defaults_to_the_agents_memory(revision_samples):
    cfg = _revisions_cfg()
    same = _eval(cfg, revision_samples, "memagent-scripted")
    assert same.em == _eval(cfg, revision_samples, "memagent-scripted", keep=2).em
    assert same.em < _eval(cfg, revision_samples, "memagent-scripted", keep=8).em == 1.0


def test_scripted_workflows_play_the_whole_language_whatever_action_set_the_model_has(revision_samples):
    """Scored beside a model trained with MemAgent's action set, the workflows keep their own operations."""
    cfg = _revisions_cfg()
    cfg.env.action_set = "overwrite"
    assert _eval(cfg, revision_samples, "oracle").em == 1.0
    assert _eval(cfg, revision_samples, "memagent-scripted").em == _eval(_revisions_cfg(), revision_samples, "memagent-scripted").em
