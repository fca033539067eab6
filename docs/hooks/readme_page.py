"""MkDocs hook: the site's front page is README.md, so the front page is written once.

docs/index.md is a placeholder that this hook replaces with the README. The README links into the site as
`docs/<page>.md` (paths that work on GitHub); on the site those pages sit beside index.md, so the prefix is
dropped here and the strict build still checks every link.
"""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
_DOCS_LINK = re.compile(r"\]\(docs/")


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != "index.md":
        return markdown
    return _DOCS_LINK.sub("](", README.read_text())


def on_serve(server, config, builder):
    server.watch(str(README))
    return server
