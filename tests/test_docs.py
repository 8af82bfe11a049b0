"""README's claims that point into the suite stay true: every row of "When something goes wrong" names a
test that exists, so a renamed or deleted test cannot leave a row without its check."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def failure_table_rows() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## When something goes wrong", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| **")]


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
    assert not missing, f"README names tests that do not exist: {missing}"
