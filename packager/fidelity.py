"""Stage 7: how close the int8 model is to the float ONNX model.

Measured on held-out samples that never calibrated the model, the int8 side
run through edge_runtime exactly as on the device, the float side in
onnxruntime. Per output: cosine (mean and worst over samples), max and mean
absolute error, and top-1 agreement where the output is a vector of class
scores.
"""

from __future__ import annotations

import numpy as np

from edge_runtime.errors import UserError

from .layout import cosine
from .reference import Reference


def is_class_scores(shape: list[int]) -> bool:
    """One axis (the last) longer than 1, the rest 1: a score per class."""
    return len(shape) >= 1 and shape[-1] >= 2 and all(d == 1 for d in shape[:-1])


def measure(model, reference: Reference, holdout: dict[str, np.ndarray]) -> dict:
    """Compare the int8 model against onnxruntime on held-out samples.

    Args:
        model: an edge_runtime Model on the new int8 model.
        reference: onnxruntime on the shape-fixed ONNX model.
        holdout: (N, *shape) per input, never used for calibration.

    Returns:
        {"samples": N, "outputs": {name: metrics}} for the manifest.
    """
    count = len(next(iter(holdout.values())))
    refs = [reference.run(holdout, i) for i in range(count)]
    got = model.predict({k: v for k, v in holdout.items()})  # stacked (N, *shape) in, stacked out
    report = {}
    for spec in model.outputs:
        name = spec["name"]
        ref = np.stack([r[name] for r in refs]).astype(np.float64)
        out = got[name].astype(np.float64)
        cosines = [cosine(r, o) for r, o in zip(ref, out)]
        err = np.abs(ref - out)
        metrics = {
            "cosine": float(np.mean(cosines)),
            "min_cosine": float(np.min(cosines)),
            "max_abs_error": float(err.max()),
            "mean_abs_error": float(err.mean()),
            "top1_agreement": None,
        }
        if is_class_scores(spec["shape"]):
            agree = ref.reshape(count, -1).argmax(1) == out.reshape(count, -1).argmax(1)
            metrics["top1_agreement"] = float(agree.mean())
        report[name] = metrics
    return {"samples": count, "outputs": report}


def check_min_cosine(report: dict, min_cosine: float | None) -> None:
    """Fail the build when an output's mean cosine is under the bar."""
    if min_cosine is None:
        return
    low = {n: m["cosine"] for n, m in report["outputs"].items() if m["cosine"] < min_cosine}
    if low:
        found = ", ".join(f"{n} {c:.4f}" for n, c in low.items())
        raise UserError(
            f"int8 fidelity below --min-cosine {min_cosine}: {found}",
            "give more representative calibration data, try without --per-tensor, "
            "or lower the bar if this accuracy is acceptable",
        )


def format_table(report: dict) -> str:
    """The fidelity figures as a small table for the terminal."""
    rows = [f"int8 vs float ONNX on {report['samples']} held-out samples:",
            f"  {'output':<28} {'cosine':>8} {'min cos':>8} {'max|err|':>10} {'mean|err|':>10} {'top-1':>7}"]
    for name, m in report["outputs"].items():
        top1 = f"{m['top1_agreement'] * 100:6.1f}%" if m["top1_agreement"] is not None else "      -"
        rows.append(
            f"  {name[:28]:<28} {m['cosine']:8.5f} {m['min_cosine']:8.5f} "
            f"{m['max_abs_error']:10.5g} {m['mean_abs_error']:10.5g} {top1:>7}"
        )
    return "\n".join(rows)
