"""Keep benchmarks/RESULTS.md as sections, each rewritten only by the script that owns it."""

from __future__ import annotations

import re
from pathlib import Path

HEADER = (
    "# nerdistil benchmark results\n\n"
    "Every table below is written by the script named above it; rerun that command to reproduce it.\n"
)


def update_section(path: str | Path, key: str, title: str, body: str) -> None:
    """Replace (or append) the section between ``<!-- key:start -->`` and ``<!-- key:end -->``."""
    path = Path(path)
    text = path.read_text() if path.is_file() else HEADER
    block = f"<!-- {key}:start -->\n## {title}\n\n{body.rstrip()}\n<!-- {key}:end -->"
    pattern = re.compile(rf"<!-- {re.escape(key)}:start -->.*?<!-- {re.escape(key)}:end -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
