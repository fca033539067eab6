"""GroupBuffer: groups by uid (not by arrival order or reshape), dynamic filtering; request ids."""

from __future__ import annotations

import random

import pytest

from atommem.data.schema import Document, Question, Sample
from atommem.rollout.buffer import GroupBuffer
from atommem.rollout.records import TrajectorySummary, make_requests


def summary(uid: str, g: int, reward: float, turns: int) -> TrajectorySummary:
    return TrajectorySummary(
        episode_id=f"{uid}#{g}", uid=uid, group_index=g, reward=reward, num_turns=turns, generated_tokens=turns * 5,
        correct=[reward == 1.0], action_counts={}, num_errors=0, min_weight_version=0, source="t", context_tokens=10,
    )


def test_groups_by_uid_in_any_arrival_order_with_variable_turns():
    rng = random.Random(0)
    n = 4
    items = [(f"ref-{u}-{g}", summary(u, g, float(g % 2), rng.randint(1, 9))) for u in ("a", "b", "c") for g in range(n)]
    rng.shuffle(items)
    buf = GroupBuffer(group_size=n)
    for ref, s in items[:-1]:
        buf.add(ref, s)
    last_uid = items[-1][1].uid
    assert buf.num_complete == 2 and buf.num_partial == 1
    assert buf.partial_sizes() == {last_uid: n - 1}
    buf.add(*items[-1])
    groups = buf.pop_groups(5)
    assert len(groups) == 3 and buf.num_complete == 0
    assert groups[-1][0][1].uid == last_uid  # completion order
    for group in groups:
        assert len(group) == n
        assert len({s.uid for _, s in group}) == 1
        assert [s.group_index for _, s in group] == list(range(n))
        assert all(ref == f"ref-{s.uid}-{s.group_index}" for ref, s in group)


def test_pop_groups_returns_at_most_the_requested_number():
    buf = GroupBuffer(group_size=2)
    for u in "abc":
        for g in range(2):
            buf.add(None, summary(u, g, g, 1))
    assert [g[0][1].uid for g in buf.pop_groups(2)] == ["a", "b"]
    assert [g[0][1].uid for g in buf.pop_groups(2)] == ["c"]
    assert buf.pop_groups(2) == []


def test_dynamic_filter_drops_and_counts_uniform_reward_groups():
    buf = GroupBuffer(group_size=3, dynamic_filter=True)
    for g in range(3):
        buf.add(None, summary("flat", g, 1.0, 2))
        buf.add(None, summary("mixed", g, 1.0 if g else 0.0, 2))
    assert buf.dropped_groups == 1 and buf.dropped_episodes == 3
    assert [g[0][1].uid for g in buf.pop_groups(10)] == ["mixed"]


def test_custom_keep_predicate_and_no_filter_keeps_uniform_groups():
    keep_all = GroupBuffer(group_size=2)
    for g in range(2):
        keep_all.add(None, summary("flat", g, 0.0, 1))
    assert keep_all.num_complete == 1
    short_only = GroupBuffer(group_size=2, keep=lambda ss: max(s.num_turns for s in ss) < 5)
    for g in range(2):
        short_only.add(None, summary("long", g, g, 3 + 3 * g))
    assert short_only.num_complete == 0 and short_only.dropped_groups == 1


def test_duplicates_and_bad_indices_fail_loudly():
    buf = GroupBuffer(group_size=2)
    buf.add(None, summary("a", 0, 0, 1))
    with pytest.raises(ValueError, match="twice"):
        buf.add(None, summary("a", 0, 0, 1))
    with pytest.raises(ValueError, match="group_index"):
        buf.add(None, summary("a", 2, 0, 1))


def test_make_requests_unique_ids_groups_and_nonce():
    samples = [Sample(f"s{i}", "t", [Document("d", "x")], [Question("q", ["a"])]) for i in range(3)]
    reqs = make_requests(samples, 4, nonce="7", seed=100)
    assert len(reqs) == 12 and len({r.episode_id for r in reqs}) == 12 and len({r.seed for r in reqs}) == 12
    assert {r.uid for r in reqs} == {"s0@7", "s1@7", "s2@7"}
    assert sorted(r.group_index for r in reqs if r.uid == "s1@7") == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="twice"):
        make_requests([samples[0], samples[0]], 2)
