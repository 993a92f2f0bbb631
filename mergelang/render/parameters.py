"""Generation parameters in A1111's PNG-info text form, read and written.

The form a web UI shows under an image and stores in its ``parameters`` text chunk::

    a lighthouse at dusk
    Negative prompt: blurry, text
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512

The prompt is every line before ``Negative prompt:`` (or before the settings line), the
negative prompt the lines after it, and the last line holds ``Key: value`` pairs separated by
commas. ``Seed`` may be one number or a range ``1-4``, and ``Seeds: 1 2 7`` lists seeds (commas
separate settings, so ``Seed: 1, 2`` is an error); ``--seeds`` on the command line also
takes ``1,2,7``. Unknown keys are kept and
written back as they were (``Clip skip: 2``); ``Model hash`` and ``Model`` are always the
rendered model's own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from mergelang.errors import UsageError

__all__ = ["RenderParameters", "infotext", "parse_parameters", "parse_seeds"]

_SETTING = re.compile(r"\s*([A-Za-z][\w ./()-]*?):\s*(\"(?:[^\"\\]|\\.)*\"|[^,]*)\s*(?:,|$)")
_OWN_KEYS = {"Steps", "Sampler", "CFG scale", "Seed", "Seeds", "Size", "Model hash", "Model"}
MAX_SEEDS = 1000


@dataclass(frozen=True)
class RenderParameters:
    """What every image of a render shares, and the seeds (one image per output and seed)."""

    prompt: str
    negative_prompt: str = ""
    steps: int = 20
    sampler: str = "Euler a"
    cfg_scale: float = 7.0
    seeds: tuple[int, ...] = (1,)
    width: int = 512
    height: int = 512
    extra: Mapping[str, str] = field(default_factory=dict)
    """Other settings of the text, written back unchanged."""


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"1-4"``, ``"1,2,5"``, ``"1 2 5"`` or ``"7"`` -> the seeds, in order, each once."""
    seeds: list[int] = []
    for part in re.split(r"[,\s]+", text.strip()):
        if not part:
            continue
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if match is None:
            raise UsageError(f"seeds {text!r}: {part!r} is not a seed or a range like 1-4")
        low = int(match.group(1))
        high = int(match.group(2) or low)
        if high < low or high - low >= MAX_SEEDS:
            raise UsageError(f"seeds {text!r}: the range {part} is empty or too long")
        seeds += [s for s in range(low, high + 1) if s not in seeds]
    if not seeds:
        raise UsageError(f"seeds {text!r}: no seed given")
    if len(seeds) > MAX_SEEDS:
        raise UsageError(f"seeds {text!r}: more than {MAX_SEEDS} seeds")
    return tuple(seeds)


def _number(key: str, text: str, kind: type[int] | type[float]) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise UsageError(f"parameters: {key}: {text!r} is not a number") from None
    if value <= 0:
        raise UsageError(f"parameters: {key} must be positive, not {text}")
    return value


def parse_parameters(text: str) -> RenderParameters:
    """The parameters of A1111's text form (see the module docstring); a clear
    :class:`~mergelang.errors.UsageError` for a value that cannot be used."""
    lines = text.strip("\n").splitlines()
    settings: dict[str, str] = {}
    if lines and _looks_like_settings(lines[-1]):
        settings = _settings(lines.pop())
    prompt_lines: list[str] = []
    negative_lines: list[str] | None = None
    for line in lines:
        if negative_lines is None and line.startswith("Negative prompt:"):
            negative_lines = [line.removeprefix("Negative prompt:").strip()]
        elif negative_lines is not None:
            negative_lines.append(line)
        else:
            prompt_lines.append(line)
    prompt = "\n".join(prompt_lines).strip()
    if not prompt:
        raise UsageError("parameters: no prompt (the first line is the prompt)")
    params = RenderParameters(
        prompt=prompt, negative_prompt="\n".join(negative_lines or []).strip()
    )
    if "Steps" in settings:
        params = replace(params, steps=int(_number("Steps", settings["Steps"], int)))
    if "Sampler" in settings:
        params = replace(params, sampler=settings["Sampler"])
    if "CFG scale" in settings:
        params = replace(params, cfg_scale=_number("CFG scale", settings["CFG scale"], float))
    seeds = settings.get("Seeds", settings.get("Seed"))
    if seeds is not None:
        params = replace(params, seeds=parse_seeds(seeds))
    if "Size" in settings:
        match = re.fullmatch(r"(\d+)x(\d+)", settings["Size"])
        if match is None:
            raise UsageError(f"parameters: Size {settings['Size']!r}: write WIDTHxHEIGHT")
        width, height = int(match.group(1)), int(match.group(2))
        if width % 8 or height % 8 or not width or not height:
            raise UsageError(f"parameters: Size {width}x{height}: each side a multiple of 8")
        params = replace(params, width=width, height=height)
    extra = {k: v for k, v in settings.items() if k not in _OWN_KEYS}
    return replace(params, extra=extra)


def _looks_like_settings(line: str) -> bool:
    return bool(re.match(r"\s*(Steps|Sampler|CFG scale|Seeds?|Size):", line))


def _settings(line: str) -> dict[str, str]:
    found: dict[str, str] = {}
    position = 0
    while position < len(line):
        match = _SETTING.match(line, position)
        if match is None or match.end() == position:
            raise UsageError(f"parameters: cannot read the settings line at {line[position:]!r}")
        key, value = match.group(1).strip(), match.group(2).strip()
        found[key] = value
        position = match.end()
    return found


def infotext(
    params: RenderParameters, *, seed: int, model_hash: str | None, model: str | None
) -> str:
    """The PNG-info text of one image, as A1111 writes it (``Model hash`` is the AutoV2
    hash, which :mod:`mergelang.report.matching` matches)."""
    lines = [params.prompt]
    if params.negative_prompt:
        lines.append(f"Negative prompt: {params.negative_prompt}")
    cfg = format(params.cfg_scale, "g")
    settings = [
        f"Steps: {params.steps}",
        f"Sampler: {params.sampler}",
        f"CFG scale: {cfg}",
        f"Seed: {seed}",
        f"Size: {params.width}x{params.height}",
    ]
    if model_hash:
        settings.append(f"Model hash: {model_hash}")
    if model:
        settings.append(f"Model: {model}")
    settings += [f"{k}: {v}" for k, v in params.extra.items()]
    lines.append(", ".join(settings))
    return "\n".join(lines)
