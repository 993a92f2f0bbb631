"""Provenance written into every output's safetensors metadata, and read back.

Keys written by :func:`build_metadata` (every value a string, as the format requires):

``mergelang.recipe``
    The canonical recipe text that produced this output.
``mergelang.version`` / ``mergelang.format_version``
    The mergelang version, and the version of this metadata layout (``"1"``).
``mergelang.inputs``
    JSON list, one object per input: ``name`` (as in the recipe), ``file``, ``size``,
    ``sha256``, ``autov2``, ``legacy``, and ``recipe`` when the input was itself made by
    mergelang (its ``mergelang.recipe``).
``sd_merge_recipe``
    JSON in the shape A1111's checkpoint merger writes, so web UIs show it: ``type``
    (``"mergelang"``), ``recipe``, ``primary_model_hash``, ``secondary_model_hash``,
    ``tertiary_model_hash`` (sha256 of the first three inputs, or null), ``model_hashes`` (all
    of them), ``interp_method``, ``multiplier``, ``save_as_half``, ``custom_name`` (the output
    name), ``config_source``, ``bake_in_vae``, ``discard_weights``, ``is_inpainting``,
    ``is_instruct_pix2pix``.
    For a merge A1111's checkpoint merger can express (a weighted sum or add difference of
    input files with one multiplier for every key: :class:`WebuiMerge`), ``interp_method``
    (``"Weighted sum"`` / ``"Add difference"``), ``multiplier``, ``config_source`` (0, A1111's
    "A, B or C") and the primary/secondary/tertiary hashes (A, B, C of that merge) hold what
    A1111 writes; otherwise ``interp_method`` names mergelang's method and the hashes are
    those of the first three inputs.
``format``
    ``"pt"``, as A1111 writes beside its recipe.
``sd_merge_models``
    JSON ``{sha256: {"name", "legacy_hash", "sd_merge_recipe"}}`` for every input, where
    ``sd_merge_recipe`` is the input's own recipe (or null): parents' recipes nest. Entries an
    input carries in its own ``sd_merge_models`` (its ancestors) are added too, as A1111 does.
``modelspec.sai_model_spec`` (``"1.0.0"``), ``modelspec.architecture``,
``modelspec.implementation``, ``modelspec.resolution``, ``modelspec.title``,
``modelspec.merged_from``
    The Stability AI model spec keys ComfyUI and others read. The architecture keys are
    written when ``extra`` names the architecture; the title when ``extra`` gives one.

``extra`` keys with a meaning here: ``architecture`` (``sd1``, ``sd2``, ``sd2-512``, ``sdxl`` or
a model-spec id), ``variant`` (``normal``, ``inpainting``, ``pix2pix``), ``title``, and the
``sd_merge_recipe`` fields ``interp_method``, ``multiplier``, ``save_as_half``,
``config_source``, ``bake_in_vae``, ``discard_weights``. Any other ``extra`` key is copied
into the metadata as it is.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mergelang._version import __version__
from mergelang.io.hashing import FileHashes, file_hashes

FORMAT_VERSION = "1"
MODELSPEC_VERSION = "1.0.0"
RECIPE_KEY = "mergelang.recipe"
VERSION_KEY = "mergelang.version"
FORMAT_KEY = "mergelang.format_version"
INPUTS_KEY = "mergelang.inputs"
SD_MERGE_RECIPE = "sd_merge_recipe"
SD_MERGE_MODELS = "sd_merge_models"

MODELSPEC_ALIASES: dict[str, str] = {
    "sd2-512": "stable-diffusion-v2-512",
    "sd2-768-v": "stable-diffusion-v2-768-v",
}
"""Model-spec ids for names that are not registered architectures (SD2's two sizes); a
registered architecture carries its own id (``Architecture.modelspec``)."""
_RESOLUTIONS = {
    "stable-diffusion-v1": "512x512",
    "stable-diffusion-v2-512": "512x512",
    "stable-diffusion-v2-768-v": "768x768",
    "stable-diffusion-xl-v1-base": "1024x1024",
}
_VARIANT_SUFFIX = {"inpainting": "-inpainting", "pix2pix": "-instruct-pix2pix"}
_RECIPE_FIELDS = (
    "interp_method",
    "multiplier",
    "save_as_half",
    "config_source",
    "bake_in_vae",
    "discard_weights",
)
_CONSUMED = frozenset({"architecture", "variant", "title", *_RECIPE_FIELDS})


@dataclass(frozen=True)
class InputRecord:
    """One input of a merge, as recorded in the output.

    ``merge_recipe`` / ``merge_models`` are the input's own ``sd_merge_recipe`` and
    ``sd_merge_models`` metadata (JSON text) and ``recipe`` its ``mergelang.recipe``, when the
    input was itself a merge; they make the output's history nest.
    """

    name: str
    file_name: str
    size: int
    sha256: str
    autov2: str
    legacy: str
    merge_recipe: str | None = None
    merge_models: str | None = None
    recipe: str | None = None

    @classmethod
    def from_hashes(
        cls,
        name: str,
        path: str | os.PathLike[str],
        hashes: FileHashes,
        metadata: Mapping[str, str] | None = None,
    ) -> InputRecord:
        meta = metadata or {}
        return cls(
            name=name,
            file_name=Path(path).name,
            size=hashes.size,
            sha256=hashes.sha256,
            autov2=hashes.autov2,
            legacy=hashes.legacy,
            merge_recipe=meta.get(SD_MERGE_RECIPE),
            merge_models=meta.get(SD_MERGE_MODELS),
            recipe=meta.get(RECIPE_KEY),
        )

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "name": self.name,
            "file": text_file_name(self.file_name),
            "size": self.size,
            "sha256": self.sha256,
            "autov2": self.autov2,
            "legacy": self.legacy,
        }
        if text_file_name(self.file_name) != self.file_name:
            data["file_bytes"] = os.fsencode(self.file_name).hex()
        if self.recipe is not None:
            data["recipe"] = self.recipe
        return data

    @classmethod
    def from_json(cls, data: object) -> InputRecord | None:
        if not isinstance(data, dict):
            return None
        texts = [data.get(k) for k in ("name", "file", "sha256", "autov2", "legacy")]
        size = data.get("size")
        recipe = data.get("recipe")
        if not all(isinstance(t, str) for t in texts) or not isinstance(size, int):
            return None
        name, file_name, sha256, autov2, legacy = (str(t) for t in texts)
        raw = data.get("file_bytes")
        if isinstance(raw, str):
            with contextlib.suppress(ValueError):
                file_name = os.fsdecode(bytes.fromhex(raw))
        return cls(
            name,
            file_name,
            size,
            sha256,
            autov2,
            legacy,
            recipe=recipe if isinstance(recipe, str) else None,
        )


def text_file_name(name: str) -> str:
    """``name`` as Unicode text: a file name that is not UTF-8 (its bad bytes held as
    surrogate escapes) has each bad byte replaced by U+FFFD. Metadata keeps the exact bytes
    beside it (``file_bytes``, hex), so the name is stored losslessly."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", errors="replace")
    return name


