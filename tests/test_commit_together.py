"""A run's outputs appear together or not at all, and a broken cache folder never fails a run.

The hostile situations are real: a file-size limit (``EFBIG``) and, where a tmpfs can be
mounted (as root), a full disk (``ENOSPC``) or a read-only one, hit while the second of two
outputs (a ``.ckpt``) is written; real signals sent during the rename phase.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from run_helpers import (
    declare,
    files_under,
    finish_cli,
    load,
    run_cli,
    shared_models,
    start_cli,
    write_recipe,
)

from mergelang.run.commit import signals_held

TWO_OUTPUTS = 'save weighted_sum(a, b, alpha=0.3) to "{out}/mix.safetensors" as fp16\n' + (
    'save weighted_sum(a, b, alpha=0.6) to "{out}/mix.ckpt" as fp32\n'
)
"""A safetensors output the size of an (fp16) input first, then a ``.ckpt`` twice as big."""


@contextlib.contextmanager
def tmpfs(folder: Path, *options: str) -> Iterator[Path]:
    """A tmpfs mounted on ``folder`` for the block (the test is skipped where none can be)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def model_size(models: Path) -> int:
    return (models / "a.safetensors").stat().st_size


def file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    return apply


def test_a_file_size_limit_on_the_second_output_leaves_neither(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    models = shared_models(tmp_path_factory, ("a", "b"))
    size = model_size(models)
    write_recipe(tmp_path, declare(models, "a", "b") + TWO_OUTPUTS.format(out="out"))
    # Room for the fp16 safetensors output, not for the fp32 .ckpt.
    proc = start_cli(tmp_path, "run", "recipe.merge", preexec_fn=file_size_limit(size * 3 // 2))
    status, out, err = finish_cli(proc)
    assert (status, out) == (1, ""), err
    assert err.splitlines()[0] == (
        f"{tmp_path / 'out' / 'mix.ckpt'}: error: the file is larger than allowed (file size "
        "limit) while writing the checkpoint; the partial file was removed"
    )
    assert files_under(tmp_path / "out") == []


def test_a_full_disk_on_the_second_output_says_so_and_leaves_neither(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    models = shared_models(tmp_path_factory, ("a", "b"))
    size = model_size(models)
    write_recipe(tmp_path, declare(models, "a", "b") + TWO_OUTPUTS.format(out="disk"))
    with tmpfs(tmp_path / "disk", f"size={size * 2}") as disk:
        status, out, err = run_cli(tmp_path, "run", "recipe.merge")
        assert (status, out) == (1, ""), err
        assert err.splitlines()[0] == (
            f"{disk / 'mix.ckpt'}: error: no space left on device while writing the "
            "checkpoint; the partial file was removed"
        )
        assert files_under(disk) == []


def test_a_broken_cache_folder_warns_once_and_the_run_goes_on(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    models = shared_models(tmp_path_factory, ("a", "b"))
    text = declare(models, "a", "b") + (
        "cache blend = weighted_sum(a, b, alpha=0.3)\n"
        "cache other = weighted_sum(a, b, alpha=0.7)\n"
        'save blend to "out/mix.safetensors"\n'
        'save other to "out/other.safetensors"\n'
    )
    reference = tmp_path / "reference"
    write_recipe(reference, text)
    status, _, err = run_cli(reference, "run", "recipe.merge", "--no-cache")
    assert status == 0, err
    expected = {n: load(reference / "out" / n) for n in ("mix.safetensors", "other.safetensors")}

    broken: dict[str, Path] = {}
    # A file where the cache folder should be, and one where its objects folder should be.
    broken["file"] = tmp_path / "file"
    write_recipe(broken["file"], text)
    (broken["file"] / "cache").write_bytes(b"in the way")
    broken["objects"] = tmp_path / "objects"
    write_recipe(broken["objects"], text)
    (broken["objects"] / "cache").mkdir()
    (broken["objects"] / "cache" / "objects").write_bytes(b"in the way")
    for name, folder in broken.items():
        status, _, err = run_cli(folder, "run", "recipe.merge")
        assert status == 0, (name, err)
        warnings = [line for line in err.splitlines() if "warning:" in line]
        assert len(warnings) == 1, (name, err)
        assert warnings[0].startswith(f"{folder / 'cache'}: warning: cache not written: ")
        assert warnings[0].endswith("; use --no-cache to silence")
        for output, tensors in expected.items():
            found = load(folder / "out" / output)
            assert found.keys() == tensors.keys()
            assert all(found[k].equal(tensors[k]) for k in tensors), (name, output)


@pytest.mark.parametrize("kind", ["full", "read-only"])
def test_a_full_or_read_only_cache_disk_warns_and_the_run_goes_on(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, kind: str
) -> None:
    models = shared_models(tmp_path_factory, ("a", "b"))
    text = declare(models, "a", "b") + (
        'cache blend = weighted_sum(a, b, alpha=0.3)\nsave blend to "out/mix.safetensors"\n'
    )
    write_recipe(tmp_path, text)
    options = ("size=64k",) if kind == "full" else ("ro", "size=1m")
    with tmpfs(tmp_path / "cache", *options) as cache:
        status, _, err = run_cli(tmp_path, "run", "recipe.merge")
        assert status == 0, err
        (warning,) = [line for line in err.splitlines() if "warning:" in line]
        reason = "no space left on device" if kind == "full" else "Read-only file system"
        assert warning.startswith(f"{cache}: warning: cache not written: "), warning
        assert reason in warning, warning
        assert warning.endswith("; use --no-cache to silence")
        assert [n for n in files_under(cache) if "objects" in n] == []
    assert (tmp_path / "out" / "mix.safetensors").is_file()


# ---- the rename phase holds signals ------------------------------------------------------------


def test_signals_arriving_in_the_rename_phase_take_effect_after_it() -> None:
    seen: list[str] = []
    previous = {
        signum: signal.signal(signum, lambda signum, frame: seen.append(f"handled {signum}"))
        for signum in (signal.SIGTERM, signal.SIGHUP)
    }
    try:
        with signals_held() as caught:
            os.kill(os.getpid(), signal.SIGTERM)
            # Sent from another thread too, as the system may deliver it to any thread.
            sender = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGHUP))
            sender.start()
            sender.join()
            for _ in range(1000):  # give the interpreter every chance to run a handler
                pass
            seen.append("renamed")
            assert sorted(caught) == sorted([signal.SIGTERM, signal.SIGHUP])
        assert seen == [
            "renamed",
            f"handled {int(signal.SIGTERM)}",
            f"handled {int(signal.SIGHUP)}",
        ]
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def test_sigint_in_the_rename_phase_is_raised_after_it() -> None:
    done: list[str] = []
    with pytest.raises(KeyboardInterrupt), signals_held():
        os.kill(os.getpid(), signal.SIGINT)
        done.append("every rename")
    assert done == ["every rename"]


def test_sigterm_while_the_last_output_is_written_gives_none_or_all(
    tmp_path: Path, big_models: Path
) -> None:
    """The signal is sent as soon as the ``.ckpt`` output's temporary file appears, which is
    after the safetensors output is complete: the outputs present are none or both."""
    write_recipe(tmp_path, declare(big_models, "a", "b") + TWO_OUTPUTS.format(out="out"))
    proc = start_cli(tmp_path, "run", "recipe.merge", "--workers", "1")
    out = tmp_path / "out"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if out.is_dir() and any(p.name.startswith(".mix.ckpt.") for p in out.iterdir()):
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.002)
    status, _, err = finish_cli(proc)
    made = sorted(n for n in files_under(out) if not n.startswith("."))
    assert made in ([], ["mix.ckpt", "mix.safetensors"]), (status, made, err)
    assert status in (0, 143), err
    if status == 143:
        assert err.strip().endswith("terminated")
    assert [n for n in files_under(out) if n.startswith(".")] == []
