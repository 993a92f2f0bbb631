"""Depth and breadth a recipe gives: a chain of 1,500 steps, thousands of saves, hundreds of
outputs under a low descriptor limit (issue 14, items 15 and 16).

The chain runs on :mod:`tiny_arch`'s four-key model, so its cost is per step, not per key.
Its steps alternate a doubling and a method that halves (``weighted_sum(x, x, alpha=0.5) *
0.5``): powers of two are exact in float32, so after an even number of steps the value is
the input's, bit for bit, and the final ``s * 0.75 + b * 0.25`` is a closed form the test
computes on its own.
"""

from __future__ import annotations

import gc
import importlib
import json
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from run_helpers import load
from tiny_arch import tiny_arch, tiny_models

from mergelang.api import load as load_recipe
from mergelang.api import plan, run
from mergelang.check.saves import MAX_OUTPUTS
from mergelang.errors import RecipeError
from mergelang.io.sinks import SinkTarget
from mergelang.lang.formatter import format_text
from mergelang.plan.graph import content_keys, walk
from mergelang.plan.plan import output_bookkeeping
from mergelang.plan.staleness import STEPS_KEY
from mergelang.plan.text import render_plan
from mergelang.testing import make_checkpoint

__all__ = ["tiny_arch"]  # the fixture, used by name

CHAIN = 1500
SHALLOW = 400
"""A recursion limit far below the chain's depth: what walks the chain step by step
recursively needs at least one frame a step."""


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MERGELANG_CACHE", str(tmp_path / "cache"))


def chain_recipe(length: int) -> str:
    lines = ['model a = "a.safetensors"', 'model b = "b.safetensors"', "s0 = a"]
    for i in range(1, length + 1):
        if i % 2:
            lines.append(f"s{i} = s{i - 1} * 2")
        else:
            lines.append(f"s{i} = weighted_sum(s{i - 1}, s{i - 1}, alpha=0.5) * 0.5")
    lines += [f"mix = s{length} * 0.75 + b * 0.25", 'save mix to "chain.safetensors"']
    return "\n".join(lines) + "\n"


@contextmanager
def shallow_stack() -> Iterator[None]:
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(SHALLOW)
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


@pytest.fixture
def chain(tmp_path: Path, tiny_arch: object) -> Path:
    tiny_models(tmp_path, "a", "b")
    recipe = tmp_path / "chain.merge"
    recipe.write_text(chain_recipe(CHAIN), encoding="utf-8")
    return recipe


def test_a_1500_step_chain_runs_and_equals_its_closed_form(tmp_path: Path, chain: Path) -> None:
    run(chain)
    out = load(tmp_path / "chain.safetensors")
    a, b = load(tmp_path / "a.safetensors"), load(tmp_path / "b.safetensors")
    assert set(out) == set(a)
    for key, tensor in out.items():
        expected = (a[key].float() * 0.75 + b[key].float() * 0.25).to(a[key].dtype)
        assert tensor.dtype == a[key].dtype
        assert torch.equal(tensor, expected), key
    # Every step's content address is recorded, the chain's included.
    steps = json.loads(read_metadata(tmp_path / "chain.safetensors")[STEPS_KEY])
    assert {f"s{i}" for i in range(1, CHAIN + 1)} | {"mix"} <= set(steps)
    assert len({steps[f"s{i}"] for i in range(1, CHAIN + 1)}) == CHAIN


def read_metadata(path: Path) -> dict[str, str]:
    from mergelang.io.safetensors_header import read_safetensors_header

    return dict(read_safetensors_header(path).metadata)


def test_check_fmt_plan_and_addresses_of_the_chain_never_recurse_along_it(chain: Path) -> None:
    text = chain.read_text(encoding="utf-8")
    with shallow_stack():
        assert format_text(text) == text
        checked = load_recipe(chain)
        assert len(checked.model_steps) == CHAIN + 2
        made = plan(checked)
        rendered = render_plan(made)
        roots = made.roots()
        # Content addresses of every node, from made-up input hashes.
        loads = [n for n in walk(roots) if not n.children]
        keys = content_keys(roots, {id(n): f"{i:064x}" for i, n in enumerate(loads)})
    made.close()
    assert f"s{CHAIN}" in rendered
    nodes = walk(roots)
    # a and b; a node per doubling, two per halving (the method and its * 0.5); mix.
    assert len(nodes) == 2 + CHAIN // 2 * 3 + 1
    assert None not in keys.values() and len(set(keys.values())) == len(nodes)


