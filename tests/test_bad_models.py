"""Bad model files through the command line: ``mergelang run`` and ``mergelang check --inputs``
refuse each with exit status 1 and a message naming the file (and the recipe place where the
fault belongs to one), without a traceback, without hanging on devices and FIFOs, leaving no
output or temporary file behind and every input unchanged.

Each case runs the real command line, ``python -m mergelang ARGS``, as its own process. Starting
a Python that imports torch takes several seconds on a small machine, so the processes are
forked from one server that has imported mergelang and torch once and built the grammar's
parser (see :data:`SERVER`): each child gets its own working folder, environment and standard
streams, runs ``mergelang`` as ``__main__`` exactly as ``python -m`` does (an uncaught
exception prints a traceback and exits 1), and is killed if it runs past its time limit. One
test runs a case through ``[sys.executable, "-m", "mergelang", ...]`` as well and compares the
two.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import select
import stat
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from run_helpers import save_tensors, shared_models

from mergelang.errors import CheckpointError
from mergelang.io.locate import ModelLocator
from mergelang.io.readers import SafetensorsReader
from mergelang.io.writer import is_partial_name

TIME_LIMIT = 60.0
"""Seconds one command may take before it is killed and counted as hanging."""

KEY = "model.diffusion_model.input_blocks.4.0.in_layers.2.weight"
"""A U-Net key every merge computes: the one made wrong in the tensor-level cases."""

BAD_AT = "2:13"
"""Where the recipe declares the bad model: ``model bad = "..."`` (its path string)."""
CALL_AT = "3:6"
"""Where the recipe's merge call begins: ``save weighted_sum(...)``."""

OUTPUT = "out/merged.safetensors"

SERVER = r"""
import atexit, gc, json, os, runpy, signal, sys, time
import torch
import mergelang.api, mergelang.cli, mergelang.cli.console, mergelang.io.ckpt
import mergelang.run.executor
from mergelang.arch import architectures
from mergelang.arch.detect import detect
from mergelang.arch.layout import checkpoint_layout
from mergelang.lang.parser import parse

# Work every process does once, from constant data: importing the verbs, building the LALR
# tables of the grammar, the architectures' expected layouts.
mergelang.cli.build_parser()
parse('model a = "a.safetensors"\nsave a to "b.safetensors"\n')
for arch in architectures():
    detect(checkpoint_layout(arch, scale=0.05))
gc.freeze()  # the children's collections skip everything made so far

def child(request):
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, name in ((1, request["stdout"]), (2, request["stderr"])):
        opened = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    opened = os.open(os.devnull, os.O_RDONLY)
    os.dup2(opened, 0)
    os.close(opened)
    sys.argv = ["mergelang", *request["args"]]
    code = 0
    try:
        runpy.run_module("mergelang", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    # What the interpreter does at exit, less tearing down every module (a second with torch).
    gc.collect()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

def wait(pid, limit):
    deadline = time.monotonic() + limit
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), False
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None, True
        time.sleep(0.005)

for line in sys.stdin:
    request = json.loads(line)
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        child(request)
    code, timed_out = wait(pid, request["limit"])
    print(json.dumps({"returncode": code, "timed_out": timed_out}), flush=True)
"""
"""The fork server: reads one JSON request a line, answers one JSON line per command."""


@dataclass(frozen=True)
class CliResult:
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool


class CliServer:
    """Runs ``python -m mergelang ARGS`` in processes forked from :data:`SERVER`."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.count = 0
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def run(self, args: list[str], *, cwd: Path, env: dict[str, str]) -> CliResult:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.count += 1
        out = self.scratch / f"{self.count}.out"
        err = self.scratch / f"{self.count}.err"
        request = {
            "args": args,
            "cwd": str(cwd),
            "env": env,
            "stdout": str(out),
            "stderr": str(err),
            "limit": TIME_LIMIT,
        }
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        # The server's own start (importing torch) counts against the limit too.
        ready, _, _ = select.select([self.process.stdout], [], [], 4 * TIME_LIMIT)
        assert ready, "the command server did not answer"
        answer = json.loads(self.process.stdout.readline() or "null")
        assert answer is not None, "the command server died"
        return CliResult(
            answer["returncode"],
            out.read_text(encoding="utf-8", errors="replace"),
            err.read_text(encoding="utf-8", errors="replace"),
            answer["timed_out"],
        )

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliServer]:
    server = CliServer(tmp_path_factory.mktemp("cli-streams"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``a.safetensors`` (SD1) and ``xla.safetensors`` (SDXL), shared and never changed."""
    return shared_models(tmp_path_factory, ("a", "xla"))


