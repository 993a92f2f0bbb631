from __future__ import annotations

import dataclasses
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from weights_helpers import SD_SCHEME, SDXL_SCHEME, sd_slots, sd_weights

from mergelang.arch.sd1 import SD_BLOCKS
from mergelang.arch.sdxl import SDXL_BLOCKS
from mergelang.block_weights import (
    BlockValues,
    BlockWeights,
    ResolvedWeights,
    WeightsError,
    describe_blocks,
    format_number,
    suggest_block,
)

SD_ONLY = ("IN09", "IN10", "IN11", "OUT09", "OUT10", "OUT11")


def idx(name: str) -> int:
    return SD_BLOCKS.index(name)


def ramp(n: int, step: float = 0.01) -> list[float]:
    return [round(i * step, 10) for i in range(n)]


# --- constructors ------------------------------------------------------------------------


def test_scalar_sets_every_block_and_base() -> None:
    w = BlockWeights.scalar(0.3)
    assert w.base == 0.3
    assert sd_slots(w) == (0.3,) * 25
    assert w.is_scalar == 0.3
    assert w.to_text() == "0.3"


def test_scalar_zero_is_a_scalar_not_missing() -> None:
    w = BlockWeights.scalar(0)
    assert w.is_scalar is not None
    assert w.is_scalar == 0.0
    assert w.resolve(SD_SCHEME).base == 0.0


def test_vector_25_leaves_base_unset() -> None:
    values = ramp(25)
    w = BlockWeights.from_vector(values)
    assert w.base is None
    assert sd_slots(w) == tuple(values)
    assert w.origin == "25-value vector"
    assert w.is_scalar is None


def test_vector_26_puts_base_first() -> None:
    values = [0.9, *ramp(25)]
    w = BlockWeights.from_vector(values)
    assert w.base == 0.9
    assert sd_slots(w) == tuple(values[1:])
    assert w.get("IN00") == 0.0
    assert w.get("OUT11") == 0.24


def test_vector_19_is_sdxl_blocks() -> None:
    values = [float(i) for i in range(1, 20)]
    w = BlockWeights.from_vector(values)
    assert w.base is None
    for name, value in zip(SDXL_BLOCKS, values, strict=True):
        assert w.get(name) == value
    for name in SD_ONLY:
        assert w.get(name) is None
    assert w.origin == "19-value vector"


def test_vector_20_puts_base_first() -> None:
    values = [0.25, *[float(i) for i in range(19)]]
    w = BlockWeights.from_vector(values)
    assert w.base == 0.25
    assert w.get("M00") == 9.0
    assert w.get("OUT08") == 18.0
    assert w.get("IN09") is None


def test_values_kept_exactly() -> None:
    values = [0.1, 1 / 3, 0.9166666667, *[1e-7] * 22]
    w = BlockWeights.from_vector(values)
    assert sd_slots(w)[:3] == (0.1, 1 / 3, 0.9166666667)
    assert sd_slots(w)[3] == 1e-7


def test_int_values_become_floats() -> None:
    w = BlockWeights.from_vector([1] * 25)
    assert all(type(v) is float for v in sd_slots(w))


@pytest.mark.parametrize("count", [0, 1, 18, 21, 24, 28, 50])
def test_vector_wrong_length(count: int) -> None:
    with pytest.raises(WeightsError) as info:
        BlockWeights.from_vector([0.5] * count)
    err = info.value
    assert err.message == (
        "a block weight vector has 25 or 26 values (SD1/SD2), 19 or 20 (SDXL), 61 or 59 "
        f"(Flux.1), 26 or 27 (SD3/SD3.5 Medium) or 40 or 41 (SD3.5 Large), not {count}"
    )
    assert err.index is None
    assert err.hint is not None
    assert "26 put BASE first" in err.hint


