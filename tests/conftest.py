"""Fixtures shared by several test modules."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mergelang.testing import make_checkpoint


@pytest.fixture(scope="session")
def big_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SD1 inputs ``a`` and ``b`` (equal copies, about 6 MB each) large enough that a run of
    the command line lasts a moment after its output file is opened: time to send it a signal
    or to start a second run beside it. Tests must not change these files."""
    folder = tmp_path_factory.mktemp("run-big-models")
    make_checkpoint(folder / "a.safetensors", "sd1", seed=3, scale=1 / 20)
    shutil.copyfile(folder / "a.safetensors", folder / "b.safetensors")
    return folder
