"""The documentation's code runs: each page's ```python blocks, in order, as one script.

Every page under ``docs/`` that has ```python blocks (the tutorials, and the concepts page) is
run in a fresh interpreter, in a temporary folder, with the environment passed through
(``SERKET_DATA_DIR``, ``SERKET_CACHE_DIR``: the loaders find MNIST and the spoken digits there;
``OMP_NUM_THREADS`` defaults to 1), and must exit with status 0. What a page prints it also
checks, with ``assert`` in its own code. Blocks fenced as anything but ``python`` (```bash,
```text) are not run. Needs no mkdocs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
TIMEOUT_S = 600

_OPEN = re.compile(r"^```\s*([\w+-]*)[^`]*$")
_CLOSE = re.compile(r"^```\s*$")


def python_blocks(text: str) -> list[tuple[int, str]]:
    """The ```python blocks of a Markdown page, in order, as (first line number, code)."""
    blocks, current, start, fence = [], [], 0, None
    for number, line in enumerate(text.splitlines(), 1):
        if fence is None:
            opened = _OPEN.match(line)
            if opened:
                fence, start, current = opened.group(1).lower(), number + 1, []
        elif _CLOSE.match(line):
            if fence == "python":
                blocks.append((start, "\n".join(current)))
            fence = None
        else:
            current.append(line)
    if fence is not None:
        raise ValueError(f"a code block opened on line {start - 1} is never closed")
    return blocks


def page_script(page: Path) -> str:
    """One script of the page's python blocks, each marked with where it comes from."""
    name = page.relative_to(DOCS.parent)
    parts = [f"# {name}, line {start}\n{code}\n" for start, code in python_blocks(page.read_text())]
    return "\n".join(parts)


def _pages_with_code() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if python_blocks(p.read_text()))


TUTORIALS = sorted((DOCS / "tutorials").glob("*.md"))


def test_the_block_parser():
    text = "# t\n\n```python\na = 1\n```\n\n```bash\nrm -rf /\n```\n\n```python\nb = a + 1\n```\n"
    assert python_blocks(text) == [(4, "a = 1"), (12, "b = a + 1")]
    with pytest.raises(ValueError):
        python_blocks("```python\nunclosed\n")


def test_every_tutorial_has_code():
    assert len(TUTORIALS) >= 4
    for page in TUTORIALS:
        assert python_blocks(page.read_text()), f"{page.name} has no ```python blocks"


@pytest.mark.parametrize("page", _pages_with_code(), ids=lambda p: str(p.relative_to(DOCS)))
def test_page_runs(page, tmp_path):
    script = tmp_path / (page.stem.replace("-", "_") + ".py")
    script.write_text(page_script(page))
    env = dict(os.environ)
    # the pages import torch before serket (as readers would), so serket/__init__.py would set the
    # thread policy too late for their interpreter: it comes from the environment here
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # one thread: the pages' tensors are small, and on a shared machine more threads only contend
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MPLBACKEND", "Agg")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, (
        f"{page.relative_to(DOCS.parent)} exited with status {done.returncode}\n"
        f"--- stdout (tail)\n{done.stdout[-3000:]}\n--- stderr (tail)\n{done.stderr[-5000:]}")