@pytest.mark.parametrize(
    ("bad", "text"),
    [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf")],
)
def test_vector_non_finite_value_names_its_index(bad: float, text: str) -> None:
    values = [0.5] * 25
    values[7] = bad
    with pytest.raises(WeightsError) as info:
        BlockWeights.from_vector(values)
    assert info.value.index == 7
    assert (
        info.value.message == f"a block weight must be a finite number, not {text} (value 8 of 25)"
    )


@pytest.mark.parametrize("bad", ["0.5", None, True, [1.0]])
def test_vector_non_number_value(bad: object) -> None:
    values: list[object] = [0.5] * 26
    values[3] = bad
    with pytest.raises(WeightsError) as info:
        BlockWeights.from_vector(values)  # type: ignore[arg-type]
    assert info.value.index == 3
    assert info.value.message.startswith(f"a block weight is a number, not {bad!r}")


def test_scalar_rejects_nan() -> None:
    with pytest.raises(WeightsError, match="finite"):
        BlockWeights.scalar(math.nan)


def test_direct_construction_leaves_unnamed_blocks_unset() -> None:
    w = BlockWeights.from_blocks({"IN00": 0.5, "OUT11": None}, base=0.25)
    assert w.get("IN00") == 0.5 and w.get("OUT11") is None and w.get("M00") is None
    assert w.base == 0.25


# --- maps --------------------------------------------------------------------------------


def test_map_groups_ranges_and_blocks() -> None:
    w = BlockWeights.from_map(
        [
            (("IN00", "IN05"), 1.0),
            (("IN06", "IN11"), 0.5),
            ("M00", 0.25),
            ("OUT", 0.0),
            ("BASE", 0.3),
        ]
    )
    expected = [1.0] * 6 + [0.5] * 6 + [0.25] + [0.0] * 12
    assert sd_slots(w) == tuple(expected)
    assert w.base == 0.3
    assert w.origin == "map"


def test_map_later_entries_override() -> None:
    w = BlockWeights.from_map([("IN", 1.0), ("IN03", 0.2), ("IN", 0.7), ("OUT05", 0.1)])
    assert w.get("IN03") == 0.7
    assert w.get("IN00") == 0.7
    assert w.get("OUT05") == 0.1
    assert w.get("OUT04") is None
    assert w.get("M00") is None
    assert w.base is None


@pytest.mark.parametrize("default_first", [True, False])
def test_map_default_fills_only_unset_slots_wherever_written(default_first: bool) -> None:
    entries: list[tuple[str | tuple[str, str], float]] = [("IN00", 0.75), ("M", 0.0)]
    entries = [("default", 1.0), *entries] if default_first else [*entries, ("default", 1.0)]
    w = BlockWeights.from_map(entries)
    assert w.get("IN00") == 0.75
    assert w.get("M00") == 0.0
    assert all(w.get(b) == 1.0 for b in SD_BLOCKS if b not in ("IN00", "M00"))
    assert w.base == 1.0


def test_map_base_entry_beats_default() -> None:
    w = BlockWeights.from_map([("default", 1.0), ("BASE", 0.0)])
    assert w.base == 0.0
    assert sd_slots(w) == (1.0,) * 25


def test_map_range_across_middle() -> None:
    w = BlockWeights.from_map([(("IN06", "OUT02"), 0.5)])
    set_names = [b for b in SD_BLOCKS if w.get(b) is not None]
    assert set_names == [*(f"IN{i:02d}" for i in range(6, 12)), "M00", "OUT00", "OUT01", "OUT02"]


def test_empty_map() -> None:
    w = BlockWeights.from_map([])
    assert w.base is None
    assert sd_slots(w) == (None,) * 25
    assert w.to_text() == "{}"


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [("IN12", "IN11"), ("OUT13", "OUT11"), ("MID", "M00"), ("in05", "IN05"), ("IN5", "IN05")],
)
def test_map_unknown_block_suggests_closest(key: str, suggestion: str) -> None:
    with pytest.raises(WeightsError) as info:
        BlockWeights.from_map([("IN00", 1.0), ("OUT", 0.5), (key, 1.0)])
    err = info.value
    assert err.index == 2
    assert err.message == f"unknown block {key!r}"
    assert err.hint is not None
    assert err.hint.startswith(f"did you mean {suggestion}? ")
    assert "IN00..IN11, M00, OUT00..OUT11" in err.hint


def test_map_unknown_name_without_suggestion_lists_valid_names() -> None:
    with pytest.raises(WeightsError) as info:
        BlockWeights.from_map([("qqqq", 1.0)])
    assert info.value.index == 0
    assert info.value.hint is not None
    assert not info.value.hint.startswith("did you mean")
    assert "groups IN, M, OUT" in info.value.hint


def test_map_backwards_range() -> None:
    with pytest.raises(WeightsError) as info:
        BlockWeights.from_map([("default", 0.0), (("OUT02", "IN06"), 1.0)])
    err = info.value
    assert err.index == 1
    assert err.message == "block range OUT02..IN06 runs backwards"
    assert err.hint is not None
    assert err.hint.endswith("write IN06..OUT02")