def metadata_json(value: object) -> str:
    """``value`` as JSON metadata text: non-ASCII kept as is, unless it holds a surrogate
    escape (a command-line value or file name that is not UTF-8), which is written as a
    ``\\udcXX`` escape instead, so that the text is valid UTF-8 and reads back exactly."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, ensure_ascii=True)
    return text


def input_record(
    name: str,
    path: str | os.PathLike[str],
    *,
    metadata: Mapping[str, str] | None = None,
    cache_dir: Path | None = None,
) -> InputRecord:
    """Hash ``path`` (through the hash cache) and record it as the input ``name``."""
    return InputRecord.from_hashes(name, path, file_hashes(path, cache_dir=cache_dir), metadata)


def modelspec_architecture(architecture: str, variant: str = "normal") -> str:
    """The model-spec architecture id of a registered architecture (``sd1``...) and one of
    its variants; any other name passes through as an id."""
    from mergelang.arch import architecture_names, get_architecture

    name = architecture.lower()
    if name in architecture_names():
        arch = get_architecture(name)
        suffixes = arch.variants.modelspec_suffixes if arch.variants is not None else {}
        return (arch.modelspec or arch.name) + suffixes.get(variant, "")
    return MODELSPEC_ALIASES.get(name, architecture) + _VARIANT_SUFFIX.get(variant, "")


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _json_or_text(text: str | None) -> object:
    """``text`` parsed as strict JSON, or ``text`` itself when it is not.

    ``NaN`` and ``Infinity`` are refused so that what is read back can be printed as valid
    JSON again (``mergelang show --json``); nesting too deep for the parser is not JSON either.
    """
    if text is None:
        return None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return text


def _flag(text: str | None) -> bool | None:
    if text is None:
        return None
    return text.strip().lower() in ("1", "true", "yes", "on", "fp16", "half")


def _number(text: str | None) -> object:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text else value


def _merge_models(inputs: Sequence[InputRecord]) -> dict[str, object]:
    ancestors: dict[str, object] = {}
    for record in inputs:
        parents = _json_or_text(record.merge_models)
        if isinstance(parents, dict):
            ancestors.update(parents)
    direct = {
        record.sha256: {
            "name": text_file_name(record.file_name),
            "legacy_hash": record.legacy,
            "sd_merge_recipe": _json_or_text(record.merge_recipe),
        }
        for record in inputs
    }
    return {**ancestors, **direct}


WEBUI_METHODS: Mapping[str, str] = {
    "weighted_sum": "Weighted sum",
    "add_difference": "Add difference",
}
"""mergelang methods A1111's checkpoint merger has, by the ``interp_method`` it writes."""


@dataclass(frozen=True)
class WebuiMerge:
    """A merge as A1111's checkpoint merger records it: ``interp_method`` (its name of the
    method), the one ``multiplier`` and the sha256 of models A, B and C (C for add difference
    only)."""

    interp_method: str
    multiplier: float
    model_hashes: tuple[str, ...]


