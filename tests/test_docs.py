"""The Python examples in README.md and docs/*.md run, and give the output they show.

``pytest`` collects only ``tests/`` (``testpaths``), so ``--doctest-glob='*.md'`` alone never
reaches README.md or docs/. Here every Markdown file is run as a doctest (``>>>`` examples, with
NORMALIZE_WHITESPACE and ELLIPSIS), from a temporary working directory so that examples writing
files leave the repository clean.

Python blocks written as plain scripts (no ``>>>``) often need a setting (files, a cluster, a
shell command between blocks); the test that runs them is named in ``RUN_ELSEWHERE`` and must
mention the page. A new script block on any other page fails ``test_every_script_block_is_run``.
"""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
RUN_ELSEWHERE = {
    "docs/cli.md": "tests/test_cli.py",
    "docs/large-data.md": "tests/test_lazy.py",
}
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def python_blocks(path: Path) -> list[str]:
    return [body for lang, body in FENCE.findall(path.read_text()) if lang in ("python", "py")]


@pytest.mark.parametrize("path", PAGES, ids=name)
def test_doctests_pass(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    failed, attempted = doctest.testfile(
        str(path), module_relative=False, optionflags=FLAGS, verbose=False, encoding="utf-8"
    )
    assert failed == 0, f"{failed} of {attempted} examples in {name(path)} failed (output above)"
    if any(">>>" in block for block in python_blocks(path)):
        assert attempted > 0


@pytest.mark.parametrize("path", PAGES, ids=name)
def test_every_script_block_is_run(path):
    scripts = [block for block in python_blocks(path) if ">>>" not in block]
    if not scripts:
        return
    runner = RUN_ELSEWHERE.get(name(path))
    assert runner, (
        f"{name(path)} has {len(scripts)} Python block(s) without '>>>' that no test runs: write "
        "them as doctests, or run them from a test and list it in RUN_ELSEWHERE."
    )
    assert Path(path.name).name in (ROOT / runner).read_text(), f"{runner} never reads {path.name}"


def test_readme_shows_the_two_commands_and_a_python_example():
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text
    blocks = python_blocks(ROOT / "README.md")
    assert any(">>> from napari_kmeans import segment" in block for block in blocks)


def test_algorithm_page_exists_with_references():
    text = (ROOT / "docs" / "algorithm.md").read_text()
    for topic in ("Wang", "Gr", "Lloyd", "Arthur"):
        assert topic in text, f"docs/algorithm.md should cite {topic}"
