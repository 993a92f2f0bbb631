"""docs/tutorial.md, run as written: every shell command of every ``bash`` block (after the
set-up section, which is the environment this test already runs in) is run in order in an
empty folder, each ``merge`` block headed ``# file: NAME`` is saved there as NAME when the
tutorial reaches it, and the ``text`` block after a command block is the output those
commands must print (stdout and stderr together).

In an expected output a ``...`` line stands for any number of lines. Figures that depend on
the machine are normalised on both sides: run times (``in 1.2 s``), the working memory and
worker count of ``plan``, the version number. Trailing spaces are ignored.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial.md"
SETUP_SECTION = "## 1. Set up"

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)
_NORMALISE = (
    (re.compile(r"\bin \d+(\.\d+)? s\b"), "in N s"),
    (re.compile(r"about \d+(\.\d+)? [KMGT]?B \(\d+ workers?"), "about M (N workers"),
    (re.compile(r"\bmergelang \d+\.\d+\.\d+\S*"), "mergelang VERSION"),
)


@dataclass(frozen=True)
class Block:
    section: str
    kind: str
    text: str


def blocks(markdown: str) -> list[Block]:
    """The fenced blocks of ``markdown`` in order, each with the ``##`` section it is in."""
    found: list[Block] = []
    for match in _FENCE.finditer(markdown):
        before = markdown[: match.start()]
        headings = re.findall(r"^## .*$", before, flags=re.M)
        found.append(Block(headings[-1] if headings else "", match.group(1), match.group(2)))
    return found


def normalise(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        for pattern, replacement in _NORMALISE:
            line = pattern.sub(replacement, line)
        lines.append(line.rstrip())
    while lines and not lines[-1]:
        lines.pop()
    return lines


def matches(expected: list[str], actual: list[str]) -> bool:
    """Whether ``actual`` is ``expected`` with each ``...`` line standing for any lines."""

    @functools.cache
    def match(i: int, j: int) -> bool:
        if i == len(expected):
            return j == len(actual)
        if expected[i] == "...":
            return any(match(i + 1, k) for k in range(j, len(actual) + 1))
        return j < len(actual) and expected[i] == actual[j] and match(i + 1, j + 1)

    return match(0, 0)


def test_the_ellipsis_matching() -> None:
    assert matches(["a", "...", "d"], ["a", "b", "c", "d"])
    assert matches(["a", "...", "b"], ["a", "b"])
    assert not matches(["a", "...", "d"], ["a", "b", "c"])
    assert not matches(["a"], ["a", "b"])
    assert normalise("wrote 2 outputs (3.8 MB) in 10.5 s  \n\n") == [
        "wrote 2 outputs (3.8 MB) in N s"
    ]


def test_every_tutorial_command_prints_what_the_tutorial_shows(tmp_path: Path) -> None:
    work = tmp_path / "tutorial"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERGELANG_")}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        MERGELANG_CACHE=str(tmp_path / "cache"),
        NO_COLOR="1",
        COLUMNS="100",
        PYTHONWARNINGS="default",
    )
    env.pop("FORCE_COLOR", None)
    found = blocks(TUTORIAL.read_text(encoding="utf-8"))
    commands_run = 0
    compared = 0
    output: str | None = None
    for block in found:
        if block.kind == "merge" and block.text.startswith("# file: "):
            name = block.text.splitlines()[0].removeprefix("# file: ").strip()
            (work / name).write_text(block.text, encoding="utf-8")
        elif block.kind == "bash" and block.section != SETUP_SECTION:
            output = ""
            for line in block.text.splitlines():
                command = line.split("  #")[0].strip()
                if not command or command.startswith("#"):
                    continue
                done = subprocess.run(
                    ["bash", "-c", command],
                    cwd=work,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    timeout=300,
                    check=False,
                )
                assert done.returncode == 0, f"{command}\n{done.stdout}"
                assert "Warning" not in done.stdout, f"{command} warns:\n{done.stdout}"
                output += done.stdout
                commands_run += 1
        elif block.kind == "text" and output is not None:
            expected, actual = normalise(block.text), normalise(output)
            assert matches(expected, actual), (
                f"{block.section}: the tutorial shows\n"
                + "\n".join(expected)
                + "\n\nbut the commands print\n"
                + "\n".join(actual)
            )
            compared += 1
            output = None
    assert commands_run >= 9
    assert compared >= 5
