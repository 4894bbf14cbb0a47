"""Stage 7: how close a candidate model is to the float ONNX model, judged by what each output means.

Measured on held-out samples that never calibrated the model, the candidate
run through edge_runtime exactly as on the device, the float side in
onnxruntime. Each output has a kind (packager.kinds) and is judged by its
task figure against the bar: top-1 agreement for classes and tags, exact
strings for CTC, per-channel F1 for score maps, detection F1 after NMS for
detection heads, cosine for regression, embeddings and recurrent state.
Cosine and errors are reported for every output.

``compare`` is a pure function on arrays, so the precision ladder can judge
any candidate without a bundle; ``shortfalls`` says which part of the bar a
report misses, ``margin`` how far it is from the bar (>= 1 holds it).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .kinds import OutputKind
from .kinds.infer import infer_kinds
from .kinds.measures import measure


@dataclasses.dataclass(frozen=True)
class Bar:
    """The task figures a model must reach on held-out samples, per output kind; None skips a criterion."""

    min_top1: float | None = 0.99  # classes, tags
    min_exact_match: float | None = 0.99  # ctc: strings equal to float's
    min_f1: float | None = 0.95  # scores: every judged channel
    min_detection_f1: float | None = 0.98  # detections after NMS
    min_cosine: float | None = 0.99  # regression, embedding, state
    min_channel_cosine: float | None = None  # regression outputs' worst channel (off unless asked)
    # A score channel is judged with at least this many positives in either model: with 2 or 3 one position
    # flips F1 by 0.3, which says nothing about the model. Detections likewise.
    min_positives: int = 20
    min_detections: int = 5


def compare(refs: dict[str, np.ndarray], got: dict[str, np.ndarray], samples: int,
            kinds: dict[str, OutputKind] | None = None) -> dict:
    """The fidelity report of stacked outputs against stacked references.

    Args:
        refs: {output name: (N, *ONNX output shape)} from the float model.
        got: the same for the model under test; same names and shapes.
        samples: N, recorded in the report.
        kinds: each output's kind; inferred from the values alone when not given.

    Returns:
        {"samples": N, "outputs": {name: measures}}, in refs' order.
    """
    missing = [name for name in refs if name not in got]
    if missing:
        raise ValueError(f"no values for output(s) {missing} to compare")
    if kinds is None:
        kinds = infer_kinds(None, [], [(n, list(r.shape[1:])) for n, r in refs.items()], refs)
    outputs = {name: measure(refs[name], got[name], kinds[name], _boxes(kinds[name], refs, got)) for name in refs}
    for name, m in outputs.items():
        if m["kind"] == "regression":
            m["worst_channel"] = worst_channel(refs[name], got[name])
    return {"samples": samples, "outputs": outputs}


def _boxes(kind: OutputKind, refs: dict, got: dict) -> tuple | None:
    """(float's, the model's) boxes of detections whose boxes are another output."""
    return (refs[kind.boxes], got[kind.boxes]) if kind.boxes in refs and kind.boxes in got else None


def state_outputs(inputs: list[tuple[str, list[int]]], outputs: list[tuple[str, list[int]]]) -> set[str]:
    """Outputs shaped like an input of the model: the state a recurrent model hands back to itself."""
    shapes = {tuple(shape) for _, shape in inputs}
    return {name for name, shape in outputs if tuple(shape) in shapes and len(shape) >= 2}


def worst_channel(ref: np.ndarray, got: np.ndarray) -> dict | None:
    """The channel (axis 1 from rank 3 on, else the last) whose values, pooled over samples, agree least.

    Channels whose reference is (nearly) all zero are skipped: any noise there dominates and they carry nothing.
    """
    shape = ref.shape[1:]
    axis = 1 if len(shape) >= 3 else len(shape) - 1
    if len(shape) < 2 or shape[axis] < 2:
        return None
    r = np.moveaxis(np.asarray(ref, np.float64), axis + 1, 0).reshape(shape[axis], -1)
    g = np.moveaxis(np.asarray(got, np.float64), axis + 1, 0).reshape(shape[axis], -1)
    peak = np.abs(r).max(axis=1)
    live = np.flatnonzero((peak > 0) & (peak > 1e-6 * peak.max()))
    if not len(live):
        return None
    r, g = r[live], g[live]
    nr, ng = np.linalg.norm(r, axis=1), np.linalg.norm(g, axis=1)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        values = np.sum(r * g, 1) / (nr * ng)
    values = np.where(ng == 0, 0.0, values)  # a channel the model zeroed shares nothing with the reference
    worst = int(np.argmin(np.where(np.isnan(values), -np.inf, values)))
    return {"axis": axis, "index": int(live[worst]), "cosine": float(values[worst])}


@dataclasses.dataclass(frozen=True)
class Criterion:
    figure: str  # top1 | exact_match | f1 | detection_f1 | cosine | channel_cosine
    value: float  # as measured
    bar: float
    text: str  # the shortfall line, when below the bar
    judged: float | None = None  # what the bar is held against, when not the value (a rate over samples)


def criteria(name: str, m: dict, bar: Bar) -> list[Criterion]:
    """What judges one output: its kind's task figure(s) against the bar (a NaN output fails them)."""
    kind, out = m["kind"], []
    if kind == "classes" and bar.min_top1 is not None:
        out.append(_rate("top1", name, "top-1 agreement", m["top1_agreement"], m.get("samples"), bar.min_top1, ""))
    elif kind == "tags" and bar.min_top1 is not None:
        out.append(Criterion("top1", m["top1_agreement"], bar.min_top1, f"{name}: per-position top-1 agreement "
                             f"{m['top1_agreement']:.1%} < {bar.min_top1:.1%}"))
    elif kind == "ctc" and bar.min_exact_match is not None:
        out.append(_rate("exact_match", name, "CTC strings equal to float's", m["exact_match"], m.get("samples"),
                         bar.min_exact_match, f" (CER {m['cer']:.2%})"))
    elif kind == "scores" and bar.min_f1 is not None:
        out += [Criterion("f1", c["f1"], bar.min_f1, _channel_text(name, m, c, bar)) for c in m["channels"]
                if c["f1"] is not None and max(c["positives"], c["model_positives"]) >= bar.min_positives]
    elif kind == "detections" and bar.min_detection_f1 is not None and m["f1"] is not None \
            and max(m["detections"], m["model_detections"]) >= bar.min_detections:
        out.append(Criterion("detection_f1", m["f1"], bar.min_detection_f1,
                             f"{name}: detections after NMS F1 {m['f1']:.3f} < {bar.min_detection_f1} (matched "
                             f"{m['matched']} of {m['detections']} float, {m['model_detections']} found)"))
    if kind in ("regression", "embedding", "state") and bar.min_cosine is not None:
        out.append(Criterion("cosine", m["cosine"], bar.min_cosine, f"{name}: cosine {m['cosine']:.4f} < {bar.min_cosine}"))
    channel = m.get("worst_channel")
    if channel and bar.min_channel_cosine is not None:
        out.append(Criterion("channel_cosine", channel["cosine"], bar.min_channel_cosine,
                             f"{name}: worst channel {channel['index']} (axis {channel['axis']}) cosine "
                             f"{channel['cosine']:.3f} < {bar.min_channel_cosine}"))
    if math.isnan(m["cosine"]) and not any(c.figure == "cosine" for c in out):
        out.append(Criterion("cosine", math.nan, 1.0, f"{name}: NaN or Inf in the output"))
    return out


