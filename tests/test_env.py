"""MemoryEnv: advance rules, caps, answer phase, errors, isolation, prompts, async batching, registration."""

from __future__ import annotations

import asyncio

import pytest

from atommem.config import EnvConfig, MemoryConfig
from atommem.data.schema import Document, Question, Sample
from atommem.env.memory_env import MemoryEnv, make_env, register_rllib_env
from atommem.env.prompts import render_messages
from atommem.memory.embedders import BatchingEmbedder, HashEmbedder
from env_support import build_tokenizer

SAMPLE = Sample(
    id="s0",
    source="test",
    documents=[
        Document("notes 0", "zorp city lima ."),
        Document("notes 1", "blick pet cat ."),
        Document("notes 2", "zorp pet dog ."),
    ],
    questions=[Question("city of zorp ?", ["lima"]), Question("pet of blick ?", ["cat"])],
)


class CountingEmbedder(HashEmbedder):
    def __init__(self):
        super().__init__(64)
        self.calls: list[tuple[int, bool]] = []

    def embed(self, texts, *, query=False):
        self.calls.append((len(texts), query))
        return super().embed(texts, query=query)


def make(sample=SAMPLE, embedder=None, **env_kw) -> MemoryEnv:
    kw = dict(chunk_tokens=8, chunk_overlap=0, max_chunks=10)  # whitespace tokens: one document per chunk
    kw.update(env_kw)
    env = MemoryEnv(EnvConfig(**kw), MemoryConfig(top_k=3), embedder or HashEmbedder(64), sample=sample)
    env.reset()
    return env


def test_reset_shows_first_chunk_and_questions():
    env = make()
    obs = env.observation
    assert obs.phase == "read" and obs.chunk_index == 0 and obs.num_chunks == 3
    assert obs.chunk_text == "Document 0:\nnotes 0\nzorp city lima ."
    assert obs.questions == ["city of zorp ?", "pet of blick ?"] and obs.question_index == -1
    user = env.prompt_messages()[1]["content"]
    assert "city of zorp ?" in user and "zorp city lima ." in user


def test_write_turn_advances_read_only_keeps_chunk_until_cap():
    env = make(max_read_only_turns=2)
    _, r, term, trunc, info = env.step("<add_memory>zorp city lima</add_memory>")
    assert (r, term, trunc) == (0.0, False, False)
    assert info["advanced"] and info["action_counts"]["create"] == 1 and env.observation.chunk_index == 1
    for streak in (1, 2):
        _, _, _, _, info = env.step("<update_query>zorp city</update_query>")
        assert not info["advanced"] and env.observation.chunk_index == 1
        assert env.observation.read_only_streak == streak
        assert [e.text for e in env.observation.retrieved] == ["zorp city lima"]
    _, _, _, _, info = env.step("<update_query>zorp</update_query>")  # third in a row: over the cap
    assert info["advanced"] and env.observation.chunk_index == 2 and env.observation.read_only_streak == 0
    assert env.observation.query == "zorp"  # the query itself still applies


def test_a_repeated_query_still_changes_the_prompt():
    """A query equal to the current one changes neither memory nor results; only the count of queries in a
    row tells the two prompts apart, so a greedy policy is not stuck repeating it until the cap."""
    for style in ("full", "compact"):
        env = make(prompt_style=style)
        env.step("<update_query>zorp city</update_query>")
        before = env.prompt_messages()
        env.step("<update_query>zorp city</update_query>")
        after = env.prompt_messages()
        assert env.observation.chunk_index == 0 and before != after
        count = {"full": "Queries in a row: {} of 3", "compact": "reads: {}"}[style]
        assert count.format(1) in before[1]["content"] and count.format(2) in after[1]["content"]
        env.step("<add_memory>zorp city lima</add_memory>")
        assert count.format(0) in env.prompt_messages()[1]["content"]


def test_turn_without_valid_action_advances():
    env = make()
    env.step("just thinking, no tags")
    assert env.observation.chunk_index == 1
    _, _, _, _, info = env.step("<add_memory></add_memory>")  # empty body: error, no valid action
    assert info["advanced"] and info["action_counts"]["error"] == 1 and env.observation.chunk_index == 2


def test_scratchpad_update_and_delete_are_writes():
    env = make()
    env.step("<add_memory>a</add_memory><add_memory>b</add_memory><update_memory>note</update_memory>")
    assert env.memory.scratchpad == "note" and [e.id for e in env.memory.entries()] == [1, 2]
    _, _, _, _, info = env.step("<modify_memory>Memory 2: b2</modify_memory><delete_memory>Memory 1</delete_memory>")
    assert info["action_counts"]["update"] == 1 and info["action_counts"]["delete"] == 1 and info["advanced"]
    assert [(e.id, e.text) for e in env.memory.entries()] == [(2, "b2")]


