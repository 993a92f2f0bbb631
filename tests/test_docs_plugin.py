"""The plugin example of docs/methods/README.md works as written: its module and its entry
point, installed as a real distribution on the path, give a method a recipe can call."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from mergelang.testing import make_checkpoint

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import torch
import mergelang
from mergelang.arch import get_architecture
from mergelang.io.readers import SafetensorsReader

result = mergelang.run("r.merge", cache_dir="cache")
arch = get_architecture("sd1")
with SafetensorsReader("a.safetensors") as a, SafetensorsReader("b.safetensors") as b, \\
        SafetensorsReader("out.safetensors") as out:
    for key in out.keys():
        x = a.get(key).float()
        block = arch.block_of(key)
        if block is None:
            expected = x
        else:
            alpha = 0.25 if block != "BASE" else 0.0
            expected = ((1 - alpha) * x + alpha * b.get(key).float()).clamp(-0.5, 0.5)
        assert torch.equal(out.get(key), expected), key
print("ok", len(out.keys()))
"""


def test_the_documented_plugin_registers_a_method_recipes_can_call(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "methods" / "README.md").read_text(encoding="utf-8")
    module = re.findall(r"```python\n(.*?)```", text, flags=re.S)[0]
    toml = re.findall(r"```toml\n(.*?)```", text, flags=re.S)[0]
    entry = re.search(r'^(\w+) = "([\w.:]+)"$', toml, flags=re.M)
    assert entry is not None and '[project.entry-points."mergelang.methods"]' in toml
    site = tmp_path / "site"
    (site / "my_merges").mkdir(parents=True)
    (site / "my_merges" / "__init__.py").write_text(module, encoding="utf-8")
    info = site / "my_merges-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: my-merges\nVersion: 1.0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        f"[mergelang.methods]\n{entry.group(1)} = {entry.group(2)}\n", encoding="utf-8"
    )
    make_checkpoint(tmp_path / "a.safetensors", "sd1", scale=0.0625, seed=1, dtype="F32")
    make_checkpoint(tmp_path / "b.safetensors", "sd1", scale=0.0625, seed=2, dtype="F32")
    (tmp_path / "r.merge").write_text(
        'model a = "a.safetensors"\nmodel b = "b.safetensors"\n'
        "save soft_clamp_sum(a, b, alpha={BASE: 0, default: 0.25}, limit=0.5) "
        'to "out.safetensors" as fp32\n',
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", CHECK],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ")
    listed = subprocess.run(  # the documented form is the current one: no deprecation
        [sys.executable, "-W", "error", "-m", "mergelang", "methods", "soft_clamp_sum"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert "clamp((1 - alpha) * A + alpha * B, -limit, limit)" in listed.stdout
    assert listed.stdout.startswith("soft_clamp_sum(a, b, alpha=0.5, limit=1.0)\n")
    assert "  alpha (weights; default 0.5; an unset BASE is 0.0)\n      B's share" in listed.stdout
    assert "  limit (number; default 1.0; at least 0.0)\n      largest magnitude" in listed.stdout
