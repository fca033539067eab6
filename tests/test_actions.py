"""Action language: every error kind, canonical round trip, adversarial inputs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atommem.actions import (
    ACTION_KINDS,
    PARSE_ERROR_KINDS,
    TAG_NAMES,
    Answer,
    Create,
    Delete,
    Read,
    Scratchpad,
    Update,
    action_kind,
    extract_boxed,
    parse_actions,
    render_action,
)


def kinds(text: str, strict: bool = False) -> list[str]:
    return [e.kind for e in parse_actions(text, strict=strict).errors]


def test_all_six_actions_in_order_with_free_text_between():
    text = (
        "I think. <update_query> zorp city </update_query> then\n"
        "<add_memory>zorp city lima .</add_memory>"
        "<modify_memory> Memory 7: zorp city paris </modify_memory> ok "
        "<delete_memory>Memory 3</delete_memory>"
        "<update_memory> note: 2 hops </update_memory>"
        "<final_answer> the answer is \\boxed{lima} </final_answer> done"
    )
    r = parse_actions(text)
    assert r.errors == []
    assert r.actions == [
        Read("zorp city"),
        Create("zorp city lima ."),
        Update(7, "zorp city paris"),
        Delete(3),
        Scratchpad("note: 2 hops"),
        Answer("the answer is \\boxed{lima}", "lima"),
    ]
    assert [action_kind(a) for a in r.actions] == list(ACTION_KINDS)


@pytest.mark.parametrize(
    "body,expected",
    [("Memory 7", 7), ("memory 12", 12), ("7", 7), ("Memory #4", 4), ("Memory 5: zorp city lima", 5), ("Memory7", 7)],
)
def test_delete_id_forms(body, expected):
    assert parse_actions(f"<delete_memory>{body}</delete_memory>").actions == [Delete(expected)]


@pytest.mark.parametrize("body", ["Memory x", "zorp city", "Memory -1", "Memory 3 4", "9" * 40])
def test_delete_bad_id(body):
    r = parse_actions(f"<delete_memory>{body}</delete_memory>")
    assert r.actions == [] and [e.kind for e in r.errors] == ["bad_id"]


def test_modify_forms_and_errors():
    assert parse_actions("<modify_memory>3: a b</modify_memory>").actions == [Update(3, "a b")]
    assert parse_actions("<modify_memory>Memory 3: Memory 4: x</modify_memory>").actions == [Update(3, "Memory 4: x")]
    assert kinds("<modify_memory>Memory 3 new text</modify_memory>") == ["bad_id"]
    assert kinds("<modify_memory>new text only</modify_memory>") == ["bad_id"]
    assert kinds("<modify_memory>Memory 3:   </modify_memory>") == ["empty_body"]


@pytest.mark.parametrize("tag", TAG_NAMES)
def test_empty_body_every_tag(tag):
    r = parse_actions(f"<{tag}>  \n </{tag}>")
    assert r.actions == [] and [e.kind for e in r.errors] == ["empty_body"]


def test_unclosed_and_unopened():
    r = parse_actions("<add_memory> a </add_memory> <add_memory> b")
    assert r.actions == [Create("a")]
    assert [(e.kind, e.position) for e in r.errors] == [("unclosed_tag", 29)]
    r = parse_actions("x </add_memory> <update_query> q </update_query>")
    assert r.actions == [Read("q")]
    assert [(e.kind, e.position) for e in r.errors] == [("unopened_tag", 2)]


def test_mismatched_close_keeps_open_tag():
    r = parse_actions("<add_memory> a </update_memory> b </add_memory>")
    assert r.actions == [Create("a </update_memory> b")]
    assert kinds("<add_memory> a </update_memory> b </add_memory>") == ["unopened_tag"]


def test_nested_tag_abandons_outer_and_keeps_inner():
    r = parse_actions("<update_memory> note <add_memory> x </add_memory> more </update_memory>")
    assert r.actions == [Create("x")]
    assert [(e.kind, e.position) for e in r.errors] == [("nested_tag", 0), ("unopened_tag", 55)]
    r = parse_actions("<add_memory> a <add_memory> b </add_memory>")
    assert r.actions == [Create("b")] and kinds("<add_memory> a <add_memory> b </add_memory>") == ["nested_tag"]


def test_no_boxed_gives_answer_none():
    r = parse_actions("<final_answer> lima </final_answer>")
    assert r.actions == [Answer("lima", None)]
    assert [e.kind for e in r.errors] == ["no_boxed"]


@pytest.mark.parametrize(
    "text",
    ["<add_memory> a </add_mem", "<add_memory> a <", "<add_memory> a </", "ok <add_memo", "<final_answer"],
)
def test_truncated(text):
    r = parse_actions(text)
    assert r.actions == [] and [e.kind for e in r.errors] == ["truncated"]


def test_truncated_after_complete_actions_keeps_them():
    r = parse_actions("<add_memory> a </add_memory> <add_memory> b </add_")
    assert r.actions == [Create("a")] and [e.kind for e in r.errors] == ["truncated"]


def test_trailing_lt_without_open_tag_is_free_text():
    assert parse_actions("a < b and c <").errors == []


def test_strict_mode():
    ok = "<add_memory> a </add_memory>\n <update_query> q </update_query> \n"
    assert parse_actions(ok, strict=True).actions == [Create("a"), Read("q")]
    assert parse_actions(ok, strict=True).errors == []
    for bad in ["think <add_memory> a </add_memory>", "<add_memory> a </add_memory> bye", "<add_memory> a </add_memory>x<update_query> q </update_query>"]:
        r = parse_actions(bad, strict=True)
        assert r.actions == []
        assert [e.kind for e in r.errors] == ["outside_text"]
        assert parse_actions(bad).actions != []  # lenient mode ignores the free text
    # An unopened closing tag's surrounding text counts as outside; body errors are still reported.
    r = parse_actions("<add_memory></add_memory> <final_answer> x </final_answer>", strict=True)
    assert [e.kind for e in r.errors] == ["empty_body", "no_boxed"] and r.actions == [Answer("x", None)]
    assert parse_actions("", strict=True) == parse_actions("   ", strict=True)
    assert parse_actions("", strict=True).actions == [] and parse_actions("", strict=True).errors == []


def test_every_error_kind_is_reachable():
    seen = set()
    for text, strict in [
        ("<add_memory> a", False),
        ("</add_memory>", False),
        ("<add_memory> <add_memory> a </add_memory>", False),
        ("<add_memory> </add_memory>", False),
        ("<delete_memory> foo </delete_memory>", False),
        ("<final_answer> foo </final_answer>", False),
        ("x <add_memory> a </add_memory>", True),
        ("<add_memory> a </add_me", False),
    ]:
        seen.update(kinds(text, strict))
    assert seen == set(PARSE_ERROR_KINDS)


def test_unicode_and_tags_case_sensitive():
    r = parse_actions("<add_memory> Zürich 東京 — ok 🙂 </add_memory><ADD_MEMORY> x </ADD_MEMORY>")
    assert r.actions == [Create("Zürich 東京 — ok 🙂")] and r.errors == []


def test_extract_boxed():
    assert extract_boxed("\\boxed{a {b} c}") == "a {b} c"
    assert extract_boxed("\\boxed{x} then \\boxed{ y }") == "y"
    assert extract_boxed("\\boxed{x} then \\boxed{unclosed") == "x"
    assert extract_boxed("no box") is None
    assert extract_boxed("\\boxed{") is None
    assert extract_boxed("}}} \\boxed{\\frac{1}{2}} {") == "\\frac{1}{2}"
    assert extract_boxed("\\boxed{}") == ""
    assert extract_boxed("\\boxed{\\boxed{in}}") == "in"


def test_render_is_canonical_one_space():
    assert render_action(Create("zorp city lima")) == "<add_memory> zorp city lima </add_memory>"
    assert render_action(Update(7, "x y")) == "<modify_memory> Memory 7: x y </modify_memory>"
    assert render_action(Delete(7)) == "<delete_memory> Memory 7 </delete_memory>"
    assert render_action(Read("q")) == "<update_query> q </update_query>"
    assert render_action(Scratchpad("s")) == "<update_memory> s </update_memory>"
    assert render_action(Answer("", "lima")) == "<final_answer> \\boxed{lima} </final_answer>"


# Bodies that parse back to themselves: non-empty, stripped, no tag token, no cut-off tag at the end.
_body = (
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
    .map(str.strip)
    .filter(lambda s: s and "<" not in s)
)
_action = st.one_of(
    st.builds(Read, _body),
    st.builds(Create, _body),
    st.builds(Update, st.integers(1, 10**9), _body),
    st.builds(Delete, st.integers(1, 10**9)),
    st.builds(Scratchpad, _body),
    _body.filter(lambda s: "{" not in s and "}" not in s).map(lambda s: Answer(f"\\boxed{{{s}}}", s)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_action, max_size=6))
def test_render_round_trip(actions):
    text = " ".join(render_action(a) for a in actions)
    for strict in (False, True):
        r = parse_actions(text, strict=strict)
        assert r.actions == actions and r.errors == []


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_never_raises_on_arbitrary_text(text):
    for strict in (False, True):
        r = parse_actions(text, strict=strict)
        assert all(e.kind in PARSE_ERROR_KINDS for e in r.errors)
        assert all(0 <= e.position <= len(text) for e in r.errors)


_token = st.one_of(
    st.sampled_from([f"<{n}>" for n in TAG_NAMES] + [f"</{n}>" for n in TAG_NAMES]),
    st.sampled_from(["Memory 3", "Memory x:", "7: y", "\\boxed{", "}", "{", "<", "</", "<add_", " ", "\n", "é"]),
    st.text(max_size=5),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_token, max_size=40), st.booleans())
def test_tag_soup_never_raises_and_counts_are_consistent(tokens, strict):
    text = "".join(tokens)
    r = parse_actions(text, strict=strict)
    closes = sum(text.count(f"</{n}>") for n in TAG_NAMES)
    # every produced action consumed one closing tag
    assert len(r.actions) <= closes
    if strict and any(e.kind == "outside_text" for e in r.errors):
        assert r.actions == []


def test_two_megabyte_adversarial_response():
    unit = "<add_memory> a <modify_memory> \\boxed{ { <final_answer> </delete_memory> x"
    text = unit * (2_000_000 // len(unit)) + "<add_memory> last fact </add_memory>"
    r = parse_actions(text)
    assert r.actions == [Create("last fact")]
    n_units = 2_000_000 // len(unit)
    # per unit: add_memory nested under the previous final_answer, modify nested under add,
    # final_answer nested under modify, one unopened </delete_memory>
    assert sum(e.kind == "nested_tag" for e in r.errors) == 3 * n_units
    assert sum(e.kind == "unopened_tag" for e in r.errors) == n_units
    big_body = "<final_answer> " + "\\boxed{" * 300_000 + "x" + "}" * 299_999 + " </final_answer>"
    # the last \boxed to start (the innermost) is the last complete one
    assert parse_actions(big_body).actions == [Answer(big_body[15:-16].strip(), "x")]
    digits = "<delete_memory> Memory " + "9" * 1_000_000 + " </delete_memory>"
    assert kinds(digits) == ["bad_id"]
