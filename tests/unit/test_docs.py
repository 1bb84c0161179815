"""The documentation's code runs: every Python block of these pages, in order."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["docs/tutorial.md", "README.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("page", PAGES)
def test_every_python_block_of_the_page_runs(page: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / page).read_text(encoding="utf-8")
    blocks = BLOCK.findall(text)
    assert blocks, f"{page} has no Python block"
    namespace: dict[str, object] = {"__name__": f"docs_{Path(page).stem}"}
    for number, block in enumerate(blocks, start=1):
        code = compile(block, f"{page} (block {number})", "exec")
        exec(code, namespace)
