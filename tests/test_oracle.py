"""OraclePolicy through the real MemoryEnv: perfect at p=1, answers 'unknown' when it stores nothing."""

from __future__ import annotations

import asyncio

import pytest

from atommem.actions import parse_actions
from atommem.config import EnvConfig, MemoryConfig, SynthConfig
from atommem.data.synthetic import generate_synthetic
from atommem.env.memory_env import MemoryEnv
from atommem.memory.embedders import BatchingEmbedder, HashEmbedder
from atommem.policies.oracle import OraclePolicy
from env_support import build_tokenizer

SAMPLES = generate_synthetic(SynthConfig(num_entities=4, num_attributes=2, max_questions=3, two_hop_fraction=0.5), 50, seed=7)


def play(env: MemoryEnv, sample, policy: OraclePolicy, use_async: bool = False):
    env.reset(options={"sample": sample})
    outputs = []

    async def run():
        batching = BatchingEmbedder(HashEmbedder(128))
        while not env.done:
            out = await policy.act(env)
            outputs.append(out)
            await env.astep(out.text, complete=out.complete, embedder=batching)

    if use_async:
        asyncio.run(run())
    else:
        while not env.done:
            out = asyncio.run(policy.act(env))
            outputs.append(out)
            env.step(out.text)
    return env.result(), outputs


@pytest.mark.parametrize(
    "chunk_tokens,overlap,style,strict",
    [(6, 3, "compact", True), (16, 3, "full", False), (1000, 0, "compact", True)],
)
def test_oracle_is_perfect(chunk_tokens, overlap, style, strict):
    env = MemoryEnv(
        EnvConfig(chunk_tokens=chunk_tokens, chunk_overlap=overlap, prompt_style=style, strict_format=strict),
        MemoryConfig(top_k=2, render_budget_tokens=64),
        HashEmbedder(128),
    )
    hops = set()
    for s in SAMPLES:
        res, _ = play(env, s, OraclePolicy())
        assert res.reward == 1.0, (s.id, res)
        assert res.num_errors == 0
        assert {e.text for e in res.memory} == {" ".join(f) for c in s.metadata["chains"] for f in c["facts"]}
        hops |= {len(c["path"]) for c in s.metadata["chains"]}
    assert hops == {1, 2}


def test_oracle_async_and_distractors():
    env = MemoryEnv(EnvConfig(chunk_tokens=10, chunk_overlap=3), MemoryConfig(top_k=6), HashEmbedder(128))
    for s in SAMPLES[:15]:
        res, _ = play(env, s, OraclePolicy(store_distractor_p=1.0), use_async=True)
        assert res.reward == 1.0
        assert len(res.memory) == len(s.metadata["facts"])  # every fact stored exactly once despite overlap


def test_oracle_without_memory_answers_unknown():
    env = MemoryEnv(EnvConfig(chunk_tokens=16, chunk_overlap=3), MemoryConfig(), HashEmbedder(128))
    total = 0.0
    for s in SAMPLES[:20]:
        res, outs = play(env, s, OraclePolicy(store_relevant_p=0.0))
        total += res.reward
        assert set(res.answers) == {"unknown"} and res.memory == []
        assert all(o.text == "" for o in outs[: env.observation.num_chunks])  # nothing stored while reading
    assert total == 0.0


def test_answer_top_hit_guesses_from_the_top_entry_and_unknown_only_on_empty_memory():
    env = MemoryEnv(EnvConfig(chunk_tokens=16, chunk_overlap=3), MemoryConfig(top_k=2), HashEmbedder(128))
    one_hop = [s for s in SAMPLES if all(len(c["path"]) == 1 for c in s.metadata["chains"])]
    guesses = unknowns = 0
    for i, s in enumerate(one_hop):
        res, outs = play(env, s, OraclePolicy(store_relevant_p=0.4, store_distractor_p=0.15, rng_seed=i, answer_top_hit=True))
        plain, _ = play(env, s, OraclePolicy(store_relevant_p=0.4, store_distractor_p=0.15, rng_seed=i))
        stored = {e.text for e in res.memory}
        values = {e.text.split()[-1] for e in res.memory}
        assert stored == {e.text for e in plain.memory}  # reading is unchanged, only missing-fact answers differ
        for q, chain, answer, plain_answer in zip(s.questions, s.metadata["chains"], res.answers, plain.answers):
            if " ".join(chain["facts"][-1]) in stored:
                assert answer == plain_answer == q.answers[0]
            elif stored:
                assert answer in values and plain_answer == "unknown"
                guesses += 1
            else:
                assert answer == plain_answer == "unknown"
                unknowns += 1
    assert guesses > 5 and unknowns > 0


def test_weak_teacher_is_seeded_and_partial():
    env = MemoryEnv(EnvConfig(chunk_tokens=16, chunk_overlap=3), MemoryConfig(), HashEmbedder(128))

    def mean_reward(seed):
        return [play(env, s, OraclePolicy(store_relevant_p=0.5, rng_seed=seed + i))[0].reward for i, s in enumerate(SAMPLES)]

    a = mean_reward(1)
    assert a == mean_reward(1)
    assert 0.1 < sum(a) / len(a) < 0.9


