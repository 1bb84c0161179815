"""The documentation's code runs: every Python block of every page, so the docs cannot rot.

Every page under ``docs/`` and ``README.md`` runs in a namespace of its own
(a module, as a reader's shell session would be), its blocks in order:

- A block that includes a file (``--8<-- "path"``, pymdownx.snippets) runs
  with the file's text in its place, as the page shows it.
- A block titled with a file name (```` ```python title="shop.py" ````, or a
  ``toml`` / ``ini`` block titled ``pyproject.toml``) is a file of the page's
  example project: all of them are written to a folder that is the current
  directory and on ``sys.path`` while the page runs, so that the page's blocks
  can import them. Each Python file is imported (tests and conftest.py
  aside); where the page has test files (``test_*.py``), pytest runs them in
  that folder, as the reader would, and they must pass.
- A ``text`` block titled ``output`` is what the Python block before it
  prints: the two must be the same.
- A ``console`` block's ``$`` lines are commands (``messagebus ...`` or
  ``python ...``), run in the project folder in their place among the
  Python blocks; each must exit with status 0, and the lines shown after it
  must be in its output (spaces aside: a table's columns may be wider).
- A block opts out only with an explicit marker, where running it is truly
  impossible: ``<!-- not-run: the reason -->`` on the line before it, or
  ``title="not run"``.
"""

from __future__ import annotations

import code
import contextlib
import importlib
import io
import os
import re
import shlex
import subprocess
import sys
import types
from pathlib import Path

import attrs
import pytest
import structlog
from structlog.testing import capture_logs

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted(
    [path.relative_to(ROOT).as_posix() for path in (ROOT / "docs").rglob("*.md")] + ["README.md"]
)

FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+-]*)(?P<attrs>[^\n]*)\n"
    r"(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
TITLE = re.compile(r"""\btitle=(?:"([^"]*)"|'([^']*)')""")
NOT_RUN_COMMENT = re.compile(r"^\s*<!--\s*not-run\b.*-->\s*$")
SNIPPET = re.compile(r"""^(?P<indent>[ \t]*)-{1,}8<-{1,}[ \t]+(["'])(?P<path>[^"']+)\2[ \t]*$""")
FILE_NAME = re.compile(r"^[\w.-]+(/[\w.-]+)*\.(py|toml|ini|cfg|txt|json)$")
PYTHON = {"python", "py", "python3"}


@attrs.frozen
class Block:
    """A fenced code block of a page."""

    page: str
    line: int
    lang: str
    title: str | None
    code: str
    not_run: bool

    @property
    def is_python(self) -> bool:
        return self.lang in PYTHON

    @property
    def file(self) -> str | None:
        """The file the block is, when its title names one."""
        return self.title if self.title and FILE_NAME.match(self.title) else None

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}" + (f" ({self.title})" if self.title else "")


def expand_snippets(code: str) -> str:
    """Put the text of included files in place, as pymdownx.snippets does (paths from the root)."""
    lines = []
    for line in code.splitlines(keepends=True):
        match = SNIPPET.match(line.rstrip("\n"))
        if match is None:
            lines.append(line)
            continue
        path, _, span = match["path"].partition(":")
        text = (ROOT / path).read_text(encoding="utf-8").splitlines(keepends=True)
        if span:
            start, _, end = span.partition(":")
            text = text[int(start or 1) - 1 : int(end) if end else None]
        lines.extend(match["indent"] + part for part in text)
    return "".join(lines)


def blocks_of(page: str, text: str) -> list[Block]:
    """The fenced code blocks of a page, in order."""
    blocks = []
    for match in FENCE.finditer(text):
        indent = match["indent"]
        body = "".join(
            line[len(indent) :] if line.startswith(indent) else line
            for line in match["body"].splitlines(keepends=True)
        )
        title_match = TITLE.search(match["attrs"])
        title = None if title_match is None else (title_match[1] or title_match[2])
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        blocks.append(
            Block(
                page=page,
                line=text.count("\n", 0, match.start()) + 1,
                lang=match["lang"].lower(),
                title=title,
                code=expand_snippets(body),
                not_run=title == "not run" or bool(NOT_RUN_COMMENT.match(before)),
            )
        )
    return blocks


def page_blocks(page: str) -> list[Block]:
    return blocks_of(page, (ROOT / page).read_text(encoding="utf-8"))


PAGES_WITH_PYTHON = [page for page in PAGES if any(b.is_python for b in page_blocks(page))]


def module_name(file: str) -> str | None:
    """The module a Python file of the example project is imported as (None for tests)."""
    path = Path(file)
    if path.suffix != ".py" or path.name == "conftest.py" or path.name.startswith("test_"):
        return None
    parts = path.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_test_file(file: str) -> bool:
    return Path(file).name.startswith("test_")


