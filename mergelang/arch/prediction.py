"""What a checkpoint predicts (epsilon or v), as its marker keys say, and the rule for merges.

SDXL-family v-prediction models (NoobAI-XL v-pred and its descendants) carry empty marker
tensors that loaders read instead of guessing: ``v_pred`` says the model predicts v, and
``ztsnr`` beside it says it was trained with zero terminal SNR. A file without them is an
epsilon model. ComfyUI writes the markers and ``modelspec.predict_key`` (``"v"`` or
``"epsilon"``) when it saves such a model; A1111 and Forge read the markers.

Merging keeps weights but the markers are not weights: copying them from whichever input
happens to be first silently turns a merge of an epsilon model with a v model into one or
the other. mergelang decides from the recipe instead:

- all inputs of an output agree: the output has their prediction (and their markers);
- they differ: an error naming an input of each kind, unless the save says which the output
  has (``save ... with prediction=v``, ``prediction=v_ztsnr`` or ``prediction=eps``);
- the output's markers follow that prediction exactly, and its metadata records it in
  ``modelspec.predict_key``.

Only architectures whose data sets ``Architecture.prediction_markers`` take part; for the
others the marker keys are never written and ``prediction=`` is an error at the save.
Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Literal

__all__ = [
    "PREDICTIONS",
    "PREDICTION_HINT",
    "PREDICTION_MARKERS",
    "PREDICT_KEY",
    "PREDICT_KEY_METADATA",
    "Prediction",
    "describe_prediction",
    "marker_keys",
    "prediction_of",
]

Prediction = Literal["eps", "v", "v_ztsnr"]
PREDICTIONS: tuple[Prediction, ...] = ("eps", "v", "v_ztsnr")
"""What ``save ... with prediction=`` accepts."""

V_PRED = "v_pred"
ZTSNR = "ztsnr"
PREDICTION_MARKERS: tuple[str, ...] = (V_PRED, ZTSNR)
"""The marker keys the prediction decides: never merged, written by the rule above."""

PREDICT_KEY_METADATA = "modelspec.predict_key"
PREDICT_KEY: Mapping[Prediction, str] = {"eps": "epsilon", "v": "v", "v_ztsnr": "v"}
"""The ``modelspec.predict_key`` value written for each prediction."""

PREDICTION_HINT = (
    "say which the output predicts: save ... with prediction=v, prediction=v_ztsnr or "
    "prediction=eps"
)

_DESCRIPTIONS: Mapping[Prediction, str] = {
    "eps": "an epsilon-prediction model (no v_pred key)",
    "v": "a v-prediction model (its v_pred key)",
    "v_ztsnr": "a v-prediction model with zero terminal SNR (its v_pred and ztsnr keys)",
}


def prediction_of(keys: Collection[str], metadata: Mapping[str, str]) -> Prediction:
    """The prediction a checkpoint declares: its marker keys first (as loaders read them),
    then ``modelspec.predict_key``; epsilon when neither says otherwise. A ``ztsnr`` marker
    without ``v_pred`` means nothing to a loader and is read as epsilon."""
    if V_PRED in keys:
        return "v_ztsnr" if ZTSNR in keys else "v"
    if metadata.get(PREDICT_KEY_METADATA, "").strip().lower() == "v":
        return "v"
    return "eps"


def marker_keys(prediction: Prediction) -> tuple[str, ...]:
    """The marker keys an output of ``prediction`` holds."""
    if prediction == "v":
        return (V_PRED,)
    if prediction == "v_ztsnr":
        return (V_PRED, ZTSNR)
    return ()


def describe_prediction(prediction: Prediction) -> str:
    return _DESCRIPTIONS[prediction]