def test_unknown_id_is_noop_counted_and_reported_next_prompt():
    env = make()
    env.step("<add_memory>zorp city lima</add_memory>")
    _, _, _, _, info = env.step("<delete_memory>Memory 9</delete_memory><modify_memory>Memory 7: x</modify_memory>")
    assert info["action_counts"]["error"] == 2 and info["action_counts"]["delete"] == 0
    assert [e.text for e in env.memory.entries()] == ["zorp city lima"]
    assert len(env.observation.errors) == 2 and "Memory 9" in env.observation.errors[0]
    full = render_messages(env.observation, "full")[1]["content"]
    assert "Memory 9" in full and "Memory 7" in full
    assert "errors: delete_memory | modify_memory\n" in render_messages(env.observation, "compact")[1]["content"]
    env.step("<update_memory>ok</update_memory>")  # answer phase now; a clean turn clears the errors
    assert env.observation.errors == []
    assert "Memory 9" not in env.prompt_messages()[1]["content"]


def test_answer_phase_poses_questions_in_order_and_rewards_at_the_end():
    env = make()
    env.step("<add_memory>zorp city lima</add_memory>")
    env.step("<add_memory>blick pet cat</add_memory>")
    _, r, term, _, info = env.step("")
    assert info["phase"] == "answer" and (r, term) == (0.0, False)
    obs = env.observation
    assert obs.question_index == 0 and obs.chunk_text == "" and obs.query == ""
    assert "city of zorp ?" in env.prompt_messages()[1]["content"]
    env.step("<update_query>zorp city</update_query>")
    assert env.observation.question_index == 0 and "Memory 1: zorp city lima" in env.observation.retrieved_text
    _, r, term, _, info = env.step(r"<final_answer>\boxed{Lima}</final_answer>")
    assert (r, term) == (0.0, False) and info["advanced"]
    assert env.observation.question_index == 1 and env.observation.query == ""  # query cleared per question
    assert "pet of blick ?" in env.prompt_messages()[1]["content"]
    _, r, term, _, _ = env.step(r"<final_answer>\boxed{dog}</final_answer>")
    assert term and r == 0.5 and env.done
    res = env.result()
    assert res.answers == ["Lima", "dog"] and res.correct == [True, False] and res.num_turns == 6
    assert res.action_counts["create"] == 2 and res.action_counts["answer"] == 2 and res.action_counts["read"] == 1
    with pytest.raises(RuntimeError):
        env.step("")


def test_final_answer_while_reading_is_an_error():
    env = make()
    _, _, _, _, info = env.step(r"<final_answer>\boxed{lima}</final_answer>")
    assert info["action_counts"]["answer"] == 0 and info["action_counts"]["error"] == 1
    assert env.observation.phase == "read" and env.observation.chunk_index == 1


def test_separate_read_and_answer_caps():
    env = make(max_read_steps=1, max_answer_steps=2, max_read_only_turns=5)
    env.step("<update_query>x</update_query>")  # read cap reached after one turn although chunks remain
    assert env.observation.phase == "answer" and env.observation.question_index == 0
    env.step("<update_query>zorp</update_query>")
    _, _, _, _, info = env.step("thinking")  # second turn without an answer: question 0 unanswered
    assert info["advanced"] and env.observation.question_index == 1
    _, r, term, _, _ = env.step(r"<final_answer>\boxed{cat}</final_answer>")
    assert term and r == 0.5 and env.result().answers == ["", "cat"]


def test_answer_phase_query_cap():
    env = make(max_read_steps=1, max_answer_steps=10, max_read_only_turns=1)
    env.step("")
    env.step("<update_query>a</update_query>")
    _, _, _, _, info = env.step("<update_query>b</update_query>")
    assert info["action_counts"]["read"] == 0 and info["action_counts"]["error"] == 1
    assert env.observation.query == "a"


def test_isolation_between_envs_on_the_same_sample():
    a, b = make(), make()
    a.step("<add_memory>zorp city lima</add_memory>")
    b.step("<add_memory>other</add_memory>")
    b.step("<delete_memory>Memory 1</delete_memory>")
    assert [e.text for e in a.memory.entries()] == ["zorp city lima"]
    assert b.memory.entries() == [] and a.memory is not b.memory