def test_map_range_with_unknown_endpoint() -> None:
    with pytest.raises(WeightsError) as info:
        BlockWeights.from_map([(("IN00", "IN12"), 1.0)])
    assert info.value.index == 0
    assert info.value.message == "unknown block in range 'IN12'"
    assert info.value.hint is not None
    assert info.value.hint.startswith("did you mean IN11?")


def test_map_duplicate_default() -> None:
    with pytest.raises(WeightsError) as info:
        BlockWeights.from_map([("default", 1.0), ("IN00", 0.5), ("default", 0.0)])
    err = info.value
    assert err.index == 2
    assert err.message == (
        "a block weight map has one default:, but entry 3 is a second (the first is entry 1)"
    )
    assert err.hint == "remove one of the default: entries"


def test_map_non_finite_value() -> None:
    with pytest.raises(WeightsError) as info:
        BlockWeights.from_map([("IN00", 1.0), (("OUT00", "OUT03"), math.inf)])
    assert info.value.index == 1
    assert info.value.message == "a block weight must be a finite number, not inf (OUT00..OUT03)"


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("IN12", "IN11"),
        ("OUT99", "OUT11"),
        ("out03", "OUT03"),
        ("IN_05", "IN05"),
        ("OUT-11", "OUT11"),
        ("MIDDLE", "M00"),
        ("m", "M"),
        ("in", "IN"),
        ("base", "BASE"),
        ("Default", "default"),
        ("INPUT07", "IN07"),
        ("OUTPUT3", "OUT03"),
        ("BSAE", "BASE"),
        ("zzzzzz", None),
    ],
)
def test_suggest_block(typed: str, expected: str | None) -> None:
    assert suggest_block(typed) == expected


# --- queries -----------------------------------------------------------------------------


def test_get_unknown_block_raises() -> None:
    with pytest.raises(WeightsError, match="unknown block 'IN12'"):
        BlockWeights.scalar(1).get("IN12")


def test_with_base_replaces_base_only() -> None:
    w = BlockWeights.from_vector(ramp(25))
    v = w.with_base(0.0)
    assert v.base == 0.0
    assert sd_slots(v) == sd_slots(w)
    assert w.base is None  # the original is unchanged
    assert v.with_base(0.7).base == 0.7


def test_is_scalar_needs_every_slot() -> None:
    assert BlockWeights.from_vector([0.5] * 25).is_scalar is None  # BASE unset
    # 26 values are also SD3's IN, J00..J23, OUT, which leaves BASE unset
    assert BlockWeights.from_vector([0.5] * 26).is_scalar is None
    assert BlockWeights.from_vector([0.5] * 26).resolve(SD_SCHEME).base == 0.5
    assert BlockWeights.from_map([("default", 0.0)]).is_scalar == 0.0
    assert BlockWeights.from_map([("default", 0.0), ("IN00", 0.1)]).is_scalar is None


def test_equality_ignores_origin_and_is_hashable() -> None:
    a = BlockWeights.from_vector([0.5] * 26)
    b = dataclasses.replace(a, origin="FLAT_26")
    assert a == b
    assert a.origin != b.origin
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    # for SD1 models a 26-value vector of 0.5 is the scalar 0.5; SD3 reads it otherwise
    scalar = BlockWeights.scalar(0.5)
    assert a.resolve(SD_SCHEME) == scalar.resolve(SD_SCHEME)
    assert a != scalar


# --- resolve -----------------------------------------------------------------------------


def test_resolve_sd_blocks_26_vector() -> None:
    values = [0.9, *ramp(25)]
    r = BlockWeights.from_vector(values).resolve(SD_SCHEME)
    assert r.base == 0.9
    assert list(r.values) == list(SD_BLOCKS)
    assert dict(r.values) == dict(zip(SD_BLOCKS, values[1:], strict=True))
    assert r["BASE"] == 0.9
    assert r["OUT11"] == 0.24


def test_resolve_sdxl_ignores_sd_only_blocks_of_a_25_vector() -> None:
    values = ramp(25)
    r = BlockWeights.from_vector(values).resolve(SDXL_SCHEME, base=0.0)
    assert list(r.values) == list(SDXL_BLOCKS)
    assert r["M00"] == values[12]
    assert r["OUT00"] == values[13]
    assert r["OUT08"] == values[21]
    with pytest.raises(KeyError, match="IN09"):
        r["IN09"]


