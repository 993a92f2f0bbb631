"""Every fenced code block of the documentation is checked or run, so the docs cannot rot.

Documents: README.md, docs/*.md, docs/methods/*.md and docs/migrate/*.md.

- ```merge: parsed and checked (variables from a first line ``# run with: --set A=B ...``).
  When every model it reads is a demo model (``sd15-base``, ...), or its first line is
  ``# run``, it is also run against demo models made once per session.
  A first line ``# file: NAME.merge`` also writes the block into the document's working folder,
  so that later shell blocks of the same document can use it.
- ```python: run in a subprocess in the document's working folder.
- ```bash / ```sh / ```console: each ``mergelang ...`` line (``$`` prompt allowed) is run
  (through ``mergelang.cli.main``) in the document's working folder, in document order, and
  must exit 0. Other lines are skipped
  for a reason listed in :data:`SKIPPED_COMMANDS`.
- ```text, ```toml, ```yaml and untagged blocks are not code.

A document's working folder holds ``demo/models`` (the demo checkpoints), a copy of
``examples/`` and the ``# file:`` blocks; ``MERGELANG_CACHE`` points into a temporary folder.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

import mergelang
from mergelang.check.checked_recipe import CheckedRecipe
from mergelang.cli import main as cli_main
from mergelang.testing import DEMO_MODELS, demo_models

ROOT = Path(__file__).resolve().parent.parent
DEMO_SCALE = 1 / 200

NOT_CODE = frozenset({"", "text", "toml", "yaml"})
SHELL = frozenset({"bash", "sh", "console"})

COVERED_PYTHON = {
    "README.md": "run by tests/test_api.py::test_readme_python_example_runs",
    "docs/api.md": "run by tests/test_api.py::test_docs_api_example_runs",
    "docs/methods/README.md": "run by tests/test_docs_plugin.py",
}
"""Python blocks another test already runs (with assertions on their output)."""

CHECKED_MERGE = {
    "docs/language.md": "checked by tests/test_check.py (every merge block of the reference)",
}
"""Documents whose merge blocks another test already checks; runnable ones still run here."""

SKIPPED_COMMANDS: tuple[tuple[str, str], ...] = (
    (r"^bash scripts/", "sets up a virtual environment and installs packages"),
    (r"^(\S*/)?pip install", "installs packages"),
    (r"^(\S*/)?python(3)? -m pytest", "runs the whole test suite"),
    (r"^(\S*/)?python(3)? -m mergelang\.testing demo", "demo models are made once per session"),
    (r"^(source|\.) ", "activates a virtual environment"),
    (r"^(cd|ls|cat|export|mkdir) ", "shell housekeeping"),
)
"""Shell lines that are not run, each with why."""

_HAS_RENDER = all(
    importlib.util.find_spec(name) is not None
    for name in ("diffusers", "transformers", "PIL", "open_clip")
)
"""Whether ``mergelang render`` lines can run (the render extra is installed)."""


@dataclass(frozen=True)
class Block:
    document: str  # relative to the repository root
    line: int  # of the opening fence
    language: str
    text: str

    @property
    def ident(self) -> str:
        return f"{self.document}:{self.line}"


def _documents() -> list[Path]:
    found = [ROOT / "README.md"]
    for pattern in ("docs/*.md", "docs/methods/*.md", "docs/migrate/*.md"):
        found.extend(sorted(ROOT.glob(pattern)))
    return found


_FENCE = re.compile(r"^```\s*([\w+-]*)\s*$")


def _blocks(path: Path) -> list[Block]:
    document = path.relative_to(ROOT).as_posix()
    blocks: list[Block] = []
    opened: tuple[int, str] | None = None
    body: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = _FENCE.match(line)
        if opened is None:
            if match is not None:
                opened, body = (number, match.group(1)), []
        elif line.strip() == "```":
            blocks.append(Block(document, opened[0], opened[1], "\n".join(body) + "\n"))
            opened = None
        else:
            body.append(line)
    assert opened is None, f"{document}:{opened[0] if opened else 0}: unclosed code block"
    return blocks


ALL_BLOCKS = [block for path in _documents() for block in _blocks(path)]
MERGE_BLOCKS = [b for b in ALL_BLOCKS if b.language == "merge"]
PYTHON_BLOCKS = [b for b in ALL_BLOCKS if b.language == "python"]
SHELL_BLOCKS = [b for b in ALL_BLOCKS if b.language in SHELL]


def _ids(blocks: list[Block]) -> list[str]:
    return [b.ident for b in blocks]


# ---- the demo models and each document's working folder --------------------------------


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("demo-models")
    demo_models(folder, scale=DEMO_SCALE)
    return folder


class Workdirs:
    """One working folder per document; its shell blocks run once each, in order."""

    def __init__(self, root: Path, models: Path) -> None:
        self.root = root
        self.models = models
        self.folders: dict[str, Path] = {}
        self.done: set[str] = set()

    def folder(self, document: str) -> Path:
        if document not in self.folders:
            folder = self.root / re.sub(r"\W", "_", document)
            (folder / "demo").mkdir(parents=True)
            (folder / "demo" / "models").symlink_to(self.models, target_is_directory=True)
            shutil.copytree(ROOT / "examples", folder / "examples")
            for block in MERGE_BLOCKS:
                name = _file_name(block)
                if block.document == document and name is not None:
                    (folder / name).parent.mkdir(parents=True, exist_ok=True)
                    (folder / name).write_text(block.text, encoding="utf-8")
            self.folders[document] = folder
        return self.folders[document]

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "MERGELANG_CACHE": str(self.root / "cache"),
            "TMPDIR": str(self.root),
            "COLUMNS": "120",
        }

    def run_shell(self, block: Block) -> list[str]:
        """Run the block (after any earlier shell block of its document); the lines skipped."""
        for earlier in SHELL_BLOCKS:
            same = earlier.document == block.document
            if same and earlier.line < block.line and earlier.ident not in self.done:
                self.run_shell(earlier)
        skipped: list[str] = []
        folder = self.folder(block.document)
        for command in _commands(block.text):
            reason = _skip_reason(command)
            if reason is not None:
                skipped.append(f"{command!r}: {reason}")
                continue
            argv = shlex.split(command, comments=True)
            with _inside(folder, self.root / "cache"):
                status = cli_main(argv[1:])
            assert status == 0, f"{block.ident}: `{command}` exited {status}"
        self.done.add(block.ident)
        return skipped


@contextmanager
def _inside(folder: Path, cache: Path) -> Iterator[None]:
    """Run a command in ``folder`` with ``MERGELANG_CACHE`` set (in-process: no torch import
    per command, so the whole file stays fast)."""
    before, cached = Path.cwd(), os.environ.get("MERGELANG_CACHE")
    os.chdir(folder)
    os.environ["MERGELANG_CACHE"] = str(cache)
    try:
        yield
    finally:
        os.chdir(before)
        if cached is None:
            del os.environ["MERGELANG_CACHE"]
        else:
            os.environ["MERGELANG_CACHE"] = cached


@pytest.fixture(scope="session")
def workdirs(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> Workdirs:
    return Workdirs(tmp_path_factory.mktemp("docs"), demo_dir)


# ---- reading blocks ------------------------------------------------------------------------


def _first_line(block: Block) -> str:
    return block.text.lstrip("\n").split("\n", 1)[0].strip()


def _file_name(block: Block) -> str | None:
    match = re.fullmatch(r"#\s*file:\s*(\S+)", _first_line(block))
    return None if match is None else match.group(1)


def _variables(block: Block) -> dict[str, str]:
    line = _first_line(block)
    if not line.startswith("# run with:"):
        return {}
    words = shlex.split(line.removeprefix("# run with:"))
    pairs = [words[i + 1] for i, word in enumerate(words[:-1]) if word == "--set"]
    return dict(pair.split("=", 1) for pair in pairs)


def _commands(text: str) -> list[str]:
    """The shell lines of a block: continuations joined, prompts and blank lines dropped."""
    joined = text.replace("\\\n", " ")
    commands = []
    for raw in joined.splitlines():
        line = raw.strip()
        if line.startswith("$ "):
            line = line[2:].strip()
        if line and not line.startswith("#"):
            commands.append(line)
    return commands


def _skip_reason(command: str) -> str | None:
    if command.startswith("mergelang render ") and not _HAS_RENDER:
        return "needs the render extra (pip install 'mergelang[render]')"
    if command.startswith("mergelang "):
        return None
    for pattern, reason in SKIPPED_COMMANDS:
        if re.match(pattern, command):
            return reason
    raise AssertionError(
        f"`{command}` is neither a mergelang command nor a listed setup line: "
        "add it to SKIPPED_COMMANDS with a reason, or write it as a mergelang command"
    )


def _runnable(block: Block, checked: CheckedRecipe) -> bool:
    if _first_line(block) == "# run":
        return True
    if not checked.models:
        return False
    return all(Path(m.ref).stem in DEMO_MODELS for m in checked.models.values())


# ---- the tests -----------------------------------------------------------------------------


def test_every_block_has_a_known_language() -> None:
    known = NOT_CODE | SHELL | {"merge", "python"}
    unknown = [f"{b.ident} ({b.language})" for b in ALL_BLOCKS if b.language not in known]
    assert unknown == []
    assert len(MERGE_BLOCKS) > 20


@pytest.mark.parametrize("block", MERGE_BLOCKS, ids=_ids(MERGE_BLOCKS))
def test_merge_block(block: Block, demo_dir: Path, tmp_path: Path) -> None:
    recipe = mergelang.parse(block.text, path=block.ident)
    checked = mergelang.check(recipe, set=_variables(block))
    if not _runnable(block, checked):
        if block.document in CHECKED_MERGE:
            pytest.skip(CHECKED_MERGE[block.document])
        return
    result = mergelang.run(
        checked,
        models_dir=[demo_dir],
        out_dir=tmp_path / "out",
        cache_dir=tmp_path / "cache",
    )
    assert len(result.outputs) == len(checked.saves)
    for output in result.outputs:
        assert Path(output.path).is_file()


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=_ids(PYTHON_BLOCKS))
def test_python_block(block: Block, workdirs: Workdirs) -> None:
    if block.document in COVERED_PYTHON:
        pytest.skip(COVERED_PYTHON[block.document])
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", block.text],
        cwd=workdirs.folder(block.document),
        capture_output=True,
        text=True,
        check=False,
        env=workdirs.env(),
        timeout=120,
    )
    assert result.returncode == 0, f"{block.ident}\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=_ids(SHELL_BLOCKS))
def test_shell_block(block: Block, workdirs: Workdirs) -> None:
    if block.ident in workdirs.done:
        return
    skipped = workdirs.run_shell(block)
    if skipped and len(skipped) == len(_commands(block.text)):
        pytest.skip("; ".join(skipped))