# A rate over samples (top-1 of classes, exact CTC strings) is held to the bar at one standard error below what
# was seen (the lower end of Wilson's interval), once there are samples enough for a perfect score to show the
# bar: 297 of 300 strings (99.0%) do not show 99%, 300 of 300 do. Fewer samples are judged by what was seen (one
# miss among fewer than 1/(1 - bar) is below the bar anyway), and the build says the bar is not shown.
STANDARD_ERRORS = 1.0
RATES = {"classes": "min_top1", "ctc": "min_exact_match"}  # the kinds judged by a rate over samples: their bar
HELD_OUT_SHARE = 5  # one calibration sample in five is held out (packager.calibration.split_holdout)


def rate_shown(rate: float, samples: int) -> float:
    """The lower end of Wilson's interval for ``rate`` seen on ``samples``, at STANDARD_ERRORS."""
    z2, n = STANDARD_ERRORS ** 2, samples
    spread = STANDARD_ERRORS * math.sqrt(max(rate * (1 - rate), 0.0) / n + z2 / (4 * n * n))
    return (rate + z2 / (2 * n) - spread) / (1 + z2 / n)


def samples_to_show(bar: float) -> int:
    """The fewest samples on which a perfect rate shows ``bar`` (n / (n + z^2) >= bar, as rate_shown rounds)."""
    n = max(1, math.floor(bar * STANDARD_ERRORS ** 2 / (1 - bar)))
    while rate_shown(1.0, n) < bar:
        n += 1
    return n


def _rate(figure: str, name: str, what: str, value: float, samples: int | None, bar: float, extra: str) -> Criterion:
    if not samples or value != value or bar >= 1 or samples < samples_to_show(bar):
        return Criterion(figure, value, bar, f"{name}: {what} {value:.1%} < {bar:.1%}{extra}")
    judged = rate_shown(value, samples)
    return Criterion(figure, value, bar, f"{name}: {what} {value:.1%} ({round(value * samples)} of {samples}; "
                     f"{judged:.1%} at one standard error) < {bar:.1%}{extra}", judged)


