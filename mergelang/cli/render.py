"""``mergelang render OUTPUTS... --params FILE``: images of a sweep's outputs, then the page.

Needs the ``render`` extra (``pip install 'mergelang[render]'``: diffusers, transformers and
open_clip_torch for CLIP's tokenizer table). Each output (and ``--reference``) is loaded
into a diffusers pipeline configured from the file itself (:mod:`mergelang.render.pipeline`;
no download), rendered once per seed with the A1111-form parameters, and written as
``IMAGES/<output name>-<seed>.png`` carrying A1111's PNG info (``Model hash:`` is the file's
AutoV2 hash), so ``mergelang page`` matches every image to its output. Then the comparison
page is written (``--no-page`` skips it). An image appears whole or not at all.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

from mergelang.errors import UsageError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "render",
        help="render images of outputs with diffusers (the render extra), then the page",
        description=(
            "Render every output (and the reference model) once per seed with diffusers, "
            "with generation parameters in A1111's PNG-info text form, writing PNGs that "
            "carry A1111-style PNG info; then write the comparison page. Needs "
            "`pip install 'mergelang[render]'`; downloads nothing. SD1, SD2 and SDXL models."
        ),
    )
    parser.add_argument(
        "sources",
        metavar="OUTPUTS",
        nargs="+",
        help="output checkpoints, folders of them, or the .merge recipe that wrote them",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--params",
        metavar="FILE",
        help="a text file with the parameters in A1111's form: the prompt, then "
        "'Negative prompt: ...', then 'Steps: 20, Sampler: Euler a, CFG scale: 7, "
        "Seed: 1-4, Size: 512x512'",
    )
    what.add_argument("--prompt", help="the prompt alone (other settings: their defaults)")
    parser.add_argument("--seeds", help="seeds, overriding the parameters': 1-4 or 1,2,7")
    parser.add_argument("--steps", type=int, help="sampling steps, overriding the parameters'")
    parser.add_argument("--size", metavar="WxH", help="image size, overriding the parameters'")
    parser.add_argument(
        "--images",
        metavar="DIR",
        default="renders",
        help="the folder the images go to (default: renders)",
    )
    parser.add_argument("--reference", metavar="MODEL", help="the unmodified model, rendered too")
    parser.add_argument(
        "--device", default="cpu", help="torch device to render on: cpu, cuda, cuda:1"
    )
    parser.add_argument(
        "--dtype",
        choices=("fp32", "fp16", "bf16"),
        default=None,
        help="compute dtype (default: fp32 on CPU, fp16 on CUDA)",
    )
    parser.add_argument(
        "--prediction",
        choices=("auto", "eps", "v", "v_ztsnr"),
        default="auto",
        help="what the models predict (default auto: the file's v_pred/ztsnr markers or "
        "modelspec.predict_key, else v for SD2 and eps for SD1 and SDXL)",
    )
    parser.add_argument(
        "-o", "--output", metavar="FILE", default="page.html", help="the page (default: page.html)"
    )
    parser.add_argument("--no-page", action="store_true", help="render the images only")
    parser.add_argument("--title", help="the page's title")
    parser.add_argument("--embed", action="store_true", help="embed the images in the page")
    parser.add_argument(
        "--out-dir",
        metavar="DIR",
        help="where a recipe's relative output paths are (as given to run)",
    )
    parser.add_argument(
        "--set",
        dest="variables",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="a recipe variable, as for run (repeatable)",
    )
    parser.set_defaults(handler=run_render)


def _parameters(args: argparse.Namespace) -> object:
    from mergelang.render.parameters import RenderParameters, parse_parameters, parse_seeds

    if args.params is not None:
        try:
            text = Path(args.params).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--params {args.params}: {exc.strerror or exc}") from None
        params = parse_parameters(text)
    else:
        params = RenderParameters(prompt=args.prompt)
    if args.seeds is not None:
        params = replace(params, seeds=parse_seeds(args.seeds))
    if args.size is not None:
        sized = parse_parameters(f"{params.prompt}\nSize: {args.size}")
        params = replace(params, width=sized.width, height=sized.height)
    if args.steps is not None:
        if args.steps < 1:
            raise UsageError(f"--steps {args.steps}: at least 1")
        params = replace(params, steps=args.steps)
    return params


def _quiet_libraries() -> None:
    """diffusers and transformers log notes meant for their own users on import and load."""
    import logging

    for name in ("diffusers", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


def run_render(args: argparse.Namespace) -> int:
    from mergelang.cli.console import stdout_console
    from mergelang.cli.page import named_outputs, write_page
    from mergelang.render import require_render_extra
    from mergelang.render.parameters import RenderParameters

    params = _parameters(args)
    assert isinstance(params, RenderParameters)
    outputs, problems = named_outputs(args, "render")
    reference = None if args.reference is None else Path(args.reference)
    _quiet_libraries()
    require_render_extra()
    from mergelang.render.writer import render_models

    dtype = args.dtype or ("fp32" if args.device == "cpu" else "fp16")
    models = ([reference] if reference is not None else []) + outputs
    images = Path(args.images)
    console = stdout_console()
    written = render_models(
        models,
        params,
        images,
        device=args.device,
        dtype=dtype,
        prediction=args.prediction,
        on_image=lambda path: console.print(f"rendered {path}", markup=False, highlight=False),
    )
    console.print(f"rendered {len(written)} images into {images}", markup=False)
    if not args.no_page:
        write_page(
            outputs,
            problems,
            images,
            Path(args.output),
            reference=reference,
            title=args.title,
            hashes=True,
            embed=args.embed,
        )
    return 0
