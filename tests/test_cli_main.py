from __future__ import annotations

import re

import pytest

from mergelang._version import __version__
from mergelang.cli import main

VERBS = [
    "check",
    "plan",
    "run",
    "fmt",
    "show",
    "methods",
    "convert",
    "page",
    "render",
    "cache",
    "completion",
]


def test_help_lists_every_verb_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    listed = re.findall(r"^    (\S+)", out, flags=re.M)
    assert listed == VERBS


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([verb, "--help"]) == 0
    assert f"usage: mergelang {verb}" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"mergelang {__version__}"


def test_unknown_verb_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_missing_verb_is_a_usage_error_that_lists_the_verbs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: mergelang [-h] [--version] VERB ...\n")
    for verb in ("check", "plan", "run", "fmt", "show", "methods", "convert"):
        assert f"\n    {verb} " in err