def build_metadata(
    *,
    recipe_text: str,
    output_name: str,
    inputs: Sequence[InputRecord],
    extra: Mapping[str, str] | None = None,
    webui: WebuiMerge | None = None,
) -> dict[str, str]:
    """The provenance metadata of one output (see the module docstring for the keys)."""
    options = dict(extra or {})
    variant = options.get("variant", "normal")
    hashes = [record.sha256 for record in inputs]
    merged = list(webui.model_hashes) if webui is not None else hashes

    def nth(index: int) -> str | None:
        return merged[index] if index < len(merged) else None

    bake = options.get("bake_in_vae")
    recipe = {
        "type": "mergelang",
        "recipe": recipe_text,
        "primary_model_hash": nth(0),
        "secondary_model_hash": nth(1),
        "tertiary_model_hash": nth(2),
        "model_hashes": hashes,
        "interp_method": (
            webui.interp_method if webui is not None else options.get("interp_method", "mergelang")
        ),
        "multiplier": webui.multiplier if webui is not None else _number(options.get("multiplier")),
        "save_as_half": bool(_flag(options.get("save_as_half"))),
        "custom_name": output_name,
        "config_source": (
            0
            if webui is not None and "config_source" not in options
            else options.get("config_source")
        ),
        "bake_in_vae": bake if bake else "None",
        "discard_weights": options.get("discard_weights", ""),
        "is_inpainting": variant == "inpainting",
        "is_instruct_pix2pix": variant == "pix2pix",
    }
    metadata: dict[str, str] = {
        RECIPE_KEY: recipe_text,
        VERSION_KEY: __version__,
        FORMAT_KEY: FORMAT_VERSION,
        INPUTS_KEY: json.dumps([r.to_json() for r in inputs], ensure_ascii=False),
        SD_MERGE_RECIPE: json.dumps(recipe, ensure_ascii=False),
        SD_MERGE_MODELS: json.dumps(_merge_models(inputs), ensure_ascii=False),
        "modelspec.sai_model_spec": MODELSPEC_VERSION,
        "format": "pt",
    }
    architecture = options.get("architecture")
    if architecture:
        spec_id = modelspec_architecture(architecture, variant)
        metadata["modelspec.architecture"] = spec_id
        metadata["modelspec.implementation"] = "sgm"
        resolution = _RESOLUTIONS.get(modelspec_architecture(architecture))
        if resolution is not None:
            metadata["modelspec.resolution"] = resolution
    if inputs:
        metadata["modelspec.merged_from"] = ", ".join(dict.fromkeys(r.name for r in inputs))
    title = options.get("title")
    if title:
        metadata["modelspec.title"] = title
    for key, value in options.items():
        if key not in _CONSUMED:
            metadata[key] = str(value)
    return metadata


@dataclass(frozen=True)
class Provenance:
    """What an output's metadata says about how it was made.

    ``merge_recipe`` and ``merge_models`` are the parsed ``sd_merge_recipe`` and
    ``sd_merge_models`` (written by mergelang or by another merger); ``problems`` lists fields
    that were present but unreadable.
    """

    recipe: str | None
    version: str | None
    format_version: str | None
    inputs: tuple[InputRecord, ...]
    merge_recipe: dict[str, object] | None
    merge_models: dict[str, object] | None
    architecture: str | None
    title: str | None
    problems: tuple[str, ...] = ()

    @property
    def tool(self) -> str | None:
        """Who made the file: ``"mergelang"``, A1111's ``"webui"``, another recipe type."""
        if self.recipe is not None:
            return "mergelang"
        kind = (self.merge_recipe or {}).get("type")
        return kind if isinstance(kind, str) else None


def read_provenance(metadata: Mapping[str, str]) -> Provenance | None:
    """Parse the provenance keys of a checkpoint's metadata; ``None`` when it has none."""
    present = (RECIPE_KEY, INPUTS_KEY, SD_MERGE_RECIPE, SD_MERGE_MODELS)
    if not any(key in metadata for key in present):
        return None
    problems: list[str] = []
    inputs: list[InputRecord] = []
    raw_inputs = metadata.get(INPUTS_KEY)
    if raw_inputs is not None:
        parsed = _json_or_text(raw_inputs)
        if isinstance(parsed, list):
            for item in parsed:
                record = InputRecord.from_json(item)
                if record is None:
                    problems.append(f"{INPUTS_KEY}: an entry is not an input record")
                else:
                    inputs.append(record)
        else:
            problems.append(f"{INPUTS_KEY} is not a JSON list")

    def json_object(key: str) -> dict[str, object] | None:
        raw = metadata.get(key)
        if raw is None:
            return None
        parsed = _json_or_text(raw)
        if isinstance(parsed, dict):
            return parsed
        problems.append(f"{key} is not a JSON object")
        return None

    merge_recipe = json_object(SD_MERGE_RECIPE)
    merge_models = json_object(SD_MERGE_MODELS)
    return Provenance(
        recipe=metadata.get(RECIPE_KEY),
        version=metadata.get(VERSION_KEY),
        format_version=metadata.get(FORMAT_KEY),
        inputs=tuple(inputs),
        merge_recipe=merge_recipe,
        merge_models=merge_models,
        architecture=metadata.get("modelspec.architecture"),
        title=metadata.get("modelspec.title"),
        problems=tuple(problems),
    )