def environment(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "MERGELANG_MODELS")}
    env.update(NO_COLOR="1", MERGELANG_CACHE=str(tmp_path / "cache"), COLUMNS="200")
    # torch warns when numpy is missing as it is imported; the forked commands import it early.
    env["PYTHONWARNINGS"] = "ignore:Failed to initialize NumPy"
    return env


# ---- building bad files ------------------------------------------------------------------------


def raw_safetensors(
    path: Path, header: Any, data: bytes = b"", *, length: int | None = None
) -> Path:
    """A safetensors file written by hand: ``header`` is JSON-able or raw bytes; ``length``
    replaces the true header length in the 8-byte prefix."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    size = len(text) if length is None else length
    path.write_bytes(struct.pack("<Q", size) + text + data)
    return path


def entry(dtype: str, shape: list[int], start: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}


def rewritten(
    source: Path,
    target: Path,
    *,
    drop: Callable[[str], bool] = lambda key: False,
    change: Callable[[dict[str, torch.Tensor]], None] | None = None,
) -> Path:
    """A copy of ``source`` without the keys ``drop`` selects, after ``change`` (in place)."""
    with SafetensorsReader(source) as reader:
        tensors = {k: reader.get(k).clone() for k in reader.keys() if not drop(k)}  # noqa: SIM118
    if change is not None:
        change(tensors)
    return save_tensors(target, tensors)


def with_value(value: float) -> Callable[[dict[str, torch.Tensor]], None]:
    def change(tensors: dict[str, torch.Tensor]) -> None:
        tensors[KEY].view(-1)[3] = value

    return change


def wider(tensors: dict[str, torch.Tensor]) -> None:
    shape = list(tensors[KEY].shape)
    shape[0] += 1
    tensors[KEY] = torch.zeros(shape, dtype=tensors[KEY].dtype)


class ExecutesCode:
    """A pickled object whose loading runs a shell command that creates ``MARKER``."""

    def __init__(self, folder: Path) -> None:
        self.marker = folder / "MARKER"

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch '{self.marker}'",))


class WritesFile:
    """A pickled object whose loading calls ``exec`` to write ``MARKER``."""

    def __init__(self, folder: Path) -> None:
        self.marker = folder / "MARKER"

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


Builder = Callable[[Path, Path, Path], Path]
"""(the test's folder, the good SD1 model, the good SDXL model) -> the bad model's path."""


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def truncated(folder: Path, good: Path, xl: Path) -> Path:
    data = good.read_bytes()
    return write(folder / "truncated.safetensors", data[: len(data) - 1000])


def length_past_end(folder: Path, good: Path, xl: Path) -> Path:
    return raw_safetensors(folder / "long.safetensors", {"w": entry("F32", [2], 0, 8)}, length=4096)


def directory(folder: Path, good: Path, xl: Path) -> Path:
    path = folder / "folder.safetensors"
    path.mkdir()
    return path


def fifo(folder: Path, good: Path, xl: Path) -> Path:
    path = folder / "pipe.safetensors"
    os.mkfifo(path)
    return path


def skip_unless_rights_apply(folder: Path) -> None:
    """Skip when this process reads files whatever their rights (root, CAP_DAC_OVERRIDE)."""
    probe = write(folder / "probe", b"x")
    probe.chmod(0)
    try:
        probe.read_bytes()
    except PermissionError:
        return
    finally:
        probe.unlink()
    pytest.skip("this process reads and searches everything whatever the rights")


def unreadable(folder: Path, good: Path, xl: Path) -> Path:
    skip_unless_rights_apply(folder)
    path = write(folder / "locked.safetensors", good.read_bytes())
    path.chmod(0)
    return path


def in_locked_folder(folder: Path, good: Path, xl: Path) -> Path:
    skip_unless_rights_apply(folder)
    locked = folder / "locked"
    locked.mkdir()
    path = write(locked / "model.safetensors", good.read_bytes())
    locked.chmod(0o600)  # no search right: the file cannot even be looked at
    return path


def pickle_file(name: str, payload: Callable[[Path], object]) -> Builder:
    def build(folder: Path, good: Path, xl: Path) -> Path:
        path = folder / name
        path.write_bytes(pickle.dumps({"state_dict": {"payload": payload(folder)}}, protocol=2))
        return path

    return build


def torch_saved_pickle(folder: Path, good: Path, xl: Path) -> Path:
    path = folder / "evil-zip.ckpt"
    torch.save({"state_dict": {KEY: torch.zeros(2), "payload": ExecutesCode(folder)}}, path)
    return path


@dataclass(frozen=True)
class Case:
    """One bad model: how to make it, and what the error must say.

    ``where`` is the recipe place the error is reported at (``None``: a fault found while
    reading tensors, reported at the file); ``says`` is a part of the message; ``names`` are
    other parts it must hold (model names, keys); ``file_named``: the message names the bad
    file's path (the run leaves out that of a pickle and of a file it cannot open, see
    :func:`test_run_names_the_file_and_the_mismatched_key`); ``checked``:
    ``check --inputs`` reaches the fault too (it reads headers only, never a tensor or a
    pickle)."""

    id: str
    build: Builder
    says: str
    where: str | None = BAD_AT
    names: tuple[str, ...] = ()
    file_named: bool = True
    checked: bool = True


def header_case(id: str, header: Any, data: bytes, says: str, **extra: Any) -> Case:
    def build(folder: Path, good: Path, xl: Path) -> Path:
        return raw_safetensors(folder / f"{id}.safetensors", header, data, **extra)

    return Case(id, build, says)


CASES = [
    Case("truncated", truncated, "the file is truncated"),
    Case("header-length-past-end", length_past_end, "the header length field says 4096 bytes"),
    Case(
        "header-length-zero",
        lambda folder, good, xl: write(folder / "zero.safetensors", bytes(8)),
        "the header is empty",
    ),
    header_case("invalid-json", b'{"w": {"dtype": "F32",', b"", "the header is not valid JSON"),
    header_case("json-not-object", [1, 2, 3], b"", "the header is JSON array, not an object"),
    header_case(
        "overlapping-offsets",
        {"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 4, 12)},
        bytes(12),
        "overlap those of 'a'",
    ),
    header_case(
        "offsets-out-of-bounds",
        {"a": entry("F32", [4], 0, 16)},
        bytes(8),
        "which holds only 8 bytes",
    ),
    header_case(
        "offsets-leave-a-gap",
        {"a": entry("F32", [1], 0, 4), "b": entry("F32", [1], 8, 12)},
        bytes(12),
        "belong to no tensor",
    ),
    header_case(
        "data-not-covered",
        {"a": entry("F32", [2], 0, 8)},
        bytes(16),
        "belong to no tensor",
    ),
    header_case(
        "size-mismatch",
        {"a": entry("F16", [3, 3], 0, 16)},
        bytes(16),
        "needs 18",
    ),
    header_case("unknown-dtype", {"a": entry("F24", [2], 0, 6)}, bytes(6), "unknown dtype 'F24'"),
    Case(
        "empty-file",
        lambda folder, good, xl: write(folder / "empty.safetensors", b""),
        "the file is empty",
    ),
    Case("directory", directory, "is a directory"),
    Case("dev-null", lambda folder, good, xl: Path("/dev/null"), "not a regular file"),
    Case("dev-zero", lambda folder, good, xl: Path("/dev/zero"), "not a regular file"),
    Case("fifo", fifo, "not a regular file"),
    Case("unreadable", unreadable, "permission denied", file_named=False),
    Case("in-a-locked-folder", in_locked_folder, "permission denied"),
    Case(
        "pickle-runs-os-system",
        pickle_file("evil.ckpt", ExecutesCode),
        "refuses to run code from a pickle",
        names=("(it asks for posix.system)",),
        file_named=False,
        checked=False,
    ),
    Case(
        "pickle-runs-exec",
        pickle_file("evil-exec.ckpt", WritesFile),
        "refuses to run code from a pickle",
        names=("(it asks for exec)",),
        file_named=False,
        checked=False,
    ),
    Case(
        "torch-zip-runs-os-system",
        torch_saved_pickle,
        "refuses to run code from a pickle",
        file_named=False,
        checked=False,
    ),
    Case(
        "ckpt-not-a-pickle",
        lambda folder, good, xl: write(folder / "junk.ckpt", b"not a checkpoint at all\n" * 40),
        "neither a zip archive nor a pickle",
        file_named=False,
        checked=False,
    ),
    Case(
        "ckpt-corrupt-pickle",
        lambda folder, good, xl: write(folder / "broken.ckpt", b"\x80\x02garbage"),
        "it holds the pickle operation GET (byte 103)",
        file_named=False,
        checked=False,
    ),
    Case(
        "architecture-mismatch",
        lambda folder, good, xl: xl,
        "weighted_sum mixes sd1 (good) and sdxl (bad)",
        where=CALL_AT,
        file_named=False,
    ),
    Case(
        "missing-keys",
        lambda folder, good, xl: rewritten(
            good, folder / "half.safetensors", drop=lambda k: ".output_blocks." in k
        ),
        "keys missing",
    ),
    Case(
        "shape-mismatch",
        lambda folder, good, xl: rewritten(good, folder / "wide.safetensors", change=wider),
        "tensor shapes differ",
        where=CALL_AT,
        names=("bad",),
        file_named=False,
        checked=False,
    ),
    Case(
        "nan",
        lambda folder, good, xl: rewritten(
            good, folder / "nan.safetensors", change=with_value(float("nan"))
        ),
        "NaN or infinite values",
        where=None,
        names=(KEY,),
        checked=False,
    ),
    Case(
        "inf",
        lambda folder, good, xl: rewritten(
            good, folder / "inf.safetensors", change=with_value(float("-inf"))
        ),
        "NaN or infinite values",
        where=None,
        names=(KEY,),
        checked=False,
    ),
    header_case(
        "key-not-utf8",
        b'{"w\xff\xfe": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}',
        b"x",
        "not valid UTF-8",
    ),
    header_case(
        "key-lone-surrogate",
        b'{"w\\ud800": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}',
        b"x",
        "not valid Unicode",
    ),
    header_case(
        "huge-header-length", {"a": entry("U8", [1], 0, 1)}, b"x", "over the 100 MB", length=2**63
    ),
]


def recipe_text(good: Path, bad: Path) -> str:
    return (
        f'model good = "{good}"\n'
        f'model bad = "{bad}"\n'
        f'save weighted_sum(good, bad, alpha=0.5) to "{OUTPUT}"\n'
    )


# ---- the common assertions ---------------------------------------------------------------------


def input_state(paths: list[Path]) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of every input: the digest of regular files that can be read, the
    mtime of what else can be looked at (folders, devices and FIFOs are never read)."""
    state = {}
    for path in paths:
        try:
            info = path.stat()
        except OSError:
            continue
        readable = stat.S_ISREG(info.st_mode) and os.access(path, os.R_OK)
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if readable else ""
        state[str(path)] = (digest, info.st_mtime_ns)
    return state


