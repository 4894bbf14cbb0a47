"""One measured rung of the precision ladder, and how it reads on the console and in the manifest."""

from __future__ import annotations

import dataclasses

from ..fidelity import summary
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
    board_ms: float | None = None  # median on the target board (--bench-on), when timed there
    float_compute: int = 0  # float ops other than the boundary conversions
    integer_compute: int = 0  # integer ops
    passed_over: str = ""  # held the bar, but not a win for speed: why (packager.ladder.speed)

    @property
    def meets(self) -> bool:
        return not self.missing

    def row(self) -> dict:
        s = summary(self.report)
        return {"step": self.name, "precision": self.model.precision, **s, "meets_bar": self.meets,
                "shortfalls": self.missing, "float_ops": len(self.model.float_ops), "size": len(self.model.tflite),
                "latency_ms": round(self.latency_ms, 3), "xnnpack_partitions": self.partitions,
                "board_ms": None if self.board_ms is None else round(self.board_ms, 3),
                "float_compute_ops": self.float_compute, "integer_compute_ops": self.integer_compute,
                "seconds": round(self.seconds, 1), "note": self.note, "passed_over": self.passed_over}


@dataclasses.dataclass
class Outcome:
    chosen: Step | None
    steps: list[Step]
    why: str
    float32: dict | None = None  # the float32 reference: latency_ms and partitions on this host, board_ms


SHOWN = (("top1", "top-1", ".1%"), ("exact_match", "strings", ".1%"), ("f1", "F1", ".3f"),
         ("detection_f1", "det F1", ".3f"), ("channel_cosine", "worst ch", ".3f"))


def line(step: Step, base_ms: float | None) -> str:
    """The step's console line: its figures, size, host speed and verdict."""
    if step.report.get("error"):
        return f"{step.name:<26} {step.report['error']}, {step.seconds:.1f} s: below the bar"
    s = summary(step.report)
    parts = [f"cos {s['cosine']:.4f}"]
    for key, label, spec in SHOWN:
        if s[key] is not None:
            parts.append(f"{label} {format(s[key], spec)}")
    ratio = f" ({step.latency_ms / base_ms:.2f}x int8)" if base_ms else ""
    board = f", board {step.board_ms:.2f} ms" if step.board_ms is not None else ""
    verdict = ("held the bar, passed over: " + step.passed_over) if step.passed_over else (
        "holds the bar" if step.meets else "below the bar")
    note = f"; {step.note}" if step.note else ""
    return (f"{step.name:<26} {', '.join(parts)}; {step.float_compute} float ops, "
            f"{len(step.model.tflite) / 1024:.0f} KB, {step.latency_ms:.2f} ms on this host{ratio}{board}, "
            f"{step.partitions} XNNPACK partition(s), {step.seconds:.1f} s: {verdict}{note}")


def compute_ops(q: Quantized) -> tuple[int, int]:
    """(float compute ops, integer compute ops) of a quantized model; the boundary conversions not counted."""
    from ..ops import op_report

    report = op_report(q.tflite)
    floats = [f for f in report["float_ops"] if f["type"] not in ("QUANTIZE", "DEQUANTIZE")]
    converts = sum(sum(c.values()) for op, c in report["counts"].items() if op in ("QUANTIZE", "DEQUANTIZE"))
    return len(floats), max(0, report["total"] - len(floats) - converts)


def not_integer(q: Quantized) -> str:
    """Why a model fails --precision int8 however close it is: the ops it leaves float (no int8 kernel)."""
    from ..ops import op_report

    found = [f["type"] for f in op_report(q.tflite)["float_ops"] if f["type"] not in ("QUANTIZE", "DEQUANTIZE")]
    kinds = ", ".join(sorted(set(found))) or "float tensors"
    return f"not full integer ({len(found)} float op(s): {kinds})"
