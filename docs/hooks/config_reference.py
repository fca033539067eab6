"""The configuration reference, generated from atommem/config.py: each field's documentation is written
once, as the `# ...` comment after it, and each section's as its class docstring.

Read from the source (ast + tokenize), not imported, so types and defaults appear as written there.
As an MkDocs hook it replaces MARKER in docs/configuration.md; tests/test_docs_site.py calls
`undocumented` so a field without its comment fails the suite.
"""

from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass
from pathlib import Path

CONFIG_PY = Path(__file__).resolve().parents[2] / "atommem" / "config.py"
MARKER = "<!-- config-reference -->"
ROOT = "Config"


@dataclass
class FieldDoc:
    key: str  # dotted key as `--set` takes it, e.g. data.synth.seed
    type: str
    default: str
    doc: str


@dataclass
class SectionDoc:
    key: str  # dotted section, e.g. data.synth
    doc: str
    fields: list[FieldDoc]


def _trailing_comments(source: str) -> dict[int, str]:
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {t.start[0]: t.string.lstrip("#").strip() for t in tokens if t.type == tokenize.COMMENT}


def _segmenter(source: str):
    """`node -> its source text`, splitting the source once (ast.get_source_segment splits it on every call)."""
    lines = [line.encode() for line in source.splitlines(keepends=True)]

    def segment(node: ast.AST) -> str:
        first, last = node.lineno - 1, node.end_lineno - 1  # ast's column offsets count UTF-8 bytes
        if first == last:
            return lines[first][node.col_offset:node.end_col_offset].decode()
        return b"".join([lines[first][node.col_offset:], *lines[first + 1:last], lines[last][:node.end_col_offset]]).decode()

    return segment


def _dataclasses(tree: ast.Module) -> dict[str, ast.ClassDef]:
    def is_dataclass(node: ast.ClassDef) -> bool:
        return any(getattr(d, "id", None) == "dataclass" for d in node.decorator_list)

    return {n.name: n for n in tree.body if isinstance(n, ast.ClassDef) and is_dataclass(n)}


def _section_class(annotation: ast.expr, classes: dict[str, ast.ClassDef]) -> str | None:
    """The dataclass a field's annotation names (`X` or `Optional[X]`), else None."""
    if isinstance(annotation, ast.Subscript) and getattr(annotation.value, "id", None) == "Optional":
        annotation = annotation.slice
    name = getattr(annotation, "id", None)
    return name if name in classes else None


def _default(segment, value: ast.expr | None) -> str:
    if value is None:
        return "required"
    if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "field":
        for kw in value.keywords:
            if kw.arg == "default_factory":
                factory = kw.value
                if isinstance(factory, ast.Lambda):
                    return segment(factory.body)
                return {"list": "[]", "dict": "{}"}.get(getattr(factory, "id", ""), f"{ast.unparse(factory)}()")
            if kw.arg == "default":
                return segment(kw.value)
    return segment(value)


def sections(source: str) -> list[SectionDoc]:
    """Every config section reachable from `Config`, depth first in field order."""
    tree = ast.parse(source)
    classes = _dataclasses(tree)
    comments = _trailing_comments(source)
    segment = _segmenter(source)
    out: list[SectionDoc] = []

    def walk(class_name: str, prefix: str) -> None:
        node = classes[class_name]
        section = SectionDoc(prefix, (ast.get_docstring(node) or "").strip(), [])
        out.append(section)
        children = []
        for stmt in node.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            key = f"{prefix}.{stmt.target.id}" if prefix else stmt.target.id
            sub = _section_class(stmt.annotation, classes)
            if sub is not None:
                children.append((sub, key))
                continue
            section.fields.append(
                FieldDoc(
                    key=key,
                    type=segment(stmt.annotation),
                    default=_default(segment, stmt.value),
                    doc=comments.get(stmt.end_lineno, ""),
                )
            )
        for sub, key in children:
            walk(sub, key)

    walk(ROOT, "")
    return out


def undocumented(source: str) -> list[str]:
    """Dotted keys of fields without a trailing comment and sections without a docstring."""
    missing = []
    for section in sections(source):
        if section.key and not section.doc:
            missing.append(f"section {section.key} (class docstring)")
        missing += [f.key for f in section.fields if not f.doc]
    return missing


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(source: str) -> str:
    parts = []
    for section in sections(source):
        if not section.key:
            continue
        parts.append(f"## `{section.key}`\n\n{section.doc}\n")
        if section.fields:
            parts.append("| key | type | default | description |\n|---|---|---|---|")
            for f in section.fields:
                parts.append(f"| `{f.key}` | `{_cell(f.type)}` | `{_cell(f.default)}` | {_cell(f.doc)} |")
            parts.append("")
    return "\n".join(parts)


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != "configuration.md":
        return markdown
    if MARKER not in markdown:
        from mkdocs.exceptions import PluginError

        raise PluginError(f"docs/configuration.md lost its {MARKER} line: the generated reference goes there")
    return markdown.replace(MARKER, render(CONFIG_PY.read_text()))


def on_serve(server, config, builder):
    server.watch(str(CONFIG_PY))
    return server