def message_lines(stderr: str) -> str:
    """stderr without the quoted recipe lines and carets (which always show the path)."""
    snippet = re.compile(r"^\s+\d*\s*\|")
    return "\n".join(line for line in stderr.splitlines() if not snippet.match(line))


def leftovers(folder: Path) -> list[str]:
    """Output files and temporary output files anywhere under ``folder``."""
    found = []
    for path in folder.rglob("*"):
        if is_partial_name(path.name) or path.name == Path(OUTPUT).name:
            found.append(str(path.relative_to(folder)))
    return sorted(found)


def assert_refused(
    result: CliResult,
    case: Case,
    *,
    recipe: Path,
    bad: Path,
    folder: Path,
    before: dict[str, tuple[str, int]],
    inputs: list[Path],
) -> None:
    """Exit 1 with a clean message at the right place; nothing written; inputs unchanged."""
    assert not result.timed_out, f"{case.id}: still running after {TIME_LIMIT} s"
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    message = message_lines(result.stderr)
    assert case.says in message, result.stderr
    if case.where is not None:
        headline = rf"^{re.escape(recipe.name)}:{case.where}: error: "
        assert re.search(headline, result.stderr, re.MULTILINE), result.stderr
    if case.file_named:
        assert str(bad) in message, result.stderr
    for part in case.names:
        assert part in message, result.stderr
    assert leftovers(folder) == []
    assert not (folder / "MARKER").exists(), "loading the pickle ran its code"
    assert input_state(inputs) == before


