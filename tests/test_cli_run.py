"""``mergelang run``: outputs on disk, the summary on stderr (stdout stays empty), up-to-date
re-runs, --force, --dry-run, --quiet, --out-dir, --set, errors, the progress bar on a
terminal only. SIGINT and SIGTERM in a subprocess are in ``test_run_signals``."""

from __future__ import annotations

import hashlib
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mergelang.cli import main
from mergelang.testing import make_checkpoint

MIX = """\
model a = "models/a.safetensors"
model b = "models/b.safetensors"
save weighted_sum(a, b, alpha=0.3, base=0.3) to "out/mix.safetensors" as fp16
"""
OUTPUT = Path("out") / "mix.safetensors"
SGR = re.compile(r"\x1b\[[0-9;]*m")
COLOR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-9]|4[0-9]|9[0-7]|10[0-7])(?:;[0-9;]*)?m")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("run-models")
    make_checkpoint(folder / "a.safetensors", "sd1", seed=1)
    make_checkpoint(folder / "b.safetensors", "sd1", seed=2)
    return folder


@pytest.fixture
def project(tmp_path: Path, models: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A recipe folder with the models linked in, as the current folder."""
    (tmp_path / "models").symlink_to(models, target_is_directory=True)
    (tmp_path / "mix.merge").write_text(MIX, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(
    project: Path, capsys: pytest.CaptureFixture[str], *argv: str, recipe: str = "mix.merge"
) -> tuple[int, str, str]:
    status = main(["run", recipe, "--cache-dir", str(project / "cache"), *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def expected_mix(a: Path, b: Path, alpha: float) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * A + alpha * B`` in float32, then fp16; other keys are A's."""
    first, second = load_file(a), load_file(b)
    found = {}
    for key, value in first.items():
        if value.is_floating_point():
            mixed = (1 - alpha) * value.float() + alpha * second[key].float()
            found[key] = mixed.to(torch.float16)
        else:
            found[key] = value
    return found


def assert_same_tensors(path: Path, expected: dict[str, torch.Tensor]) -> None:
    actual = load_file(path)
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert actual[key].dtype == value.dtype, key
        assert torch.equal(actual[key], value), key


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- in process ------------------------------------------------------------------------------


def test_run_writes_the_weighted_sum(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = {name: digest(project / "models" / f"{name}.safetensors") for name in "ab"}
    status, out, err = run(project, capsys)
    assert status == 0
    assert out == ""
    assert re.fullmatch(
        r"wrote 1 output \(1\.9 MB\) in \d+\.\d s\n  written  out/mix\.safetensors\n", err
    )
    models = project / "models"
    expected = expected_mix(models / "a.safetensors", models / "b.safetensors", 0.3)
    assert_same_tensors(project / OUTPUT, expected)
    assert inputs == {name: digest(models / f"{name}.safetensors") for name in "ab"}


def test_second_run_is_up_to_date_even_with_force(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(project, capsys)[0] == 0
    first = (project / OUTPUT).stat()

    for argv in ([], ["--force"]):
        status, out, err = run(project, capsys, *argv)
        assert (status, out) == (0, "")
        assert err == "nothing to do: 1 output up to date\n  up to date  out/mix.safetensors\n"
        assert (project / OUTPUT).stat().st_ino == first.st_ino
    assert [p.name for p in (project / "out").iterdir()] == ["mix.safetensors"]


def test_dry_run_writes_nothing(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(project, capsys, "--dry-run", "--workers", "2")
    assert (status, out) == (0, "")
    assert re.fullmatch(
        r"dry run: would write 1 output \(1\.9 MB\)\n"
        r"  would write  out/mix\.safetensors\n"
        r"1 pass \(merge\); read 3\.8 MB, write 1\.9 MB; "
        r"working memory about \d+\.\d MB \(2 workers\)\n",
        err,
    )
    assert not (project / "out").exists()
    assert not (project / "cache" / "objects").exists()

    assert run(project, capsys, "--quiet")[0] == 0
    status, out, err = run(project, capsys, "--dry-run")
    assert err.splitlines()[:2] == [
        "dry run: would write 0 outputs (0 B); 1 up to date",
        "  up to date  out/mix.safetensors",
    ]


def test_quiet_prints_nothing(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(project, capsys, "--quiet") == (0, "", "")
    assert (project / OUTPUT).is_file()
    assert run(project, capsys, "--quiet") == (0, "", "")


def test_out_dir(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(project, capsys, "--out-dir", "elsewhere")
    assert status == 0
    assert (project / "elsewhere" / OUTPUT).is_file()
    assert not (project / "out").exists()
    assert "  written  elsewhere/out/mix.safetensors\n" in err


def test_set_binds_model_variables(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "vars.merge").write_text(
        'save weighted_sum($A, __B__, alpha=0.3, base=0.3) to "out/vars.safetensors" as fp16\n',
        encoding="utf-8",
    )
    # Swapped on purpose: the result is 0.7 * b + 0.3 * a.
    argv = ["--set", "A=models/b.safetensors", "--set", "__B__=models/a.safetensors"]
    status, _, err = run(project, capsys, *argv, recipe="vars.merge")
    assert status == 0, err
    models = project / "models"
    expected = expected_mix(models / "b.safetensors", models / "a.safetensors", 0.3)
    assert_same_tensors(project / "out" / "vars.safetensors", expected)


def test_summary_counts_cache_hits_stores_and_up_to_date(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    head = 'model a = "models/a.safetensors"\nmodel b = "models/b.safetensors"\n'
    head += "cache blend = weighted_sum(a, b, alpha=0.25)\n"
    one = 'save add_difference(a, blend, b, alpha=0.5) to "out/one.safetensors" as fp16\n'
    two = 'save add_difference(b, blend, a, alpha=0.5) to "out/two.safetensors" as fp16\n'
    (project / "one.merge").write_text(head + one, encoding="utf-8")
    (project / "both.merge").write_text(head + one + two, encoding="utf-8")

    status, _, err = run(project, capsys, recipe="one.merge")
    assert status == 0
    assert re.match(r"wrote 1 output \(1\.9 MB\) in \d+\.\d s; cache: 1 stored\n", err)
    status, _, err = run(project, capsys, recipe="both.merge")
    assert status == 0
    assert re.fullmatch(
        r"wrote 1 output \(1\.9 MB\) in \d+\.\d s; 1 up to date; cache: 1 hit\n"
        r"  up to date  out/one\.safetensors\n"
        r"  written     out/two\.safetensors\n",
        err,
    )


def test_no_cache_stores_nothing(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "cached.merge").write_text(
        'model a = "models/a.safetensors"\nmodel b = "models/b.safetensors"\n'
        "cache blend = weighted_sum(a, b, alpha=0.25)\n"
        'save blend to "out/blend.safetensors" as fp16\n',
        encoding="utf-8",
    )
    status, _, err = run(project, capsys, "--no-cache", recipe="cached.merge")
    assert status == 0
    assert "cache:" not in err
    assert (project / "out" / "blend.safetensors").is_file()
    assert not (project / "cache" / "objects").exists()


def test_missing_model_is_reported_at_its_recipe_place(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "missing.merge").write_text(
        'model a = "models/a.safetensors"\nmodel z = "models/zzz.safetensors"\n'
        'save weighted_sum(a, z) to "out/z.safetensors"\n',
        encoding="utf-8",
    )
    status, out, err = run(project, capsys, recipe="missing.merge")
    assert (status, out) == (1, "")
    assert err.startswith("missing.merge:2:11: error: model 'z': cannot find this model")
    assert not (project / "out").exists()


def test_existing_output_of_another_recipe_needs_force(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(project, capsys)[0] == 0
    before = digest(project / OUTPUT)
    (project / "other.merge").write_text(MIX.replace("0.3", "0.6"), encoding="utf-8")
    status, out, err = run(project, capsys, recipe="other.merge")
    assert (status, out) == (1, "")
    assert "other.merge:3:1: error: " in err
    assert str(project / OUTPUT) in err
    assert "made from other steps, inputs or options" in err
    assert "hint: pass --force to replace it" in err
    assert digest(project / OUTPUT) == before
    status, out, err = run(project, capsys, "--force", recipe="other.merge")
    assert (status, out) == (0, "")
    assert err.startswith("wrote 1 output (1.9 MB) in ")
    models = project / "models"
    expected = expected_mix(models / "a.safetensors", models / "b.safetensors", 0.6)
    assert_same_tensors(project / OUTPUT, expected)
    assert [p.name for p in (project / "out").iterdir()] == ["mix.safetensors"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_device_cuda_without_cuda_is_a_usage_error_before_planning(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "missing.merge").write_text(
        'model z = "models/zzz.safetensors"\nsave z to "out/z.safetensors"\n', encoding="utf-8"
    )
    status, out, err = run(project, capsys, "--device", "cuda", recipe="missing.merge")
    assert (status, out) == (2, "")
    assert "CUDA is not available" in err
    assert "cannot find" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "0"], "--workers: expected 1 to 256, not 0"),
        (["--set", "oops"], "--set oops: expected NAME=VALUE"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_usage_errors(
    project: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    status, out, err = run(project, capsys, *argv)
    assert (status, out) == (2, "")
    assert message in err
    assert not (project / "out").exists()


class TerminatedWhileReading:
    """A standard input whose reading is cut short by a SIGTERM to this process."""

    class buffer:  # read like sys.stdin.buffer
        @staticmethod
        def read(size: int = -1) -> bytes:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises in here
            return b""


def test_sigterm_in_process_gives_143_and_the_handler_is_restored(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(sys, "stdin", TerminatedWhileReading())
    assert main(["run", "-", "--quiet"]) == 143
    assert capsys.readouterr().err == "terminated\n"
    assert signal.getsignal(signal.SIGTERM) == before


def test_help_says_stdout_stays_empty(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Nothing is printed on standard output" in text


def test_reporter_draws_only_when_enabled() -> None:
    from rich.console import Console

    from mergelang.cli.progress import RichReporter

    for enabled in (False, True):
        screen = io.StringIO()
        console = Console(file=screen, force_terminal=True, width=100, color_system=None)
        reporter = RichReporter(console, enabled)
        reporter.waiting("planning")
        reporter.note("cache hit: [blend]")
        reporter.phase("merging", 2_000_000, "2 outputs")
        reporter.advance(1_500_000, "model.diffusion_model.out.2.weight")
        reporter.phase("merging", 0)
        reporter.finish(True)
        reporter.close()
        text = screen.getvalue()
        if enabled:
            assert "cache hit: [blend]\n" in text
            assert "merging" in text
        else:
            assert text == ""


# ---- terminals, colours, signals -----------------------------------------------------------------


def command(project: Path, *argv: str) -> list[str]:
    cache = str(project / "cache")
    return [sys.executable, "-m", "mergelang", "run", "mix.merge", "--cache-dir", cache, *argv]


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env.update(TERM="xterm-256color", COLUMNS="100", **extra)
    return env


def test_redirected_stderr_gets_only_the_summary(project: Path) -> None:
    done = subprocess.run(
        command(project, "--workers", "1"),
        cwd=project,
        capture_output=True,
        text=True,
        env=environment(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "\x1b" not in done.stderr
    assert re.fullmatch(
        r"wrote 1 output \(1\.9 MB\) in \d+\.\d s\n  written  out/mix\.safetensors\n",
        done.stderr,
    )


def run_on_a_terminal(
    project: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *,
    no_color: bool,
) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal; returns (status, stdout, terminal output)."""
    pty = pytest.importorskip("pty")
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def read_terminal() -> None:
        while True:
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # the terminal's other end closed (EIO)
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read_terminal)
    reader.start()
    terminal = open(slave, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    else:
        monkeypatch.delenv("NO_COLOR", raising=False)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(sys, "stderr", terminal)
            status = run(project, capsys, "--workers", "1")[0]
    finally:
        terminal.close()
        reader.join(timeout=60)
        os.close(master)
    return status, capsys.readouterr().out, b"".join(chunks).decode(errors="replace")


def test_terminal_gets_a_progress_bar(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, out, screen = run_on_a_terminal(project, capsys, monkeypatch, no_color=False)
    assert (status, out) == (0, "")
    assert "merging" in screen  # the bar's phase
    assert SGR.sub("", screen).count("mix.safetensors") == 1  # each output listed once
    assert " MB" in SGR.sub("", screen.split("wrote")[0])  # bytes done / total
    assert COLOR.search(screen)
    assert "wrote 1 output (1.9 MB)" in SGR.sub("", screen)


def test_no_color_on_a_terminal(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, out, screen = run_on_a_terminal(project, capsys, monkeypatch, no_color=True)
    assert (status, out) == (0, "")
    assert "merging" in screen
    assert not COLOR.search(screen)
    # NO_COLOR means no styling at all: no bold or dim either (no SGR sequence).
    assert not SGR.search(screen)
    assert "wrote 1 output (1.9 MB)" in SGR.sub("", screen)


def test_editing_the_recipe_and_running_again_remakes_its_output(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(project, capsys)[0] == 0
    (project / "mix.merge").write_text(MIX.replace("0.3", "0.6"), encoding="utf-8")

    status, out, err = run(project, capsys)

    assert (status, out) == (0, "")
    assert err.startswith("wrote 1 output (1.9 MB) in ")
    assert f"  written  {OUTPUT}  (the saved expression changed)\n" in err
    models = project / "models"
    expected = expected_mix(models / "a.safetensors", models / "b.safetensors", 0.6)
    assert_same_tensors(project / OUTPUT, expected)


def test_rebuild_remakes_an_up_to_date_output(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(project, capsys)[0] == 0
    status, out, err = run(project, capsys, "--rebuild")
    assert (status, out) == (0, "")
    assert f"  written  {OUTPUT}  (remade on request (--rebuild))\n" in err


def test_a_log_gets_a_progress_line_every_few_seconds() -> None:
    import io

    from rich.console import Console

    from mergelang.cli.progress import RichReporter, log_line

    log = io.StringIO()
    console = Console(file=log, width=200, color_system=None)
    with RichReporter(console, False, log_every=0.0) as reporter:
        reporter.phase("merging", 4_000_000)
        reporter.advance(1_000_000, "a.key")
        reporter.advance(1_000_000, "b.key")
    lines = log.getvalue().splitlines()
    assert len(lines) == 2
    assert re.fullmatch(
        r"merging: 2\.0 MB of 4\.0 MB \(50%\), [0-9.]+ [KMG]?B/s, about \d+ s left", lines[1]
    )
    assert log_line("merging", 1_200_000_000, 6_900_000_000, 5.7) == (
        "merging: 1.2 GB of 6.9 GB (17%), 210.5 MB/s, about 27 s left"
    )
    # Quiet or on a terminal, nothing of it.
    silent = io.StringIO()
    with RichReporter(Console(file=silent), False) as reporter:
        reporter.phase("merging", 10)
        reporter.advance(10)
    assert silent.getvalue() == ""
