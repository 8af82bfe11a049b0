"""The docs' claims that point into the suite stay true: every row of docs/failures.md ("When something goes
wrong") names a test that exists, so a renamed or deleted test cannot leave a row without its check, and every
message it quotes still contains text the package writes, so a reworded error cannot leave a stale quote. README
stays a page a newcomer reads (at most 250 lines) and every document it links exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def failure_table_rows() -> list[str]:
    text = (ROOT / "docs" / "failures.md").read_text()
    return [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| **")]


def test_every_failure_row_names_a_test_that_exists():
    rows = failure_table_rows()[2:]  # after the header and its rule
    assert len(rows) >= 30
    missing = []
    for row in rows:
        refs = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", row)
        assert refs, f"a failure row without its test: {row[:80]}"
        for path, name in refs:
            source = (ROOT / path).read_text() if (ROOT / path).is_file() else ""
            if not re.search(rf"^def {name}\(", source, re.MULTILINE):
                missing.append(f"{path}::{name}")
    assert not missing, f"docs/failures.md names tests that do not exist: {missing}"


def _message_fragments(min_len: int = 12) -> set[str]:
    """The literal text of every string the package builds (plain, f-string parts, %-format parts), cut at
    placeholders, line breaks and clause ends: what a message quoted from a run must contain some piece of."""
    pieces: set[str] = set()
    for path in (ROOT / "agelatent").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                texts = [node.value]
            elif isinstance(node, ast.JoinedStr):
                texts = [v.value for v in node.values if isinstance(v, ast.Constant)]
            else:
                continue
            for text in texts:
                coarse = re.split(r"\s*\n\s*|%[sdr]", text)  # at placeholders and lines, then also at clauses
                for piece in coarse + [c for part in coarse for c in re.split(r"[;:.]\s+", part)]:
                    piece = piece.strip(" :;,.()")
                    if len(piece) >= min_len:
                        pieces.add(piece)
    return pieces


def test_every_quoted_failure_message_is_text_the_code_writes():
    fragments = _message_fragments()
    quoted = 0
    stale = []
    for row in failure_table_rows()[2:]:
        message_column = re.split(r"(?<!\\)\|", row)[2]
        spans = re.findall(r"``(.+?)``|`([^`]+)`", message_column)
        message = " ".join(
            m for a, b in spans if " " in (m := a or b) and len(m) >= 20
        )  # not a path or value
        if not message:
            continue  # the row describes an outcome (a FAILED.txt, an exit status), quotes no message
        quoted += 1
        if not any(fragment in message for fragment in fragments):
            stale.append(message[:100])
    assert quoted >= 100
    assert not stale, f"docs/failures.md quotes messages the code no longer writes: {stale}"


def test_the_readme_is_short_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    assert "docs/failures.md" in links and "docs/extending.md" in links
    assert [link for link in links if not link.startswith("http") and not (ROOT / link).exists()] == []