@dataclass(frozen=True)
class Setup:
    """A test's folder with its recipe, the bad model, and the inputs' state before the run."""

    folder: Path
    recipe: Path
    bad: Path
    inputs: list[Path]
    before: dict[str, tuple[str, int]]

    @classmethod
    def make(cls, case: Case, models: Path, folder: Path) -> Setup:
        good, xl = models / "a.safetensors", models / "xla.safetensors"
        bad = case.build(folder, good, xl)
        recipe = folder / "recipe.merge"
        recipe.write_text(recipe_text(good, bad), encoding="utf-8")
        inputs = [good, bad, recipe]
        return cls(folder, recipe, bad, inputs, input_state(inputs))

    @staticmethod
    def args(verb: str) -> list[str]:
        return ["run", "recipe.merge"] if verb == "run" else ["check", "--inputs", "recipe.merge"]

    def assert_refused(self, result: CliResult, case: Case) -> None:
        assert_refused(
            result,
            case,
            recipe=self.recipe,
            bad=self.bad,
            folder=self.folder,
            before=self.before,
            inputs=self.inputs,
        )


CASE = {case.id: case for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.parametrize("verb", ["run", "check"])
def test_a_bad_model_is_refused_cleanly(
    cli: CliServer, models: Path, tmp_path: Path, case: Case, verb: str
) -> None:
    if verb == "check" and not case.checked:
        pytest.skip("check --inputs reads headers only")
    setup = Setup.make(case, models, tmp_path)
    result = cli.run(setup.args(verb), cwd=tmp_path, env=environment(tmp_path))
    setup.assert_refused(result, case)


def test_the_command_server_runs_what_python_m_mergelang_runs(
    cli: CliServer, models: Path, tmp_path: Path
) -> None:
    case = CASE["truncated"]
    setup = Setup.make(case, models, tmp_path)
    env = environment(tmp_path)
    command = [sys.executable, "-m", "mergelang", *setup.args("run")]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=4 * TIME_LIMIT
    )
    real = CliResult(done.returncode, done.stdout, done.stderr, timed_out=False)
    setup.assert_refused(real, case)
    forked = cli.run(setup.args("run"), cwd=tmp_path, env=env)
    assert forked == real


@pytest.mark.parametrize(
    ("case_id", "part"),
    [("pickle-runs-exec", ""), ("unreadable", ""), ("shape-mismatch", KEY)],
)
def test_run_names_the_file_and_the_mismatched_key(
    cli: CliServer, models: Path, tmp_path: Path, case_id: str, part: str
) -> None:
    setup = Setup.make(CASE[case_id], models, tmp_path)
    result = cli.run(setup.args("run"), cwd=tmp_path, env=environment(tmp_path))
    assert result.returncode == 1
    assert (part or str(setup.bad)) in message_lines(result.stderr)


def test_a_folder_named_like_the_model_does_not_hide_its_file(tmp_path: Path) -> None:
    (tmp_path / "sd15").mkdir()
    (tmp_path / "sd15.safetensors").write_bytes(b"")
    assert ModelLocator().find("sd15", relative_to=tmp_path) == tmp_path / "sd15.safetensors"
    (tmp_path / "lone").mkdir()
    with pytest.raises(CheckpointError) as caught:
        ModelLocator().find("lone", relative_to=tmp_path)
    (diag,) = caught.value.diagnostics
    assert diag.code == "is-directory"
    assert diag.message == f"{tmp_path / 'lone'} is a directory, not a checkpoint file"