@pytest.mark.parametrize("page", PAGES_WITH_PYTHON)
def test_every_python_block_of_the_page_runs(
    page: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocks = page_blocks(page)
    files = [block for block in blocks if block.file and not block.not_run]
    has_tests = any(is_test_file(block.file or "") for block in files)
    # pytest runs the page's tests in the project folder: pytester's, then.
    pytester: pytest.Pytester | None = request.getfixturevalue("pytester") if has_tests else None
    project = tmp_path if pytester is None else pytester.path
    for block in files:
        path = project / (block.file or "")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block.code, encoding="utf-8")
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))

    name = "docs_" + re.sub(r"\W", "_", page.removesuffix(".md"))
    module = types.ModuleType(name)
    sys.modules[name] = module  # so that typing and cattrs can resolve the page's annotations
    try:
        printed = ""
        for number, block in enumerate(blocks, start=1):
            if block.is_python and not block.file and not block.not_run:
                code = compile(block.code, f"{block.where} (block {number})", "exec")
                # Log lines are kept out of what the block prints (capture_logs).
                with capture_logs(), contextlib.redirect_stdout(io.StringIO()) as stdout:
                    exec(code, module.__dict__)
                printed = stdout.getvalue()
            elif block.title == "output" and not block.is_python:
                assert block.code == printed, (
                    f"{block.where}: the block before it printed\n{printed}"
                )
            elif block.lang == "console" and not block.not_run:
                run_console(block)
        for block in files:
            imported = module_name(block.file or "")
            if imported is not None:
                importlib.import_module(imported)
    finally:
        dispose_engines(module.__dict__)
        del sys.modules[name]
        forget_modules_under(project)
        structlog.reset_defaults()  # a page may configure logging, as an application does

    if pytester is not None:
        result = pytester.runpytest("-p", "no:cacheprovider")
        outcomes = result.parseoutcomes()
        assert result.ret == 0, f"the tests of {page} failed:\n{result.stdout.str()}"
        assert outcomes.get("passed", 0) >= 1, result.stdout.str()


def commands_of(block: Block) -> list[tuple[str, list[str]]]:
    """The ``$`` commands of a console block, each with the lines shown after it."""
    commands: list[tuple[str, list[str]]] = []
    for line in block.code.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        elif line.strip():
            assert commands, f"{block.where}: output before any command: {line!r}"
            commands[-1][1].append(line)
    return commands


