"""``mergelang methods``: the list of merge methods, one method's description, JSON."""

from __future__ import annotations

import json

import pytest

from mergelang.cli import main
from mergelang.methods.registry import get_method, method_names


def test_the_list_has_every_method_with_its_signature_and_formula(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in method_names():
        spec = get_method(name)
        assert spec is not None
        assert spec.signature() in out
        assert spec.formula in out
    assert "weighted_sum(a, b, alpha=0.5, base=None)" in out
    assert "(1 - alpha) * A + alpha * B" in out


def test_one_method_is_described_parameter_by_parameter(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["methods", "add_difference"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("add_difference(a, b, c, alpha=1.0, base=None)\n")
    assert "  A + alpha * (B - C)" in out
    assert "elementwise: fused" in out
    assert "  alpha (weights; default 1.0)" in out
    assert "  base (number; default None; sets the BASE of alpha)" in out
    assert not [line for line in out.splitlines() if line != line.rstrip()]


def test_whole_tensor_and_statistics_methods_say_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["methods", "slerp"]) == 0
    assert "each key's whole tensors" in capsys.readouterr().out
    assert main(["methods", "cosine_a"]) == 0
    assert "a statistics pass over the whole model first" in capsys.readouterr().out


def test_json_lists_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["methods", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    by_name = {entry["name"]: entry for entry in data}
    assert set(by_name) == set(method_names())
    ties = by_name["ties"]
    assert ties["elementwise"] is False
    assert [p["name"] for p in ties["params"]] == ["base", "models", "density", "alpha", "sign"]
    assert ties["params"][1]["variadic"] is True
    assert main(["methods", "weighted_sum", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["params"][2] == {
        "name": "alpha",
        "kind": "weights",
        "required": False,
        "default": 0.5,
        "minimum": None,
        "maximum": None,
        "variadic": False,
        "base_of": None,
        "base_default": 0.0,
        "doc": get_method("weighted_sum").params[2].doc,  # type: ignore[union-attr]
        "choices": None,
    }
    assert ties["params"][4]["choices"] == ["sum", "count"]


def test_an_unknown_name_is_a_usage_error_with_a_suggestion(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["methods", "weighted_summ"]) == 2
    err = capsys.readouterr().err
    assert "no merge method named 'weighted_summ'" in err
    assert "did you mean weighted_sum?" in err