def test_strict_mode_format_errors_apply_nothing():
    env = make(strict_format=True, format_penalty=0.25)
    _, _, _, _, info = env.step("I store <add_memory>zorp city lima</add_memory>")
    assert info["action_counts"]["create"] == 0 and info["errors"][0].startswith("outside_text")
    assert len(env.memory) == 0 and env.observation.chunk_index == 1  # no valid action: advances
    _, _, _, _, info = env.step("<add_memory>blick pet cat</add_memory>", complete=False)
    assert len(env.memory) == 0 and any(e.startswith("truncated") for e in info["errors"])
    assert env.observation.chunk_index == 2
    env.step("<add_memory>zorp pet dog</add_memory>")  # clean strict response works
    assert [e.text for e in env.memory.entries()] == ["zorp pet dog"]
    env.step(r"<final_answer>\boxed{lima}</final_answer>")
    _, r, term, _, _ = env.step(r"<final_answer>\boxed{cat}</final_answer>")
    assert term and r == pytest.approx(1.0 - 2 * 0.25)  # two turns with errors


def test_lenient_mode_ignores_outside_text():
    env = make()
    env.step("I store <add_memory>zorp city lima</add_memory> because of question 1")
    assert [e.text for e in env.memory.entries()] == ["zorp city lima"]
    assert env.observation.errors == []


def test_prompt_ids_equal_chat_template_of_messages():
    tok = build_tokenizer()
    env = MemoryEnv(EnvConfig(chunk_tokens=8, chunk_overlap=2, prompt_style="compact"), MemoryConfig(), HashEmbedder(64), tokenizer=tok)
    env.reset(options={"sample": SAMPLE})
    ids = env.prompt_ids(tok)
    expected = tok.apply_chat_template(env.prompt_messages(), add_generation_prompt=True, tokenize=True, return_dict=False)
    assert ids == list(expected) and ids == env.prompt_ids(tok)
    text = tok.decode(ids)
    assert text.startswith("<|system|>") and text.endswith("<|assistant|>\n")
    env.step("<add_memory>zorp city lima</add_memory>")
    assert env.prompt_ids(tok) != ids  # a new turn, a new prompt


def test_reset_obs_is_text_in_the_observation_space():
    env = MemoryEnv(EnvConfig(chunk_tokens=8, chunk_overlap=0), MemoryConfig(), HashEmbedder(64))
    obs, info = env.reset(options={"sample": SAMPLE}, seed=1)
    assert isinstance(obs, str) and env.observation_space.contains(obs) and info["num_chunks"] == 3
    assert env.action_space.contains("")


def test_sample_without_questions_is_a_data_error():
    from atommem.errors import DataError

    env = MemoryEnv(EnvConfig(), MemoryConfig(), HashEmbedder(64))
    with pytest.raises(DataError):
        env.reset(options={"sample": Sample("x", "t", [Document("a", "b")], [])})


def test_step_batches_embeddings_of_one_turn():
    emb = CountingEmbedder()
    env = make(embedder=emb)
    env.step("<add_memory>a</add_memory><modify_memory>Memory 1: b</modify_memory><update_query>q</update_query>")
    assert emb.calls == [(2, False), (1, True)]
    env.step("<update_query>q</update_query>")  # unchanged query: no re-embedding
    assert len(emb.calls) == 2


def test_astep_batches_across_envs_and_matches_step():
    emb = CountingEmbedder()
    batching = BatchingEmbedder(emb)
    envs = [make(embedder=emb) for _ in range(3)]
    ref = make()
    actions = ["<add_memory>zorp city lima</add_memory>", "<add_memory>blick pet cat</add_memory>", ""]

    async def play():
        for act in actions:
            await asyncio.gather(*(e.astep(act, embedder=batching) for e in envs))

    asyncio.run(play())
    for act in actions:
        ref.step(act)
    assert batching.num_calls == 2 and emb.calls == [(3, False), (3, False)]
    for e in envs:
        assert e.observation == ref.observation


def test_make_env_and_rllib_registration():
    import ray
    from ray.tune.registry import ENV_CREATOR, _global_registry

    name = register_rllib_env("atommem/TestMemoryEnv")
    creator = _global_registry.get(ENV_CREATOR, name)
    env = creator({"env": {"chunk_tokens": 8, "chunk_overlap": 0}, "memory": {"top_k": 2}, "samples": [SAMPLE.to_row()]})
    assert isinstance(env, MemoryEnv)
    obs, _ = env.reset(seed=0)
    assert "zorp city lima" in obs
    with pytest.raises(ValueError):
        make_env({"bogus": 1})
    assert not ray.is_initialized()  # registering and building needs no running Ray