# -- saves against the output limit ---------------------------------------------------------

LIMIT = 100
"""The output limit the tests set (:data:`MAX_OUTPUTS` saves take a minute to check)."""


@pytest.fixture
def low_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    saves = importlib.import_module("mergelang.check.saves")
    assert MAX_OUTPUTS == 10_000
    monkeypatch.setattr(saves, "MAX_OUTPUTS", LIMIT)
    return LIMIT


def limit_errors(recipe: Path) -> list[tuple[int, int, str]]:
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe)
    found = caught.value.diagnostics
    assert [d.code for d in found if d.severity == "error"] == ["too-many-outputs"]
    return [(d.span.line, d.span.column, d.message) for d in found]


def test_plain_saves_beyond_the_output_limit_are_refused_at_the_first_one_beyond(
    tmp_path: Path, low_limit: int
) -> None:
    lines = ['model a = "a.safetensors"']
    lines += [f'save a to "o{i}.safetensors"' for i in range(low_limit + 5)]
    recipe = tmp_path / "many.merge"
    recipe.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # Line 1 declares the model: the first save beyond the limit is on line limit + 2.
    assert limit_errors(recipe) == [
        (
            low_limit + 2,
            1,
            f"the recipe saves more than {low_limit} outputs; this is the first save beyond "
            "the limit",
        )
    ]
    lines.pop()
    recipe.write_text("\n".join(lines[: low_limit + 1]) + "\n", encoding="utf-8")
    assert len(load_recipe(recipe).saves) == low_limit


def test_saves_in_loops_and_plain_saves_count_together(tmp_path: Path, low_limit: int) -> None:
    plain = 60
    lines = ['model a = "a.safetensors"', 'model b = "b.safetensors"']
    lines += [f'save a to "p{i}.safetensors"' for i in range(plain)]
    lines += ["for x in 1..50:", '    save weighted_sum(a, b, alpha=0.5) to "l{x}.safetensors"']
    recipe = tmp_path / "loops.merge"
    recipe.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # Once, at the save in the loop (its 41st iteration is the 101st save).
    assert [(line, column) for line, column, _ in limit_errors(recipe)] == [(plain + 4, 5)]


# -- outputs under a low descriptor limit ---------------------------------------------------

MANY = 200
FD_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    sys.path.insert(0, sys.argv[2])
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    from mergelang.arch import register_architecture
    from tiny_arch import TINY
    register_architecture(TINY)
    from mergelang.api import run
    result = run(sys.argv[1])
    print(len(result.written))
    """
)


def test_200_outputs_are_written_under_a_limit_of_64_descriptors(
    tmp_path: Path, tiny_arch: object
) -> None:
    tiny_models(tmp_path, "a", "b")
    lines = ['model a = "a.safetensors"', 'model b = "b.safetensors"']
    lines += [
        f'save weighted_sum(a, b, alpha={i / MANY}) to "out/o{i}.safetensors"' for i in range(MANY)
    ]
    recipe = tmp_path / "many.merge"
    recipe.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tests = Path(__file__).parent
    done = subprocess.run(
        [sys.executable, "-c", FD_SCRIPT, str(recipe), str(tests)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == [str(MANY)]
    a, b = load(tmp_path / "a.safetensors"), load(tmp_path / "b.safetensors")
    written = sorted((tmp_path / "out").iterdir())
    assert len(written) == MANY  # no partial file left beside them
    for i in (0, 1, 63, 64, 199):
        alpha = i / MANY
        out = load(tmp_path / "out" / f"o{i}.safetensors")
        for key, tensor in out.items():
            x, y = a[key].float(), b[key].float()
            expected = (x * (1 - alpha) + y * alpha).to(a[key].dtype)
            assert torch.allclose(tensor.float(), expected.float(), rtol=0, atol=2e-3), (i, key)


# -- memory per output -----------------------------------------------------------------------

PER_OUTPUT_BOUND = 128 << 10
"""What planning one more output of a sweep may cost. An output's own state is its path,
options and metadata (a few KB with the recipe recorded twice); its layout is shared with
every output of the same keys; its step's key table (one dict entry per key, the slots
shared) is about 40 KB for SD1's 1,131 keys. 1,000 outputs stay under 128 MB."""