def run_console(block: Block) -> None:
    """Run a console block's commands as a reader would, in the current directory."""
    programs = {"messagebus": [sys.executable, "-m", "messagebus"], "python": [sys.executable]}
    for command, shown in commands_of(block):
        program, *arguments = shlex.split(command)
        assert program in programs, f"{block.where}: only {sorted(programs)} run: {command}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MESSAGEBUS", "PYTEST"))}
        result = subprocess.run(
            [*programs[program], *arguments],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
        output = result.stdout + result.stderr
        assert 0 == result.returncode, f"{block.where}: {command}\n{output}"
        flat = " ".join(output.split())
        missing = [line for line in shown if " ".join(line.split()) not in flat]
        assert [] == missing, f"{block.where}: {command} printed\n{output}"


def dispose_engines(namespace: dict[str, object]) -> None:
    """Close the database engines a page left open, as its application would on exit.

    Python 3.13 warns of a SQLite connection that is garbage-collected unclosed.
    """
    for value in list(namespace.values()):
        kind = type(value)
        if kind.__name__ == "Engine" and kind.__module__.startswith("sqlalchemy"):
            value.dispose()  # type: ignore[attr-defined]


def forget_modules_under(folder: Path) -> None:
    """Unload the example project's modules: another page may have its own ``shop``."""
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file is not None and Path(file).is_relative_to(folder):
            dispose_engines(vars(module))
            del sys.modules[name]


def test_the_pages_that_teach_have_python_blocks_that_run() -> None:
    expected = {
        "README.md",
        "docs/tutorial.md",
        "docs/how-to/embedding.md",
        "docs/how-to/retries.md",
        "docs/how-to/testing.md",
    }
    assert expected <= set(PAGES_WITH_PYTHON)


def test_a_block_opts_out_only_with_an_explicit_marker() -> None:
    text = (
        "```python\nx = 1\n```\n\n<!-- not-run: needs a mail server -->\n"
        '```python\nsend()\n```\n\n```python title="not run"\nsend()\n```\n'
        "<!-- a comment -->\n```python\ny = 2\n```\n"
    )

    assert [False, True, True, False] == [block.not_run for block in blocks_of("p.md", text)]


def test_blocks_in_lists_and_admonitions_are_found_and_dedented() -> None:
    text = '1. Run:\n\n    ```python title="shop.py"\n    if True:\n        x = 1\n    ```\n'

    [block] = blocks_of("p.md", text)

    assert ("shop.py", "if True:\n    x = 1\n") == (block.file, block.code)


def test_an_included_file_is_run_in_place_of_its_snippet_line(tmp_path: Path) -> None:
    [block] = blocks_of("p.md", '```python\n--8<-- "examples/quickstart.py"\n```\n')

    assert (ROOT / "examples/quickstart.py").read_text(encoding="utf-8") == block.code


def test_only_blocks_titled_with_a_file_name_are_files() -> None:
    titles = ["shop.py", "tests/test_shop.py", "pyproject.toml", "Shop", "not run", "a b.py"]
    text = "".join(f'```python title="{title}"\npass\n```\n' for title in titles)

    files = [block.file for block in blocks_of("p.md", text)]

    assert ["shop.py", "tests/test_shop.py", "pyproject.toml", None, None, None] == files


# -- the tutorial, pasted into a Python shell -----------------------------------------


class Shell(code.InteractiveConsole):
    """Python's interactive shell (the classic one), its errors kept rather than printed."""

    def __init__(self, namespace: dict[str, object]) -> None:
        super().__init__(namespace)
        self.errors: list[str] = []

    def write(self, data: str) -> None:
        self.errors.append(data)

    def paste(self, block: str) -> None:
        """Type a block in line by line, as a paste does, and press Enter after it."""
        for line in [*block.splitlines(), ""]:
            self.push(line)


@pytest.mark.parametrize("page", ["docs/tutorial.md", "docs/walkthrough.md"])
def test_the_page_s_blocks_run_pasted_into_a_python_shell_one_after_another(
    page: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The page says so: a blank line inside an indented block would end it there,
    # and what follows would be an IndentationError.
    assert "paste them into a Python shell" in (ROOT / page).read_text(encoding="utf-8")
    for block in page_blocks(page):
        if block.file and not block.not_run:
            (tmp_path / block.file).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / block.file).write_text(block.code, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    name = "docs_shell_" + re.sub(r"\W", "_", page.removesuffix(".md"))
    module = types.ModuleType(name)
    sys.modules[name] = module
    shell = Shell(module.__dict__)
    try:
        for block in page_blocks(page):
            if block.is_python and not block.file and not block.not_run:
                with capture_logs(), contextlib.redirect_stdout(io.StringIO()):
                    shell.paste(block.code)
                assert [] == shell.errors, f"{block.where}:\n{''.join(shell.errors)}"
    finally:
        dispose_engines(module.__dict__)
        del sys.modules[name]
        forget_modules_under(tmp_path)
        structlog.reset_defaults()


def test_the_web_how_to_leads_with_the_integration() -> None:
    blocks = [block for block in page_blocks("docs/how-to/embedding.md") if block.is_python]

    assert "from flask import Flask" in blocks[0].code
    assert "app = Flask(" in blocks[0].code
    # The domain comes last, as a file the integration imports.
    [domain] = [block for block in blocks if "class Product" in block.code]
    assert (blocks[-1], "shop.py") == (domain, domain.file)


# -- how the code reads on the site ---------------------------------------------------

#: Wider than this, a line ends behind a scroll bar on a laptop's screen.
COMMENT_WIDTH = 88
CODE_WIDTH = 100


def written_lines(page: str) -> list[tuple[int, str]]:
    """The lines of the page's code blocks as written there (included files aside)."""
    text = (ROOT / page).read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        first = text.count("\n", 0, match.start("body")) + 1
        for offset, line in enumerate(match["body"].splitlines()):
            if not SNIPPET.match(line):
                found.append((first + offset, line))
    return found


@pytest.mark.parametrize("page", PAGES)
def test_no_comment_in_the_docs_code_is_cut_off_by_scrolling(page: str) -> None:
    too_wide = [
        f"{page}:{number}"
        for number, line in written_lines(page)
        if len(line) > CODE_WIDTH or (len(line) > COMMENT_WIDTH and "#" in line)
    ]
    assert [] == too_wide


def test_the_site_wraps_long_code_lines_and_has_a_copy_button() -> None:
    import yaml  # mkdocs's own dependency

    class Loader(yaml.SafeLoader):
        """Reads the !!python/name: tags mkdocs resolves (the Mermaid fence) as None."""

    Loader.add_multi_constructor("tag:yaml.org,2002:python/name:", lambda *_: None)
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=Loader)
    css = (ROOT / "docs" / config["extra_css"][0]).read_text(encoding="utf-8")

    assert "content.code.copy" in config["theme"]["features"]
    assert ".md-typeset pre > code {\n  white-space: pre-wrap;" in css