def test_truncated_strict_response_reports_one_truncation():
    env = make(strict_format=True)
    _, _, _, _, info = env.step("<add_memory>zorp city lima</add_mem", complete=False)
    assert [e.split(":")[0] for e in info["errors"]] == ["truncated"] and len(env.memory) == 0
    env2 = make()  # lenient mode: a cut-off response still applies its complete tags
    env2.step("<add_memory>zorp city lima</add_memory><add_memory>x", complete=False)
    assert [e.text for e in env2.memory.entries()] == ["zorp city lima"]


def test_gymnasium_env_checker_passes():
    import warnings

    from gymnasium.utils.env_checker import check_env

    from atommem.config import SynthConfig
    from atommem.data.synthetic import generate_synthetic

    env = MemoryEnv(EnvConfig(chunk_tokens=16, chunk_overlap=3), MemoryConfig(), HashEmbedder(64), samples=generate_synthetic(SynthConfig(), 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker reports most API violations as warnings only
        check_env(env, skip_render_check=True)


def test_add_into_a_full_memory_is_a_reported_noop_until_room_is_made():
    env = MemoryEnv(
        EnvConfig(chunk_tokens=8, chunk_overlap=0, max_chunks=10), MemoryConfig(top_k=3, max_entries=1), HashEmbedder(64),
        sample=SAMPLE,
    )
    env.reset()
    env.step("<add_memory>zorp city lima</add_memory>")
    _, _, _, _, info = env.step("<add_memory>blick pet cat</add_memory>")
    assert info["action_counts"]["create"] == 0 and info["action_counts"]["error"] == 1
    assert info["advanced"]  # a turn with no valid write advances like any other
    assert [e.text for e in env.memory.entries()] == ["zorp city lima"]
    assert "memory is full (1 entries)" in env.observation.errors[0]
    assert "add_memory" in env.prompt_messages()[1]["content"]
    env.step("<delete_memory>Memory 1</delete_memory> <add_memory>zorp pet dog</add_memory>")
    assert [e.text for e in env.memory.entries()] == ["zorp pet dog"] and env.result().num_errors == 1


def test_turn_states_label_chunks_and_are_counted_per_state():
    labelled = Sample(
        id="s1", source="test", documents=SAMPLE.documents, questions=SAMPLE.questions,
        metadata={"turn_states": {"markers": [["zorp pet dog .", "revision"], ["zorp city lima .", "relevant"]],
                                  "default": "distractor"}},
    )
    env = make(sample=labelled)
    seen = []
    for response in ["<update_query>zorp city</update_query>", "<add_memory>zorp city lima</add_memory>", "",
                     "<add_memory>zorp pet dog</add_memory>", "<update_query>zorp city</update_query>"]:
        seen.append(env.turn_state)
        assert env.step(response)[4]["state"] == seen[-1]
    assert seen == ["relevant", "relevant", "distractor", "revision", "answer"]
    counts = env.result().state_counts
    assert counts["relevant"] == {**counts["relevant"], "turns": 2, "read": 1, "create": 1}
    assert (counts["distractor"]["turns"], counts["revision"]["create"], counts["answer"]["read"]) == (1, 1, 1)
    plain = make()  # no labels: the phase
    assert plain.turn_state == "read"
    plain.step("")
    assert set(plain.result().state_counts) == {"read"}


def test_overwrite_action_set_refuses_every_tag_but_the_note_and_the_answer():
    env = make(action_set="overwrite")
    _, _, _, _, info = env.step("<add_memory>zorp city lima</add_memory> <update_query>zorp city</update_query>")
    assert info["errors"] == [
        "add_memory: not in this action set (env.action_set: overwrite; ignored)",
        "update_query: not in this action set (env.action_set: overwrite; ignored)",
    ]
    assert len(env.memory) == 0 and env.observation.query == "" and info["action_counts"]["error"] == 2
    assert env.observation.chunk_index == 1  # no valid action: the chunk advances
    assert env.observation.errors == info["errors"]  # reported in the next prompt
    env.step("<update_memory>zorp city lima</update_memory>")
    env.step("<update_memory>zorp city lima ; blick pet cat</update_memory>")
    assert env.memory.scratchpad == "zorp city lima ; blick pet cat" and env.phase == "answer"
    env.step(r"<final_answer>\boxed{lima}</final_answer>")
    _, r, term, _, _ = env.step(r"<final_answer>\boxed{cat}</final_answer>")
    assert term and r == 1.0 and env.result().action_counts["scratchpad"] == 2
