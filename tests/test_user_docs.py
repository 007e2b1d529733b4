"""User docs speak of what a thing is, never of the design documents it came from."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED = re.compile(r"\bseeds?\s*0\d\d\b|\bseeds/|\bseed document", re.I)


def test_readme_and_docs_never_name_the_seed_documents() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) > 5
    hits = [f"{p.name}:{n}: {line.strip()}" for p in pages
            for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if SEED.search(line)]
    assert not hits, "\n".join(hits)


def test_the_check_finds_seed_wording() -> None:
    assert SEED.search("seed 001's six decorators") and SEED.search("see seeds/000_x.txt")
    assert not SEED.search("a seeded random.Random") and not SEED.search("--seed 0")