def test_oracle_token_ids_with_tokenizer():
    tok = build_tokenizer(tuple(d.text for s in SAMPLES for d in s.documents))
    env = MemoryEnv(EnvConfig(chunk_tokens=24, chunk_overlap=6, prompt_style="compact", strict_format=True), MemoryConfig(top_k=2), HashEmbedder(128), tokenizer=tok)
    for s in SAMPLES[:5]:
        env.reset(options={"sample": s})
        policy = OraclePolicy(tokenizer=tok)
        while not env.done:
            expected_prompt = env.prompt_ids(tok)
            out = asyncio.run(policy.act(env))
            assert out.prompt_ids == expected_prompt
            assert out.response_ids[-1] == tok.eos_token_id
            assert tok.decode(out.response_ids[:-1]) == out.text
            assert not parse_actions(out.text, strict=True).errors
            if "final_answer" in out.text:  # the answer copies the value's tokens as they are in memory
                value_ids = tok(" " + _boxed(out.text), add_special_tokens=False)["input_ids"]
                assert _contains(out.response_ids, value_ids) and _contains(out.prompt_ids, value_ids)
            env.step(out.text)
        assert env.result().reward == 1.0


def _boxed(text: str) -> str:
    from atommem.actions import extract_boxed

    return extract_boxed(text)


def _contains(seq: list[int], sub: list[int]) -> bool:
    return any(seq[i : i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


def test_policy_registry_builds_fresh_oracles():
    from atommem.errors import UserError
    from atommem.policies import make_policy_factory, register_policy

    factory = make_policy_factory("oracle", store_relevant_p=0.0)
    a, b = factory(), factory(rng_seed=3)
    assert isinstance(a, OraclePolicy) and a is not b and b._rng.random() == __import__("random").Random(3).random()
    env = MemoryEnv(EnvConfig(chunk_tokens=16, chunk_overlap=3), MemoryConfig(), HashEmbedder(128))
    assert play(env, SAMPLES[0], a)[0].answers[0] == "unknown"
    register_policy("always-unknown", lambda: OraclePolicy(store_relevant_p=0.0))
    assert isinstance(make_policy_factory("always-unknown")(), OraclePolicy)
    with pytest.raises(UserError, match="unknown policy"):
        make_policy_factory("nope")


REV_CFG = SynthConfig(
    task="revisions", num_entities=3, num_attributes=3, facts_per_chunk=2, min_questions=2, max_questions=2,
    revised_fraction=0.75, max_revisions=2, doc_num=6,
)
REV_SAMPLES = generate_synthetic(REV_CFG, 40, seed=3)


def rev_env(max_entries=2) -> MemoryEnv:
    # one document per chunk (whitespace tokens); every entry in view once a query is set
    return MemoryEnv(
        EnvConfig(chunk_tokens=12, chunk_overlap=0, max_chunks=10, prompt_style="compact", strict_format=True),
        MemoryConfig(top_k=4, render_budget_tokens=64, max_entries=max_entries, tie_margin=0.15),
        HashEmbedder(1024),
    )


def test_oracle_updates_revisions_in_place_and_is_perfect_on_a_tight_memory():
    env = rev_env()
    updates = 0
    for s in REV_SAMPLES:
        res, outputs = play(env, s, OraclePolicy(answer_top_hit=True))
        assert res.reward == 1.0 and res.num_errors == 0, s.id
        latest = {f"{k} {v[-1]}" for k, v in s.metadata["revisions"].items()}
        assert {e.text for e in res.memory} == latest  # one entry per asked key, holding its latest value
        updates += res.action_counts["update"]
        assert res.state_counts.get("revision", {}).get("update", 0) == sum(len(v) - 1 for v in s.metadata["revisions"].values())
    assert updates > 20


def test_weak_teacher_errs_only_on_revisions_of_its_weak_attributes():
    by_kind = {True: {"create": 0, "update": 0}, False: {"create": 0, "update": 0}}
    ems = []
    for i, s in enumerate(REV_SAMPLES * 3):
        weak = set(s.metadata["attributes"][:1])
        env = rev_env(max_entries=4)
        env.reset(options={"sample": s})
        teacher = OraclePolicy(answer_top_hit=True, weak_attributes=weak, weak_update_p=0.3, rng_seed=i)
        while not env.done:
            state = env.turn_state
            text = teacher.respond(env)
            if state == "revision":
                for a in parse_actions(text, strict=True).actions:
                    kind = type(a).__name__
                    attribute = a.text.split()[1] if kind in ("Create", "Update") else None
                    if attribute is not None:
                        by_kind[attribute in weak]["create" if kind == "Create" else "update"] += 1
            env.step(text)
        ems += env.result().correct
    assert by_kind[False]["create"] == 0 and by_kind[False]["update"] > 0
    weak_creates, weak_updates = by_kind[True]["create"], by_kind[True]["update"]
    assert weak_updates > 0 and 0.5 < weak_creates / (weak_creates + weak_updates) < 0.9  # mostly the stale duplicate
    assert 0.6 < sum(ems) / len(ems) < 1.0


def test_full_memory_makes_the_oracle_delete_a_distractor_before_adding():
    env = rev_env(max_entries=2)
    deletes = 0
    for i, s in enumerate(REV_SAMPLES):
        res, _ = play(env, s, OraclePolicy(answer_top_hit=True, store_distractor_p=1.0, rng_seed=i))
        assert res.reward == 1.0, s.id
        deletes += res.action_counts["delete"]
    assert deletes > 10