def sweep(folder: Path, count: int) -> Path:
    lines = ['model a = "a.safetensors"', 'model b = "b.safetensors"']
    lines += [
        f'save weighted_sum(a, b, alpha={i / count}) to "out/o{i}.safetensors"'
        for i in range(count)
    ]
    recipe = folder / f"sweep{count}.merge"
    recipe.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return recipe


def planned_bytes(recipe: Path) -> tuple[int, int]:
    """Bytes a plan of ``recipe`` holds (tracemalloc, after collection), and its memory
    estimate."""
    checked = load_recipe(recipe)
    gc.collect()
    tracemalloc.start()
    try:
        made = plan(checked)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    estimate = made.working_memory()
    made.close()
    return held, estimate


def test_planning_an_output_costs_a_bounded_amount_and_the_estimate_counts_it(
    tmp_path: Path,
) -> None:
    make_checkpoint(tmp_path / "a.safetensors", "sd1", seed=1, scale=1 / 80)
    make_checkpoint(tmp_path / "b.safetensors", "sd1", seed=2, scale=1 / 80)
    planned_bytes(sweep(tmp_path, 2))  # imports and caches warm
    few, many = 5, 25
    held_few, estimate_few = planned_bytes(sweep(tmp_path, few))
    held_many, estimate_many = planned_bytes(sweep(tmp_path, many))
    per_output = (held_many - held_few) / (many - few)
    assert per_output < PER_OUTPUT_BOUND, per_output
    # The estimate grows by each output's bookkeeping: at least what a sink of its layout
    # holds, measured here.
    checked = load_recipe(sweep(tmp_path, 1))
    made = plan(checked)
    (output,) = made.pending
    try:
        gc.collect()
        tracemalloc.start()
        try:
            sink = output.file_format.open_sink(
                SinkTarget(
                    tmp_path / "probe.safetensors",
                    tuple(item.entry() for item in output.layout),
                    output.metadata,
                )
            )
            gc.collect()
            sink_bytes = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        sink.abort()
    finally:
        made.close()
    assert sink_bytes > 100_000  # a real layout: over a thousand keys
    assert output_bookkeeping(len(output.layout), output.metadata) >= sink_bytes
    assert (estimate_many - estimate_few) / (many - few) >= sink_bytes


# -- the whole-key estimate against the measured peak ---------------------------------------

WIDTH = 4096
RSS_SCRIPT = textwrap.dedent(
    """
    import sys, threading, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from mergelang.arch import register_architecture
    from tiny_arch import tiny_architecture
    register_architecture(tiny_architecture(int(sys.argv[2])))
    from mergelang.api import plan
    from mergelang.run.executor import execute

    def anonymous():
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no RssAnon")

    made = plan(Path(sys.argv[1]), use_cache=False, workers=2)
    estimate = made.working_memory()
    before = anonymous()
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], anonymous())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        execute(made)
    finally:
        done.set()
        sampler.join()
    print(estimate, peak[0] - before)
    """
)


@pytest.mark.parametrize(
    "expression",
    [
        "ties(a, b, c, density=0.5, alpha=1)",
        "dare(smooth_add(ties(a, b, c, density=0.5, alpha=1), b, c), b, c, drop=0.5, alpha=1, "
        "seed=1)",
    ],
    ids=["ties", "ties-smooth_add-dare"],
)
def test_the_whole_key_estimate_covers_the_measured_peak(tmp_path: Path, expression: str) -> None:
    """Two 4096 x 4096 keys a model: the peak is the whole-key evaluation's. The growth of
    the process's anonymous memory over the run is sampled every millisecond (file pages are
    the page cache's, not working memory; a high-water mark of the whole process would also
    count what planning held before the run)."""
    from tiny_arch import tiny_architecture

    from mergelang.arch import register_architecture, unregister_architecture

    register_architecture(tiny_architecture(WIDTH))
    try:
        tiny_models(tmp_path, "a", "b", "c")
    finally:
        unregister_architecture("tinynet")
    recipe = tmp_path / "whole.merge"
    recipe.write_text(
        'model a = "a.safetensors"\nmodel b = "b.safetensors"\nmodel c = "c.safetensors"\n'
        f'x = {expression}\nsave x to "out.safetensors"\n',
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(recipe), str(WIDTH), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    estimate, grown = (int(v) for v in done.stdout.split())
    key = WIDTH * WIDTH * 4
    assert grown > 3 * key  # the measurement saw the whole-key evaluation
    assert grown <= estimate * 1.1, (estimate / key, grown / key)