def test_resolve_19_vector_for_sdxl() -> None:
    values = [float(i) / 20 for i in range(19)]
    r = BlockWeights.from_vector(values).resolve(SDXL_SCHEME, base=0.5)
    assert [r[b] for b in SDXL_BLOCKS] == values
    assert r.base == 0.5


@pytest.mark.parametrize("count", [19, 20])
def test_resolve_sdxl_vector_for_sd_model_errors(count: int) -> None:
    w = BlockWeights.from_vector([0.5] * count)
    with pytest.raises(WeightsError) as info:
        w.resolve(SD_SCHEME, base=0.0)
    assert info.value.message == (
        f"a {count}-value vector is SDXL's (IN00..IN08, M00, OUT00..OUT08); "
        "this SD1/SD2 model also has IN09..IN11, OUT09..OUT11"
    )
    assert info.value.hint == "give 25 values (26 with BASE first) for SD1/SD2 models"


def test_resolve_sdxl_only_map_for_sd_model_errors() -> None:
    w = BlockWeights.from_map([(("IN00", "IN08"), 1.0), ("M00", 1.0), (("OUT00", "OUT08"), 0.0)])
    with pytest.raises(WeightsError, match=re.escape("sets only SDXL's 19 blocks")):
        w.resolve(SD_SCHEME, base=0.0)


def test_resolve_base_fallback_used_only_when_unset() -> None:
    w25 = BlockWeights.from_vector([1.0] * 25)
    assert w25.resolve(SD_SCHEME, base=0.0).base == 0.0
    assert w25.resolve(SD_SCHEME, base=0.4).base == 0.4
    w26 = BlockWeights.from_vector([0.0] + [1.0] * 25)
    assert w26.resolve(SD_SCHEME, base=0.4).base == 0.0  # its own BASE 0 wins


def test_resolve_without_any_base_errors() -> None:
    with pytest.raises(WeightsError) as info:
        BlockWeights.from_vector([1.0] * 25).resolve(SD_SCHEME)
    assert info.value.message == (
        "a 25-value vector sets no BASE weight (text encoders and other keys outside the "
        "U-Net blocks)"
    )
    assert info.value.hint == "give 26 values, a BASE: entry, a default:, or base="


def test_resolve_names_the_preset_origin() -> None:
    w = sd_weights(None, (0.5,) * 25, origin="GRAD_V")
    with pytest.raises(WeightsError, match=r"^GRAD_V sets no BASE weight"):
        w.resolve(SD_SCHEME)


def test_resolve_map_missing_blocks_lists_them_as_ranges() -> None:
    w = BlockWeights.from_map([("IN00", 1.0), ("OUT", 0.0), ("BASE", 0.0)])
    with pytest.raises(WeightsError) as info:
        w.resolve(SD_SCHEME)
    assert info.value.message == "a block weight map sets no weight for IN01..M00"
    assert info.value.hint == "add a default: entry, or give those blocks a value"


def test_resolve_gives_exactly_the_schemes_blocks_in_order() -> None:
    w = BlockWeights.from_map([("IN00", 1.0), ("default", 0.0), ("BASE", 0.5)])
    r = w.resolve(SDXL_SCHEME)
    assert tuple(r.values) == SDXL_BLOCKS
    assert r["IN00"] == 1.0 and r["OUT08"] == 0.0 and r.base == 0.5
    with pytest.raises(KeyError, match="IN09"):
        r["IN09"]


def test_unknown_block_names_are_refused() -> None:
    with pytest.raises(WeightsError, match="unknown block 'IN12'"):
        BlockWeights.from_blocks({"IN12": 1.0})
    with pytest.raises(WeightsError, match="unknown block 'IN12'"):
        BlockWeights.scalar(1).get("IN12")


def test_resolved_weights_are_frozen_and_hashable() -> None:
    a = BlockWeights.scalar(0.5).resolve(SDXL_SCHEME)
    b = BlockWeights.from_vector([0.5] * 26).resolve(SDXL_SCHEME)
    assert a == b
    assert hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.base = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        a.values["IN00"] = 1.0  # type: ignore[index]
    plain = ResolvedWeights(0.0, {"IN00": 1.0})
    assert isinstance(plain.values, BlockValues)
    assert hash(plain) == hash(ResolvedWeights(0.0, BlockValues([("IN00", 1.0)])))


