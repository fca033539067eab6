"""The documentation site: a strict MkDocs build, the front page, and a configuration reference generated
from atommem/config.py that documents every field."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
import typing
from pathlib import Path

import yaml

from atommem.config import Config

ROOT = Path(__file__).resolve().parents[1]


def _load_reference_generator():
    spec = importlib.util.spec_from_file_location("config_reference", ROOT / "docs" / "hooks" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


reference = _load_reference_generator()


def _mkdocs_build(config_file: Path, site_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config_file), "--site-dir", str(site_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


def _schema_keys(cls: type, prefix: str = "") -> set[str]:
    """Dotted keys of every non-section field, walked over the dataclasses at runtime."""
    keys = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        sections = [a for a in (typing.get_args(tp) or (tp,)) if dataclasses.is_dataclass(a)]
        keys |= _schema_keys(sections[0], key) if sections else {key}
    return keys


def test_every_config_field_and_section_is_documented():
    missing = reference.undocumented(reference.CONFIG_PY.read_text())
    assert missing == [], f"add a `# ...` comment after each field (a docstring to each section) in atommem/config.py: {missing}"


def test_the_reference_lists_every_field_of_the_schema():
    listed = {f.key for s in reference.sections(reference.CONFIG_PY.read_text()) for f in s.fields}
    assert listed == _schema_keys(Config)


def test_a_field_without_its_comment_is_reported():
    source = '''
from dataclasses import dataclass, field
from typing import Optional

@dataclass
class InnerConfig:
    a: int = 1  # documented
    b: list[int] = field(default_factory=list)

@dataclass
class BareConfig:
    c: int = 0  # documented

@dataclass
class Config:
    inner: InnerConfig = field(default_factory=InnerConfig)
    bare: Optional[BareConfig] = None
    d: Optional[str] = None
'''
    assert reference.undocumented(source) == ["d", "section inner (class docstring)", "inner.b", "section bare (class docstring)"]
    rows = {f.key: f for s in reference.sections(source) for f in s.fields}
    assert (rows["inner.b"].type, rows["inner.b"].default) == ("list[int]", "[]")
    assert rows["inner.a"].doc == "documented"


def test_strict_build_of_the_site(tmp_path):
    site = tmp_path / "site"
    result = _mkdocs_build(ROOT / "mkdocs.yml", site)
    assert result.returncode == 0, result.stdout + result.stderr
    front = (site / "index.html").read_text()
    assert "What <code>make demo</code> prints" in front  # the README is the front page
    assert 'href="getting-started/"' in front  # its docs/ links point into the site
    config_page = (site / "configuration" / "index.html").read_text()
    assert "<code>data.synth.seed</code>" in config_page and "<!-- config-reference -->" not in config_page
    api_page = (site / "api" / "index.html").read_text()
    for path in ("memory.store.MemoryStore", "env.memory_env.MemoryEnv", "engines.base.Engine", "engines.fleet.EngineFleet",
                 "learner.learner_group.LearnerGroup", "trainer.grpo.GRPOTrainer"):
        assert f'id="atommem.{path}"' in api_page, path


def test_strict_build_fails_on_a_broken_link_or_anchor_and_a_page_missing_from_the_nav(tmp_path):
    """The validation settings of mkdocs.yml, on a two-page site: strict turns each warning into a failure."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\nSee [the missing page](missing.md) and [a missing section](#nowhere).\n")
    (docs / "orphan.md").write_text("# Not in the nav\n")
    config.update(docs_dir=str(docs), nav=[{"Home": "index.md"}], plugins=["search"])
    config.pop("hooks")
    config.pop("exclude_docs")
    config_file = tmp_path / "mkdocs.yml"
    config_file.write_text(yaml.safe_dump(config))
    result = _mkdocs_build(config_file, tmp_path / "site")
    assert result.returncode != 0
    assert "missing.md" in result.stderr and "#nowhere" in result.stderr and "orphan.md" in result.stderr


def test_the_readme_is_a_front_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for heading in ("## Quick start", "## What `make demo` prints", "## Architecture", "## Train on a GPU cluster"):
        assert heading in readme
