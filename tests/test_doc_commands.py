"""The commands the README and the docs show: every fenced block that runs one is marked, and every block
marked `<!-- test -->` runs here in its smoke size (tests/doc_commands.py: the convention, the smoke table,
how servers and missing checkpoints are handled), in one scratch workspace, in document order."""

from __future__ import annotations

import shlex

import pytest

from doc_commands import Block, Workspace, blocks, doc_files

ALL = [b for path in doc_files() for b in blocks(path)]


def _tagged() -> list[Block]:
    """The `<!-- test -->` blocks, a block repeated verbatim on another page run once."""
    seen, out = set(), []
    for block in ALL:
        if block.marker != "test":
            continue
        words = tuple(tuple(shlex.split(c, comments=True)) for c in block.commands)  # comments may differ
        if words not in seen:
            seen.add(words)
            out.append(block)
    return out


def test_every_block_that_runs_a_command_is_marked():
    unmarked = [b.where for b in ALL if b.marker is None and b.runs_commands()]
    assert not unmarked, f"blocks with commands but neither <!-- test --> nor <!-- no-test: reason -->: {unmarked}"
    reasonless = [b.where for b in ALL if b.marker and b.marker.startswith("no-test") and not b.marker[8:].strip()]
    assert not reasonless, f"<!-- no-test: ... --> needs its reason: {reasonless}"
    empty = [b.where for b in ALL if b.marker == "test" and not b.runs_commands()]
    assert not empty, f"<!-- test --> on blocks that run no command: {empty}"


def test_the_scan_finds_unmarked_commands_markers_and_continuations(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "```bash\natommem rollout --config c.yaml\n```\n\n<!-- no-test: needs a GPU -->\n```bash\nmake bench\n```\n\n"
        "<!-- test -->\n~~~sh\n# a comment line\npython bench/x.py \\\n    --engine vllm   # trailing\n~~~\n\n"
        "```text\nmake no mistake: output, not a command\n```\n"
    )
    found = blocks(page)
    assert [(b.line, b.marker, b.runs_commands()) for b in found] == [
        (1, None, True), (6, "no-test: needs a GPU", True), (11, "test", True), (17, None, False)
    ]
    assert found[2].commands == ["python bench/x.py      --engine vllm   # trailing"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The scratch workspace, and the one local Ray its in-process commands share (started by the first)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    yield Workspace(tmp_path_factory.mktemp("doc-commands"))
    ray.shutdown()


@pytest.mark.parametrize("block", _tagged(), ids=lambda b: b.where)
def test_tagged_block_runs(block, workspace):
    for command, seconds in workspace.run_block(block):
        print(f"{seconds:7.1f}s  {command}")