# --- arithmetic --------------------------------------------------------------------------


PARTIAL = BlockWeights.from_map([(("IN00", "IN03"), 0.5), ("M00", 2.0), ("BASE", 0.25)])
FULL = BlockWeights.from_vector(ramp(25, 0.1))


def test_arithmetic_with_floats_on_either_side() -> None:
    v = ramp(25, 0.1)
    assert sd_slots(FULL + 0.25) == tuple(x + 0.25 for x in v)
    assert sd_slots(0.25 + FULL) == tuple(0.25 + x for x in v)
    assert sd_slots(FULL - 1) == tuple(x - 1 for x in v)
    assert sd_slots(1 - FULL) == tuple(1 - x for x in v)
    assert sd_slots(FULL * 3) == tuple(x * 3 for x in v)
    assert sd_slots(3 * FULL) == tuple(3 * x for x in v)
    assert sd_slots(FULL / 3) == tuple(x / 3 for x in v)
    assert sd_slots(-FULL) == tuple(-x for x in v)
    assert (1 - FULL).base is None


def test_reflected_division() -> None:
    w = BlockWeights.from_vector([2.0, *[4.0] * 25])
    r = 1 / w
    assert r.base == 0.5
    assert sd_slots(r) == (0.25,) * 25


def test_arithmetic_between_weights_propagates_unset() -> None:
    s = PARTIAL + FULL
    v = ramp(25, 0.1)
    assert s.get("IN02") == 0.5 + v[2]
    assert s.get("M00") == 2.0 + v[12]
    assert s.get("IN04") is None
    assert s.get("OUT00") is None
    assert s.base is None  # FULL has no BASE
    p = PARTIAL * PARTIAL
    assert p.base == 0.0625
    assert p.get("M00") == 4.0
    assert sum(1 for b in sd_slots(p) if b is not None) == 5


def test_unset_slots_stay_unset_with_floats() -> None:
    w = PARTIAL * 2
    assert [b for b in SD_BLOCKS if w.get(b) is not None] == ["IN00", "IN01", "IN02", "IN03", "M00"]
    assert w.base == 0.5


def test_division_by_zero_float() -> None:
    with pytest.raises(WeightsError) as info:
        FULL / 0
    assert info.value.message == "division by zero in block weights (IN00 of the divisor is 0)"


def test_division_by_zero_weights() -> None:
    divisor = BlockWeights.from_map([("default", 1.0), ("OUT04", 0.0)])
    with pytest.raises(WeightsError, match=r"\(OUT04 of the divisor is 0\)"):
        FULL / divisor
    with pytest.raises(WeightsError, match=r"\(IN00 of the divisor is 0\)"):
        1 / FULL


def test_division_by_zero_where_numerator_unset_is_fine() -> None:
    divisor = BlockWeights.from_map([("default", 1.0), ("OUT04", 0.0)])
    q = PARTIAL / divisor
    assert q.get("OUT04") is None
    assert q.get("M00") == 2.0


def test_arithmetic_overflow_is_an_error() -> None:
    with pytest.raises(WeightsError, match="gives inf"):
        BlockWeights.scalar(1e308) * 10


def test_arithmetic_with_other_types_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        FULL + "0.5"  # type: ignore[operator]
    with pytest.raises(TypeError):
        True * FULL
    with pytest.raises(WeightsError, match="finite"):
        FULL * math.nan


def test_arithmetic_origin_describes_the_expression() -> None:
    g = sd_weights(None, (0.5,) * 25, origin="GRAD_V")
    assert (1 - g).origin == "1 - GRAD_V"
    assert ((1 - g) * 0.5).origin == "(1 - GRAD_V) * 0.5"
    assert (-g).origin == "-GRAD_V"


finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)
slot = st.one_of(st.none(), finite)


@st.composite
def block_weights(draw: st.DrawFn) -> BlockWeights:
    base = draw(slot)
    blocks = tuple(draw(st.lists(slot, min_size=25, max_size=25)))
    return sd_weights(base, blocks)


@settings(max_examples=100, deadline=None)
@given(block_weights())
def test_property_scaling_by_two_round_trips(w: BlockWeights) -> None:
    assert (w * 2) / 2 == w


