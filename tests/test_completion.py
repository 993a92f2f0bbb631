"""Shell completion: ``mergelang completion bash|zsh|fish`` and the ``__complete`` verb the
scripts call. bash completion is run for real (the generated function, with the variables bash
sets); zsh and fish scripts are run when those shells are installed, else parsed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mergelang.cli import main
from mergelang.cli.completion import script

BIN = Path(sys.executable).parent
RECIPE = 'model a = $MODEL_A\nmodel b = __MODEL_B__\nsave weighted_sum(a, b, alpha=$ALPHA) to "o"\n'


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with two recipes, a text file and a models folder (one model in a subfolder)."""
    (tmp_path / "mix.merge").write_text(RECIPE)
    (tmp_path / "other.merge").write_text('model a = "x"\n')
    (tmp_path / "notes.txt").write_text("")
    models = tmp_path / "models"
    (models / "anime").mkdir(parents=True)
    (models / "sd15-base.safetensors").write_bytes(b"")
    (models / "anime" / "sd15-anime.ckpt").write_bytes(b"")
    (models / "readme.txt").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MERGELANG_MODELS", raising=False)
    return tmp_path


def complete(capsys: pytest.CaptureFixture[str], shell: str, *words: str) -> list[str]:
    assert main(["__complete", shell, "--", *words]) == 0
    return capsys.readouterr().out.splitlines()


def test_verbs_and_options(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    verbs = complete(capsys, "zsh", "mergelang", "")
    assert verbs == sorted(verbs)
    assert {"check", "plan", "run", "fmt", "show", "completion"} <= set(verbs)
    assert not [v for v in verbs if v.startswith("_")]
    assert complete(capsys, "zsh", "mergelang", "ru") == ["run"]
    options = complete(capsys, "zsh", "mergelang", "run", "mix.merge", "--n")
    assert options == ["--nan", "--no-cache"]
    assert complete(capsys, "zsh", "mergelang", "run", "mix.merge", "--nan", "") == [
        "error",
        "keep",
    ]


def test_recipes_folders_and_files(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert complete(capsys, "zsh", "mergelang", "check", "") == [
        "mix.merge",
        "models/",
        "other.merge",
    ]
    assert complete(capsys, "zsh", "mergelang", "run", "--models-dir", "") == ["models/"]
    # fmt takes several recipes: each word after the first completes as one too.
    assert complete(capsys, "zsh", "mergelang", "fmt", "--write", "mix.merge", "o") == [
        "other.merge"
    ]
    assert complete(capsys, "zsh", "mergelang", "show", "models/") == [
        "models/anime/",
        "models/readme.txt",
        "models/sd15-base.safetensors",
    ]


def test_set_offers_the_recipes_variables_then_model_names(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    words = ["mergelang", "run", "mix.merge", "--models-dir", "models", "--set"]
    assert complete(capsys, "zsh", *words, "") == ["ALPHA=", "MODEL_A=", "MODEL_B="]
    assert complete(capsys, "zsh", *words, "MODEL_A=") == [
        "MODEL_A=anime/sd15-anime",
        "MODEL_A=sd15-base",
    ]
    assert complete(capsys, "zsh", *words, "MODEL_A=sd") == ["MODEL_A=sd15-base"]
    # The recipe may come after the options, and the models folder from the environment.
    os.environ["MERGELANG_MODELS"] = str(project / "models" / "anime")
    try:
        assert complete(capsys, "zsh", "mergelang", "plan", "--set", "MODEL_B=", "mix") == [
            "mix.merge"
        ]
        assert complete(capsys, "zsh", "mergelang", "plan", "mix.merge", "--set", "MODEL_B=") == [
            "MODEL_B=sd15-anime"
        ]
    finally:
        del os.environ["MERGELANG_MODELS"]


def test_a_recipe_with_a_syntax_error_still_gives_its_variables(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "broken.merge").write_text("model a = $FIRST\nsave ( to __SECOND__\n")
    found = complete(capsys, "zsh", "mergelang", "run", "broken.merge", "--set", "")
    assert found == ["FIRST=", "SECOND="]


def test_completion_prints_each_script(capsys: pytest.CaptureFixture[str]) -> None:
    for shell in ("bash", "zsh", "fish"):
        assert main(["completion", shell]) == 0
        assert capsys.readouterr().out == script(shell)


def _bash_complete(project: Path, line: str) -> list[str]:
    """Run the generated bash function the way bash's completion does, for ``line`` with the
    cursor at its end; the candidates bash would offer, and whether a space follows."""
    program = (
        f"{script('bash')}\n"
        "complete -p mergelang\n"
        f"COMP_LINE={_quote(line)}; COMP_POINT=${{#COMP_LINE}}\n"
        'read -ra COMP_WORDS <<< "$COMP_LINE"\n'
        "COMP_CWORD=${#COMP_WORDS[@]}\n"
        "_mergelang mergelang\n"
        "printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MERGELANG_MODELS", None)
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert lines[0] == "complete -F _mergelang mergelang"
    return [line for line in lines[1:] if line]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def test_bash_completes_for_real(project: Path) -> None:
    assert "run" in _bash_complete(project, "mergelang r")
    assert _bash_complete(project, "mergelang run mix") == ["mix.merge"]
    assert _bash_complete(project, "mergelang run mix.merge --models-dir mod") == ["models/"]
    # bash splits the word being completed at "=": the candidates are what follows it.
    line = "mergelang run mix.merge --models-dir models --set MODEL_A="
    assert _bash_complete(project, line) == ["anime/sd15-anime", "sd15-base"]
    assert _bash_complete(project, "mergelang run mix.merge --set MO") == [
        "MODEL_A=",
        "MODEL_B=",
    ]
    assert _bash_complete(project, "mergelang completion ") == ["bash", "fish", "zsh"]


def test_bash_escapes_what_it_inserts(project: Path) -> None:
    (project / "my mix.merge").write_text(RECIPE)
    assert _bash_complete(project, "mergelang check my") == ["my\\ mix.merge"]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_script_parses() -> None:
    subprocess.run(["zsh", "-n", "-c", script("zsh")], check=True, timeout=60)


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_completes_for_real(project: Path) -> None:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MERGELANG_MODELS", None)
    env["HOME"] = str(project)
    program = script("fish") + "\ncomplete -C 'mergelang run mix.merge --set M'\n"
    done = subprocess.run(
        ["fish", "--no-config", "-c", program],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == ["MODEL_A=", "MODEL_B="]
