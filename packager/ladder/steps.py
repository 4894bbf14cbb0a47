"""One measured rung of the precision ladder, and how it reads on the console and in the manifest."""

from __future__ import annotations

import dataclasses
import math

from ..fidelity import Bar, summary
from ..quantize import Quantized


@dataclasses.dataclass
class Step:
    name: str
    model: Quantized
    report: dict  # fidelity on held-out samples
    missing: list[str]  # shortfalls against the bar; [] when met
    latency_ms: float  # host, XNNPACK, median
    partitions: int  # XNNPACK partitions (1 = the delegate took one piece)
    seconds: float  # time this step took, search included
    note: str = ""

    @property
    def meets(self) -> bool:
        return not self.missing

    def row(self) -> dict:
        s = summary(self.report)
        return {"step": self.name, "precision": self.model.precision, **s, "meets_bar": self.meets,
                "shortfalls": self.missing, "float_ops": len(self.model.float_ops), "size": len(self.model.tflite),
                "latency_ms": round(self.latency_ms, 3), "xnnpack_partitions": self.partitions,
                "seconds": round(self.seconds, 1), "note": self.note}


@dataclasses.dataclass
class Outcome:
    chosen: Step | None
    steps: list[Step]
    why: str


def margin(report: dict, bar: Bar) -> float:
    """How far the figures are from the bar: min of value/threshold over what applies (>= 1 meets it)."""
    if report.get("error"):
        return -math.inf
    s = summary(report, bar)
    pairs = [(s["cosine"], bar.min_cosine), (s["channel_cosine"], bar.min_channel_cosine),
             (s["top1"], bar.min_top1), (s["f1"], bar.min_f1)]
    ratios = [v / t for v, t in pairs if v is not None and t]
    ratios = [-math.inf if math.isnan(r) else r for r in ratios]
    return min(ratios) if ratios else 1.0


def line(step: Step, base_ms: float | None) -> str:
    """The step's console line: its figures, size, host speed and verdict."""
    if step.report.get("error"):
        return f"{step.name:<26} {step.report['error']}, {step.seconds:.1f} s: below the bar"
    s = summary(step.report)
    parts = [f"cos {s['cosine']:.4f}"]
    if s["channel_cosine"] is not None:
        parts.append(f"worst ch {s['channel_cosine']:.3f}")
    if s["top1"] is not None:
        parts.append(f"top-1 {s['top1']:.1%}")
    if s["f1"] is not None:
        parts.append(f"F1 {s['f1']:.3f}")
    ratio = f" ({step.latency_ms / base_ms:.2f}x int8)" if base_ms else ""
    verdict = "holds the bar" if step.meets else "below the bar"
    note = f"; {step.note}" if step.note else ""
    return (f"{step.name:<26} {', '.join(parts)}; {len(step.model.float_ops)} float ops, "
            f"{len(step.model.tflite) / 1024:.0f} KB, {step.latency_ms:.2f} ms{ratio}, "
            f"{step.partitions} XNNPACK partition(s), {step.seconds:.1f} s: {verdict}{note}")


def not_integer(q: Quantized) -> str:
    """Why a model fails --precision int8 however close it is: the ops it leaves float (no int8 kernel)."""
    from ..ops import op_report

    found = [f["type"] for f in op_report(q.tflite)["float_ops"] if f["type"] not in ("QUANTIZE", "DEQUANTIZE")]
    kinds = ", ".join(sorted(set(found))) or "float tensors"
    return f"not full integer ({len(found)} float op(s): {kinds})"
