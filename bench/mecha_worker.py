"""The merge of ``bench/flux_merge.py`` through sd-mecha 1.1.8, run by the python of a separate
environment (``pip install sd-mecha==1.1.8``; never a dependency of mergelang).

sd-mecha's blocks are its own, so the weighted sum takes one ``alpha`` for every key (the
``mecha_alpha`` of the job): the same reads, float32 arithmetic and writes per key as the
per-block merge, which is what the comparison of times is about; its output is not compared
with the reference's. Usage (by ``flux_merge.py``): ``python mecha_worker.py JOB_JSON``.
"""

from __future__ import annotations

import json
import sys

import sd_mecha  # type: ignore[import-not-found, unused-ignore]
import torch


class _Quiet:
    """A stand-in for tqdm: no progress bar in the timed process."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *args: object) -> None:
        pass

    def update(self, *args: object, **kwargs: object) -> None:
        pass

    def set_postfix(self, *args: object, **kwargs: object) -> None:
        pass


def main() -> None:
    spec = json.loads(sys.argv[1])
    job = spec["job"]
    config = "flux-flux" if job["arch"].startswith("flux") else None
    models = [sd_mecha.model(path, config) for path in spec["inputs"]]
    if job["method"] == "weighted_sum":
        recipe = sd_mecha.weighted_sum(models[0], models[1], alpha=spec["mecha_alpha"])
    else:
        recipe = sd_mecha.add_difference(models[0], models[1], models[2], alpha=0.5)
    dtype = torch.float8_e4m3fn if job["out_code"] == "F8_E4M3" else torch.bfloat16
    sd_mecha.merge(
        recipe,
        output=spec["output"],
        merge_dtype=torch.float32,
        output_dtype=dtype,
        threads=1,
        strict_mandatory_keys=False,
        check_extra_keys=False,
        tqdm=_Quiet,
    )


if __name__ == "__main__":
    main()