@settings(max_examples=100, deadline=None)
@given(block_weights())
def test_property_self_difference_is_zero_where_set(w: BlockWeights) -> None:
    d = w - w
    assert d.base == (None if w.base is None else 0.0)
    for mine, diff in zip(sd_slots(w), sd_slots(d), strict=True):
        assert diff == (None if mine is None else 0.0)


@settings(max_examples=100, deadline=None)
@given(block_weights(), finite)
def test_property_add_then_subtract(w: BlockWeights, x: float) -> None:
    back = (w + x) - x
    for mine, got in zip((w.base, *sd_slots(w)), (back.base, *sd_slots(back)), strict=True):
        if mine is None:
            assert got is None
        else:
            assert got == pytest.approx(mine, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(block_weights(), block_weights())
def test_property_sum_commutes_and_negation_inverts(a: BlockWeights, b: BlockWeights) -> None:
    assert a + b == b + a
    negated = -a
    assert -negated == a
    assert 0.5 * a == a * 0.5


# --- text --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1"),
        (0.0, "0"),
        (-0.0, "-0"),
        (-2.0, "-2"),
        (0.5, "0.5"),
        (1e-05, "1e-05"),
        (0.9166666667, "0.9166666667"),
        (1e20, "1e+20"),
        (0.1 + 0.2, "0.30000000000000004"),
    ],
)
def test_format_number(value: float, text: str) -> None:
    assert format_number(value) == text
    assert float(text) == value
    assert math.copysign(1, float(text)) == math.copysign(1, value)


def test_describe_blocks() -> None:
    assert describe_blocks(["OUT09", "IN10", "IN09", "IN11", "BASE", "OUT00"]) == (
        "BASE, IN09..IN11, OUT00, OUT09"
    )
    assert describe_blocks(["M00", "IN11"]) == "IN11..M00"
    assert describe_blocks(list(SD_BLOCKS)) == "IN00..OUT11"
    assert describe_blocks([]) == ""


def test_to_text_forms() -> None:
    assert BlockWeights.scalar(0.5).to_text() == "0.5"
    assert BlockWeights.from_vector([1] * 12 + [0.5] + [0] * 12).to_text() == (
        "[" + ", ".join(["1"] * 12 + ["0.5"] + ["0"] * 12) + "]"
    )
    assert BlockWeights.from_vector([0.3, *[1] * 25]).to_text().startswith("[0.3, 1, 1")
    nineteen = BlockWeights.from_vector([float(i) for i in range(19)])
    assert nineteen.to_text() == "[" + ", ".join(str(i) for i in range(19)) + "]"
    twenty = BlockWeights.from_vector([0.5, *[float(i) for i in range(19)]])
    assert twenty.to_text().startswith("[0.5, 0, 1, 2")
    m = BlockWeights.from_map([(("IN00", "IN05"), 1), ("M00", 0.5), ("OUT11", -0.0), ("BASE", 0.3)])
    assert m.to_text() == "{BASE: 0.3, IN00..IN05: 1, M00: 0.5, OUT11: -0}"


def parse_weights_text(text: str) -> BlockWeights:
    """An independent reader for to_text's three forms."""
    text = text.strip()
    if text.startswith("["):
        return BlockWeights.from_vector([float(v) for v in text[1:-1].split(",")])
    if text.startswith("{"):
        entries: list[tuple[str | tuple[str, str], float]] = []
        body = text[1:-1].strip()
        for part in body.split(",") if body else []:
            key, value = (s.strip() for s in part.split(":"))
            if ".." in key:
                start, end = key.split("..")
                entries.append(((start, end), float(value)))
            else:
                entries.append((key, float(value)))
        return BlockWeights.from_map(entries)
    return BlockWeights.scalar(float(text))


@settings(max_examples=150, deadline=None)
@given(block_weights())
def test_property_to_text_round_trips(w: BlockWeights) -> None:
    back = parse_weights_text(w.to_text())
    assert back == w
    if w.is_scalar is None:  # signed zeros survive too (a scalar may mix 0 and -0)
        assert [repr(v) for v in sd_slots(back)] == [repr(v) for v in sd_slots(w)]
        assert repr(back.base) == repr(w.base)


def test_to_text_round_trip_of_sdxl_vector() -> None:
    w = BlockWeights.from_vector([0.1 * i for i in range(20)])
    assert parse_weights_text(w.to_text()) == w
