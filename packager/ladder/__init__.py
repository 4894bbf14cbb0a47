"""The precision ladder: the cheapest model that holds the fidelity bar.

The rungs are rows of a table (:mod:`packager.ladder.rungs`), cheapest
first; one loop here makes each rung's model, measures it on held-out
samples through edge_runtime (as the device runs it) against float
onnxruntime (:mod:`packager.ladder.bench`), and stops at the first that wins:
it holds the bar (each output judged by its kind's task figure, packager.kinds)
and is not passed over for speed on the board (:mod:`packager.ladder.speed`).
"""

from __future__ import annotations

import sys
import time
from types import SimpleNamespace
from typing import Callable

from ..fidelity import Bar, margin, shortfalls, summary
from ..preflight import PRECISIONS
from ..quantize import Quantized, QuantizerFailed, tensor_facts
from .bench import Bench
from .rungs import RUNGS, Climb, Rung
from .speed import float16_note, passed_over
from .steps import Outcome, Step, line, not_integer

MAX_SHOWN = 4  # shortfalls shown under a step on the console
VALIDATION = 24  # calibration samples the searches are judged on (held-out samples judge the steps)
RATE_VALIDATION = 100  # the same for an output judged by a rate over samples (classes, CTC strings)

__all__ = ["Bench", "Ladder", "Outcome", "PRECISIONS", "RATE_VALIDATION", "Step", "VALIDATION", "float_model",
           "margin"]


def _say(text: str) -> None:
    print(f"      {text}", file=sys.stderr, flush=True)


class Ladder:
    def __init__(self, bench: Bench, bar: Bar, precision: str = "auto", say: Callable[[str], None] = _say,
                 rungs: tuple[Rung, ...] = RUNGS, fp16_arithmetic: bool | None = None, observer=None,
                 resume: dict[str, Step] | None = None):
        """``fp16_arithmetic``: whether every target CPU computes in float16 (None: unknown). ``observer``
        hears ``start(rung name)`` and ``step(rung name, Step)``; ``resume`` holds steps already measured (by
        rung name) that are taken as they are, a climb that went on after a crash (packager.ladder.apart)."""
        self.bench, self.bar, self.precision, self.say, self.rungs = bench, bar, precision, say, rungs
        self.fp16_arithmetic, self.observer, self.resume = fp16_arithmetic, observer, resume or {}
        self.steps: list[Step] = []
        self.float32: SimpleNamespace | None = None  # float32's latency_ms, partitions, board_ms

    def climb(self, candidates) -> Outcome:
        """Walk the rungs; the first step that holds the bar (and is not passed over for speed) wins."""
        ms, partitions = self.bench.speed(candidates.float32)
        self.float32 = SimpleNamespace(latency_ms=ms, partitions=partitions,
                                       board_ms=self.bench.board_speed(candidates.float32))
        board = f", {self.float32.board_ms:.2f} ms on the board" if self.float32.board_ms is not None else ""
        self.say(f"float32 reference: {ms:.2f} ms on this host{board}, {partitions} XNNPACK partition(s)")
        climb = Climb(candidates, self.precision, self.bar, self._judge, self.steps)
        for rung in self.rungs:
            if rung.family in ("islands", "float") and self.precision == "int8":
                break
            if not rung.applies(climb):
                continue
            step = self._resumed(rung) or self._make(rung, climb)
            if step is None:
                continue
            climb.note(step, rung.family)
            if self._wins(step):
                return self._done(step)
        return self._done(None)

    def _make(self, rung: Rung, climb: Climb) -> Step | None:
        """The rung's model made and measured (None when its maker cannot take the graph)."""
        if self.observer is not None:
            self.observer.start(rung.name)
        started = time.perf_counter()
        try:
            made = rung.make(climb)
        except QuantizerFailed as exc:
            self.say(f"{rung.name} skipped: {exc.message}")
            return None
        step = self._step(made.name or rung.name, made.model, started, made.note)
        if self.observer is not None:
            self.observer.step(rung.name, step)
        return step

    def _resumed(self, rung: Rung) -> Step | None:
        """A step measured before a crash (or the crash itself), taken as it was."""
        step = self.resume.get(rung.name)
        if step is not None:
            self.steps.append(step)
            self.say(line(step, self.steps[0].latency_ms) + " (measured before the restart)")
        return step

    def only(self, name: str, q: Quantized) -> Outcome:
        """A one-step ladder: this model holds the bar or nothing does."""
        step = self._step(name, q, time.perf_counter())
        return self._done(step if step.meets else None)

    def best(self) -> Step:
        """The closest step to the bar (what --accept-low-fidelity ships)."""
        return max(self.steps, key=lambda s: margin(s.report, self.bar))

    def _judge(self, q: Quantized) -> float:
        """The searches' figure: the margin to the bar, with the worst cosine as a small tie-break (a top-1 on
        24 samples moves in steps of 4%; the searches need a slope between them)."""
        report = self.bench.fidelity(q, validation=True)
        cos = summary(report)["cosine"] if not report.get("error") else None
        return margin(report, self.bar) + (0.01 * (cos - 1) if cos is not None and cos == cos else 0.0)

    def _step(self, name: str, q: Quantized, started: float, note: str = "") -> Step:
        report = self.bench.fidelity(q)
        ms, partitions = self.bench.speed(q)
        missing = [report["error"]] if report.get("error") else shortfalls(report, self.bar)
        if self.precision == "int8" and not q.strict:
            missing.append(not_integer(q))
        floats, integers = self.bench.compute_ops(q)
        if q.precision == "float16" and float16_note(self.fp16_arithmetic):
            note = (note + "; " if note else "") + float16_note(self.fp16_arithmetic)
        step = Step(name, q, report, missing, ms, partitions, time.perf_counter() - started, note,
                    self.bench.board_speed(q) if not missing else None, floats, integers)
        if step.meets and self.precision != "int8":
            step.passed_over = passed_over(step, self.float32, self.fp16_arithmetic) or ""
        self.steps.append(step)
        self.say(line(step, self.steps[0].latency_ms))
        for text in step.missing[:MAX_SHOWN]:
            self.say(f"  below: {text}")
        if len(step.missing) > MAX_SHOWN:
            self.say(f"  below: and {len(step.missing) - MAX_SHOWN} more (the manifest lists them)")
        return step

    def _wins(self, step: Step) -> bool:
        return step.meets and not step.passed_over

    def _done(self, step: Step | None) -> Outcome:
        reference = None if self.float32 is None else {k: round(v, 3) if isinstance(v, float) else v
                                                        for k, v in vars(self.float32).items()}
        if step is None:
            return Outcome(None, self.steps, "no step held the bar", reference)
        if step is self.steps[0]:
            what = "full int8" if step.model.strict or step.model.precision != "int8" else (
                f"int8 ({not_integer(step.model).removeprefix('not full integer (')[:-1]} left by the quantizer)")
            return Outcome(step, self.steps, f"{what} with min/max ranges holds the bar", reference)
        failed = [s for s in self.steps if s is not step and not s.meets]
        slow = [s for s in self.steps if s is not step and s.meets]
        why = f"{step.name} is the first step that holds the bar"
        if failed:
            why += f"; below it: {', '.join(s.name for s in failed)}"
        if slow:
            why += "; held it but passed over for speed: " + ", ".join(f"{s.name} ({s.passed_over})" for s in slow)
        return Outcome(step, self.steps, why, reference)


def float_model(tflite: bytes, precision: str) -> Quantized:
    return Quantized(tflite, precision, False, tensor_facts(tflite))