def unresolved(kinds: dict[str, OutputKind], samples: int, bar: Bar) -> list[str]:
    """Outputs whose rate bar (top-1 of classes, exact CTC strings) ``samples`` held-out samples cannot show.

    A rate is counted over samples: 24 that all agree show 96% at one standard error, not 99%. The bar judges
    what it can, and the build says how far that goes and how many samples would show the bar.
    """
    lines = []
    for name, kind in kinds.items():
        rate = getattr(bar, RATES[kind.kind]) if kind.kind in RATES else None
        if rate is None or rate >= 1 or samples >= samples_to_show(rate):
            continue
        need = samples_to_show(rate)
        what = "its strings" if kind.kind == "ctc" else "its top-1"
        lines.append(f"{name}: {what} judged on {samples} held-out samples: all {samples} agreeing shows "
                     f"{rate_shown(1.0, max(1, samples)):.1%} at one standard error, so the {rate:.0%} bar is not "
                     f"shown; {need} held-out samples show it (--calibration with {need * HELD_OUT_SHARE} samples)")
    return lines


def _channel_text(name: str, m: dict, c: dict, bar: Bar) -> str:
    regions = c.get("regions")
    extra = f"; regions matched {regions['matched']} of {regions['regions']}" if regions else ""
    return (f"{name}: channel {c['index']} (axis {m['axis']}) F1 {c['f1']:.3f} < {bar.min_f1} above "
            f"{m['threshold']} (precision {c['precision']:.3f}, recall {c['recall']:.3f}{extra})")


def _below(value: float, bar: float) -> bool:
    """Under the bar; NaN counts as under (a NaN output is never good enough)."""
    return not value >= bar


def shortfalls(report: dict, bar: Bar) -> list[str]:
    """One line per output and criterion that misses ``bar``; [] when it is met."""
    return [c.text for name, m in report["outputs"].items() for c in criteria(name, m, bar)
            if _below(c.value if c.judged is None else c.judged, c.bar)]


def margin(report: dict, bar: Bar) -> float:
    """How far the figures are from the bar: min of value/threshold over what judges (>= 1 meets it)."""
    if report.get("error"):
        return -math.inf
    ratios = [c.value / c.bar if c.bar else 1.0 for name, m in report["outputs"].items()
              for c in criteria(name, m, bar)]
    ratios = [-math.inf if math.isnan(r) else r for r in ratios]
    return min(ratios) if ratios else 1.0


FIGURES = ("cosine", "top1", "exact_match", "f1", "detection_f1", "channel_cosine")


def summary(report: dict, bar: Bar | None = None) -> dict:
    """The worst of each figure over all outputs (task figures where they judge): one ladder row."""
    bar = bar or Bar(min_channel_cosine=0.0)
    worst: dict[str, float | None] = {f: None for f in FIGURES}
    worst["cosine"] = _lowest([m["cosine"] for m in report["outputs"].values()])
    for name, m in report["outputs"].items():
        for c in criteria(name, m, bar):
            if c.figure != "cosine":
                worst[c.figure] = _lowest([v for v in (worst[c.figure], c.value) if v is not None])
    return worst


def _lowest(values: list[float]) -> float | None:
    """The smallest value, NaN first; None for none."""
    if not values:
        return None
    return next((v for v in values if math.isnan(v)), min(values))


def task_text(m: dict) -> str:
    """One output's task figure in a few words."""
    kind = m["kind"]
    if kind in ("classes", "tags"):
        return f"top-1 {m['top1_agreement']:.1%}"
    if kind == "ctc":
        return f"strings {m['exact_match']:.1%}, CER {m['cer']:.2%}"
    if kind == "detections":
        return "no detections" if m["f1"] is None else f"F1 {m['f1']:.3f} ({m['matched']}/{m['detections']})"
    if kind == "scores":
        judged = [c for c in m["channels"] if c["f1"] is not None]
        if not judged:
            return "no positives"
        c = min(judged, key=lambda c: c["f1"])
        regions = f", regions {c['regions']['f1']:.3f}" if c.get("regions") and c["regions"]["f1"] is not None else ""
        return f"F1 {c['f1']:.3f} [ch {c['index']}]{regions}"
    if kind == "embedding" and m.get("neighbour_agreement") is not None:
        return f"neighbours {m['neighbour_agreement']:.1%}"
    return f"rel err {m['relative_error']:.3g}"


def format_table(report: dict, precision: str = "int8") -> str:
    """The fidelity figures as a small table for the terminal (under 100 columns)."""
    rows = [f"{precision} vs float ONNX on {report['samples']} held-out samples:",
            f"  {'output':<22} {'kind':<10} {'cosine':>8} {'min cos':>8} {'max|err|':>9}  task"]
    for name, m in report["outputs"].items():
        rows.append(f"  {name[:22]:<22} {m['kind']:<10} {m['cosine']:8.5f} {m['min_cosine']:8.5f} "
                    f"{m['max_abs_error']:9.4g}  {task_text(m)}")
    return "\n".join(rows)
