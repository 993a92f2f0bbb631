"""Inputs hashed before the merge (an output that is not plain safetensors, so its header
cannot be rewritten once the hashes are known) are reported as a ``hashing`` phase: the bytes
of every file read, in the progress bar and in the log lines of a run whose stderr is not a
terminal."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

import mergelang
from mergelang.cli.progress import RichReporter
from mergelang.testing import make_checkpoint

SCALE = 1 / 64


class Recorder:
    """A reporter that keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int, str]] = []

    def phase(self, name: str, total: int, detail: str = "") -> None:
        self.calls.append(("phase", name, total, detail))

    def advance(self, done: int, detail: str = "") -> None:
        self.calls.append(("advance", "", done, detail))

    def note(self, text: str) -> None:
        self.calls.append(("note", text, 0, ""))

    def finish(self, ok: bool) -> None:
        self.calls.append(("finish", str(ok), 0, ""))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hashing")
    make_checkpoint(folder / "a.safetensors", "sd1", scale=SCALE, seed=1)
    make_checkpoint(folder / "b.safetensors", "sd1", scale=SCALE, seed=2)
    return folder


def _recipe(folder: Path, target: str) -> Path:
    path = folder / "r.merge"
    path.write_text(
        f'model a = "{folder_of(folder)}/a.safetensors"\n'
        f'model b = "{folder_of(folder)}/b.safetensors"\n'
        f'save weighted_sum(a, b, alpha=0.5) to "{target}"\n'
    )
    return path


def folder_of(folder: Path) -> str:
    return folder.as_posix()


def _hashing_calls(calls: list[tuple[str, str, int, str]]) -> list[tuple[str, str, int, str]]:
    """The calls from the ``hashing`` phase up to the next phase."""
    start = next(i for i, c in enumerate(calls) if c[:2] == ("phase", "hashing"))
    end = next((i for i in range(start + 1, len(calls)) if calls[i][0] == "phase"), len(calls))
    return calls[start:end]


def test_hashing_before_the_merge_is_a_phase_with_every_byte(models: Path, tmp_path: Path) -> None:
    recipe = _recipe(models, str(tmp_path / "out.ckpt"))
    recorder = Recorder()
    result = mergelang.run(recipe, cache_dir=tmp_path / "cache", reporter=recorder)
    assert [o.status for o in result.outputs] == ["written"]
    sizes = {n: (models / n).stat().st_size for n in ("a.safetensors", "b.safetensors")}
    hashing = _hashing_calls(recorder.calls)
    assert hashing[0] == ("phase", "hashing", sum(sizes.values()), "")
    done: dict[str, int] = {}
    for kind, _, count, detail in hashing[1:]:
        assert kind == "advance"
        done[detail] = done.get(detail, 0) + count
    assert done == sizes
    # The merge comes after, as a phase of its own; a second run hashes nothing.
    names = [c[1] for c in recorder.calls if c[0] == "phase"]
    assert names[0] == "hashing" and "merging" in names[1:]
    again = Recorder()
    (tmp_path / "out.ckpt").unlink()
    mergelang.run(recipe, cache_dir=tmp_path / "cache", reporter=again)
    assert "hashing" not in [c[1] for c in again.calls if c[0] == "phase"]


def test_a_safetensors_output_hashes_during_the_merge_not_before(
    models: Path, tmp_path: Path
) -> None:
    recipe = _recipe(models, str(tmp_path / "out.safetensors"))
    recorder = Recorder()
    mergelang.run(recipe, cache_dir=tmp_path / "cache", reporter=recorder)
    names = [c[1] for c in recorder.calls if c[0] == "phase"]
    assert "hashing" not in names[:1]


def test_the_log_lines_show_the_hashing_bytes(models: Path, tmp_path: Path) -> None:
    recipe = _recipe(models, str(tmp_path / "out.ckpt"))
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=False, width=200)
    with RichReporter(console, enabled=False, log_every=0.0) as reporter:
        mergelang.run(recipe, cache_dir=tmp_path / "cache", reporter=reporter)
    lines = stream.getvalue().splitlines()
    hashing = [line for line in lines if line.startswith("hashing: ")]
    assert hashing, lines
    total = sum((models / n).stat().st_size for n in ("a.safetensors", "b.safetensors"))
    from mergelang.plan.text import human_bytes

    assert hashing[-1].startswith(f"hashing: {human_bytes(total)} of {human_bytes(total)} (100%)")


def test_the_bar_shows_the_hashing_phase_on_a_terminal(models: Path, tmp_path: Path) -> None:
    recipe = _recipe(models, str(tmp_path / "out.ckpt"))
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=120)
    recorder = Recorder()

    class Both(RichReporter):
        def phase(self, name: str, total: int, detail: str = "") -> None:
            super().phase(name, total, detail)
            if name == "hashing":
                assert self._progress is not None
                (task,) = self._progress.tasks
                recorder.calls.append(("phase", task.description, int(task.total or 0), ""))

    with Both(console, enabled=True) as reporter:
        mergelang.run(recipe, cache_dir=tmp_path / "cache", reporter=reporter)
    total = sum((models / n).stat().st_size for n in ("a.safetensors", "b.safetensors"))
    assert recorder.calls == [("phase", "hashing", total, "")]


def test_plan_with_hashing_reports_the_hashing_phase(models: Path, tmp_path: Path) -> None:
    recipe = _recipe(models, str(tmp_path / "out.safetensors"))
    recorder = Recorder()
    made = mergelang.plan(recipe, cache_dir=tmp_path / "cache", hash_inputs=True, reporter=recorder)
    made.close()
    total = sum((models / n).stat().st_size for n in ("a.safetensors", "b.safetensors"))
    hashing = _hashing_calls(recorder.calls)
    assert hashing[0] == ("phase", "hashing", total, "")
    assert sum(c[2] for c in hashing[1:]) == total


def test_cli_plan_hash_with_stderr_not_a_terminal_prints_no_bar(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mergelang.cli import main

    recipe = _recipe(models, str(tmp_path / "out.safetensors"))
    code = main(["plan", "--hash", "--cache-dir", str(tmp_path / "cache"), str(recipe)])
    captured = capsys.readouterr()
    assert code == 0
    assert "hashed" in captured.out
    assert captured.err == ""
