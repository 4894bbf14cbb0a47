"""The precision ladder: the cheapest model that holds the fidelity bar.

The rungs are rows of a table (:mod:`packager.ladder.rungs`), cheapest
first; one loop here makes each rung's model, measures it on held-out
samples through edge_runtime (as the device runs it) against float
onnxruntime (:mod:`packager.ladder.bench`), and stops at the first that wins.

A quantized step that holds the bar but is slower than the float32 model is
not a win, and the ladder goes on (unless int8 is demanded). Slower means
measured on the host (XNNPACK, 2 threads) *and* split into more XNNPACK
partitions than the float model: ops the delegate does not take in int8
(HARD_SWISH, RSQRT ...) fall back to the runtime's own kernels on the device
too, while a plain kernel-speed difference is the host's (x86 float kernels
with AVX-512 beat int8 ones; on a Cortex-A72 int8 is the fast path) and
says nothing about the board.
"""

from __future__ import annotations

import sys
import time
from typing import Callable

from ..fidelity import Bar, shortfalls
from ..preflight import PRECISIONS
from ..quantize import Quantized, QuantizerFailed, tensor_facts
from .bench import Bench
from .rungs import RUNGS, Climb, Rung
from .steps import Outcome, Step, line, margin, not_integer

SLOWER_THAN_FLOAT = 1.10  # slower than float32 by this much, with more partitions: not a win
VALIDATION = 24  # calibration samples the searches are judged on (held-out samples judge the steps)

__all__ = ["Bench", "Ladder", "Outcome", "PRECISIONS", "Step", "VALIDATION", "float_model", "margin"]


def _say(text: str) -> None:
    print(f"      {text}", file=sys.stderr, flush=True)


class Ladder:
    def __init__(self, bench: Bench, bar: Bar, precision: str = "auto", say: Callable[[str], None] = _say,
                 rungs: tuple[Rung, ...] = RUNGS):
        self.bench, self.bar, self.precision, self.say, self.rungs = bench, bar, precision, say, rungs
        self.steps: list[Step] = []
        self.float_ms: float | None = None
        self.float_partitions = 0

    def climb(self, candidates) -> Outcome:
        """Walk the rungs; the first step that holds the bar (and is not slower than float) wins."""
        self.float_ms, self.float_partitions = self.bench.speed(candidates.float32)
        self.say(f"float32 reference: {self.float_ms:.2f} ms, {self.float_partitions} XNNPACK partition(s) on the host")
        climb = Climb(candidates, self.precision, self.bar, self._judge, self.steps)
        for rung in self.rungs:
            if rung.family in ("islands", "float") and self.precision == "int8":
                break
            if not rung.applies(climb):
                continue
            started = time.perf_counter()
            try:
                made = rung.make(climb)
            except QuantizerFailed as exc:
                self.say(f"{rung.name} skipped: {exc.message}")
                continue
            step = self._step(made.name or rung.name, made.model, started, made.note)
            climb.note(step, rung.family)
            if self._wins(step):
                return self._done(step)
        return self._done(None)

    def only(self, name: str, q: Quantized) -> Outcome:
        """A one-step ladder: this model holds the bar or nothing does."""
        step = self._step(name, q, time.perf_counter())
        return self._done(step if step.meets else None)

    def best(self) -> Step:
        """The closest step to the bar (what --accept-low-fidelity ships)."""
        return max(self.steps, key=lambda s: margin(s.report, self.bar))

    def _judge(self, q: Quantized) -> float:
        return margin(self.bench.fidelity(q, validation=True), self.bar)

    def _step(self, name: str, q: Quantized, started: float, note: str = "") -> Step:
        report = self.bench.fidelity(q)
        ms, partitions = self.bench.speed(q)
        missing = [report["error"]] if report.get("error") else shortfalls(report, self.bar)
        if self.precision == "int8" and not q.strict:
            missing.append(not_integer(q))
        step = Step(name, q, report, missing, ms, partitions, time.perf_counter() - started, note)
        if step.meets and self._slower(step):
            step.note = (step.note + "; " if step.note else "") + (
                f"slower than float32 ({self.float_ms:.2f} ms, {self.float_partitions} partition(s))")
        self.steps.append(step)
        self.say(line(step, self.steps[0].latency_ms))
        return step

    def _slower(self, step: Step) -> bool:
        """Slower than float32 for a reason the device shares (see the module doc)."""
        return (step.model.precision != "float32" and self.float_ms is not None
                and step.latency_ms > self.float_ms * SLOWER_THAN_FLOAT and step.partitions > self.float_partitions)

    def _wins(self, step: Step) -> bool:
        if not step.meets:
            return False
        return self.precision == "int8" or not self._slower(step)

    def _done(self, step: Step | None) -> Outcome:
        if step is None:
            return Outcome(None, self.steps, "no step held the bar")
        if step is self.steps[0]:
            return Outcome(step, self.steps, "full int8 with min/max ranges holds the bar")
        failed = [s for s in self.steps if s is not step and not s.meets]
        slow = [s for s in self.steps if s is not step and s.meets]
        why = f"{step.name} is the first step that holds the bar"
        if failed:
            why += f"; below it: {', '.join(s.name for s in failed)}"
        if slow:
            why += f"; held it but slower than float32 on the host: {', '.join(s.name for s in slow)}"
        return Outcome(step, self.steps, why)


def float_model(tflite: bytes, precision: str) -> Quantized:
    return Quantized(tflite, precision, False, tensor_facts(tflite))
