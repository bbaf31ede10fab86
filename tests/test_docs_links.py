"""Relative links in the repository's Markdown documents point at files that exist (issue #22 item 7)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
_LINK = re.compile(r"\]\(([^)\s#]+)[^)]*\)|`(\.\./[^`]+\.md)`")


def test_relative_links_resolve():
    broken = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for match in _LINK.finditer(doc.read_text(encoding="utf-8")):
            target = match.group(1) or match.group(2)
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert not broken, broken
