"""The precision ladder: the cheapest model that holds the fidelity bar.

Steps, cheapest first, each measured on held-out samples through
edge_runtime (as the device runs it) against float onnxruntime:

1. full int8: LiteRT Quantizer with min/max ranges; the TFLite converter's
   full-integer model (it calibrates differently and wins on some small
   models); LiteRT Quantizer with ranges chosen per tensor by the outputs
   (:mod:`packager.ranges`);
2. full int8 of the repaired float graph (:mod:`packager.repairs`), when
   a repair applies;
3. int8 with the fewest float islands: blocks of ops in graph order left
   float, chosen by measuring the outputs with each block float (not each
   layer's own error: damage that is spread shows only at the outputs);
4. int8 weights with float activations (dynamic range), float16, float32.

``--precision int8`` stops after step 2: full integer or nothing.

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

import dataclasses
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from edge_runtime.delegates import left_out
from edge_runtime.errors import UserError

from .fidelity import Bar, compare, shortfalls, state_outputs, summary
from .quiet import captured_output
from .quantize import Calibrated, Quantized, QuantizerFailed, op_scopes, tensor_facts

PRECISIONS = ("auto", "int8")
ISLAND_BLOCKS = 8
SLOWER_THAN_FLOAT = 1.10  # slower than float32 by this much, with more partitions: not a win
VALIDATION = 24  # calibration samples the searches are judged on (held-out samples judge the steps)
# The searches judge on calibration samples, which flatter the model they calibrated: aim a little above the bar.
SEARCH_TARGET = 1.003


def io_entry(tmap, facts: dict) -> dict:
    """A manifest input/output: the ONNX contract plus its TFLite tensor."""
    spec = tmap.spec
    return {
        "name": spec.name,
        "shape": list(tmap.shape),
        "declared_shape": list(spec.shape),
        "dtype": spec.dtype,
        "permutation": list(tmap.permutation),
        "signature_key": tmap.key,
        **facts[tmap.key],
    }


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


class Bench:
    """Runs candidate models through edge_runtime: fidelity and host latency."""

    def __init__(self, in_maps, out_maps, fixed_inputs: list[dict], holdout: dict, holdout_refs: dict,
                 validation: dict, validation_refs: dict):
        self.in_maps, self.out_maps, self.fixed_inputs = in_maps, out_maps, fixed_inputs
        self.holdout, self.holdout_refs = holdout, holdout_refs
        self.validation, self.validation_refs = validation, validation_refs
        self.states = state_outputs([(m.spec.name, m.shape) for m in in_maps], [(m.spec.name, m.shape) for m in out_maps])
        self._dir = tempfile.TemporaryDirectory(prefix="edgepack-ladder-")
        self._last: tuple[Quantized, object] | None = None

    def model(self, q: Quantized):
        """The candidate loaded as the device loads it; the last one is kept (a step measures fidelity, then speed)."""
        if self._last is not None and self._last[0] is q:
            return self._last[1]
        from edge_runtime.interpreter import make_engine
        from edge_runtime.model import Model

        path = Path(self._dir.name) / "candidate.tflite"
        path.write_bytes(q.tflite)
        manifest = {"name": "candidate", "inputs": [io_entry(m, q.io) for m in self.in_maps],
                    "outputs": [io_entry(m, q.io) for m in self.out_maps], "fixed_inputs": self.fixed_inputs}
        with captured_output():  # the runtime announces its delegate on fd 2
            engine = make_engine(str(path), threads=2, delegate="xnnpack")
        model = Model(path.parent, manifest, engine)
        self._last = (q, model)
        return model

    def fidelity(self, q: Quantized, validation: bool = False) -> dict:
        """The fidelity report; a candidate the runtime cannot run gets {"error": why} and no outputs."""
        samples, refs = (self.validation, self.validation_refs) if validation else (self.holdout, self.holdout_refs)
        try:
            got = self.model(q).predict(dict(samples))
        except Exception as exc:  # the runtime's ValueError/RuntimeError on a model it cannot run
            return {"samples": 0, "outputs": {}, "error": f"does not run: {str(exc).strip().splitlines()[0][:160]}"}
        return compare(refs, {n: got[n] for n in refs}, len(next(iter(samples.values()))), self.states)

    def speed(self, q: Quantized, runs: int = 15) -> tuple[float, int]:
        """(median invoke ms, XNNPACK partitions) on the host; (nan, 0) when it does not run."""
        try:
            return self._speed(q, runs)
        except Exception:  # reported by fidelity() already
            return math.nan, 0

    def _speed(self, q: Quantized, runs: int) -> tuple[float, int]:
        model = self.model(q)
        model.predict({k: v[:1] for k, v in self.holdout.items()})
        interp = model.engine.interpreter
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            interp.invoke()
            times.append((time.perf_counter() - start) * 1000)
        partitions = sum(op["op_name"] == "DELEGATE" for op in interp._get_ops_details())
        return statistics.median(times), partitions


    def split_by(self, q: Quantized) -> dict[str, int]:
        """{op name: count} of the ops left outside the XNNPACK partitions: what splits the graph.

        Each boundary between partitions is a hand-off through the reference
        kernels. Empty when the model does not run.
        """
        try:
            return left_out(self.model(q).engine.interpreter)
        except Exception:  # reported by fidelity() already
            return {}


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


def _say(text: str) -> None:
    print(f"      {text}", file=sys.stderr, flush=True)


def _line(step: Step, base_ms: float | None) -> str:
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


def _not_integer(q: Quantized) -> str:
    """Why a model fails --precision int8 however close it is: the ops it leaves float (no int8 kernel)."""
    from .ops import op_report

    found = [f["type"] for f in op_report(q.tflite)["float_ops"] if f["type"] not in ("QUANTIZE", "DEQUANTIZE")]
    kinds = ", ".join(sorted(set(found))) or "float tensors"
    return f"not full integer ({len(found)} float op(s): {kinds})"


class Ladder:
    def __init__(self, bench: Bench, bar: Bar, precision: str = "auto", say: Callable[[str], None] = _say,
                 fallback: Callable[[], Quantized] | None = None):
        """``fallback`` makes the int8 step another way when LiteRT Quantizer cannot take the model."""
        self.bench, self.bar, self.precision, self.say, self.fallback = bench, bar, precision, say, fallback
        self.steps: list[Step] = []
        self.float_ms: float | None = None
        self.float_partitions = 0

    def _step(self, name: str, q: Quantized, started: float, note: str = "") -> Step:
        report = self.bench.fidelity(q)
        ms, partitions = self.bench.speed(q)
        missing = [report["error"]] if report.get("error") else shortfalls(report, self.bar)
        if self.precision == "int8" and not q.strict:
            missing.append(_not_integer(q))
        step = Step(name, q, report, missing, ms, partitions, time.perf_counter() - started, note)
        if step.meets and self._slower(step):
            step.note = (step.note + "; " if step.note else "") + (
                f"slower than float32 ({self.float_ms:.2f} ms, {self.float_partitions} partition(s))")
        self.steps.append(step)
        base = self.steps[0].latency_ms if self.steps else None
        self.say(_line(step, base))
        return step

    def _slower(self, step: Step) -> bool:
        """Slower than float32 for a reason the device shares (see the module doc)."""
        return (step.model.precision != "float32" and self.float_ms is not None
                and step.latency_ms > self.float_ms * SLOWER_THAN_FLOAT and step.partitions > self.float_partitions)

    def _wins(self, step: Step) -> bool:
        if not step.meets:
            return False
        return self.precision == "int8" or not self._slower(step)

    def int8_steps(self, cal: Calibrated, label: str = "int8") -> Step | None:
        """Step 1 (or 2 on a repaired graph): min/max, then ranges chosen per tensor."""
        from .ranges import candidates, collect, search

        started = time.perf_counter()
        try:
            q = cal.int8()
        except QuantizerFailed as exc:
            if self.fallback is None:
                raise
            return self._step(f"{label} (TFLite converter)", self.fallback(), started, note=exc.message)
        first = self._step(f"{label}, min/max", q, started)
        if first.meets:  # holds the bar (if slower than float, other ranges will not change that)
            return first
        if label == "int8" and self.fallback is not None:
            # The TFLite converter calibrates differently; measured better than LiteRT Quantizer's min/max on
            # small id and recurrent models (byte MLP 0.9998 vs 0.9646, GRU 0.9994 vs 0.9847): a candidate too.
            started = time.perf_counter()
            try:
                converted = self._step(f"{label}, TFLite converter", self.fallback(), started)
            except UserError as exc:
                self.say(f"{label}, TFLite converter: skipped ({exc.message})")
            else:
                if converted.meets:
                    return converted
        started = time.perf_counter()
        hists = collect(cal.float_tflite, cal.dataset[:64], cal.qsv)
        cands = {n: candidates(h) for n, h in hists.items()}

        def judge(ranges):
            return margin(self.bench.fidelity(cal.int8(ranges), validation=True), self.bar)

        choice = search(list(cal.qsv), cands, judge, good_enough=SEARCH_TARGET)
        ranges = {t: cands[t][r] for t, r in choice.rules.items()}
        counts = ", ".join(f"{n} {r}" for r, n in sorted(choice.counts().items(), key=lambda x: -x[1]))
        step = self._step(f"{label}, ranges per tensor", cal.int8(ranges), started,
                          note=f"{len(choice.trials)} trials; {counts}")
        return step

    def islands(self, cal: Calibrated, ranges: dict | None) -> Step:
        """Step 3: the fewest blocks of ops left float that bring the outputs to the bar."""
        started = time.perf_counter()
        scopes = [s for t, s in op_scopes(cal.float_tflite) if s and t not in ("QUANTIZE", "DEQUANTIZE")]
        size = max(1, -(-len(scopes) // ISLAND_BLOCKS))
        blocks = [scopes[i:i + size] for i in range(0, len(scopes), size)]

        def judge(chosen: list[list[str]]) -> float:
            flat = [s for b in chosen for s in b]
            return margin(self.bench.fidelity(cal.int8(ranges, flat), validation=True), self.bar)

        gains = sorted(range(len(blocks)), key=lambda i: -judge([blocks[i]]))
        chosen: list[list[str]] = []
        score = -math.inf
        for i in gains:
            chosen.append(blocks[i])
            score = judge(chosen)
            if score >= SEARCH_TARGET:
                break
        # Shrink: halves of each chosen block that are not needed go back to int8.
        if score >= SEARCH_TARGET:
            for _ in range(2):
                refined = []
                for k, block in enumerate(chosen):
                    half = len(block) // 2
                    kept = block
                    for part in (block[:half], block[half:]):
                        if not part or len(part) == len(kept):
                            continue
                        trial = refined + [[s for s in kept if s not in part]] + chosen[k + 1:]
                        if judge(trial) >= SEARCH_TARGET:
                            kept = [s for s in kept if s not in part]
                    refined.append(kept)
                chosen = [b for b in refined if b]
        flat = [s for b in chosen for s in b]
        return self._step(f"int8 + {len(flat)} float ops", cal.int8(ranges, flat), started,
                          note=f"{len(flat)} of {len(scopes)} ops float")

    def climb(self, cal: Calibrated, repaired: Callable[[], Calibrated | None] | None,
              float16: Callable[[], Quantized], float32: Quantized) -> Outcome:
        """Run the ladder; the first step that holds the bar (and is not slower than float) wins."""
        self.float_ms, self.float_partitions = self.bench.speed(float32)
        self.say(f"float32 reference: {self.float_ms:.2f} ms, {self.float_partitions} XNNPACK partition(s) on the host")
        best = self.int8_steps(cal)
        if self._wins(best):
            return self._done(best)
        if best.meets and self.precision != "int8":
            # Full int8 holds the bar but is slower than float: repairs and islands serve fidelity, not speed.
            return self._climb_floats(cal, float16, float32)
        if repaired is not None:
            fixed = repaired()
            if fixed is not None:
                step = self.int8_steps(fixed, "int8 repaired")
                if self._wins(step):
                    return self._done(step)
                if margin(step.report, self.bar) > margin(best.report, self.bar):
                    best, cal = step, fixed
        if self.precision == "int8":
            return self._done(None)
        try:
            step = self.islands(cal, best.model.ranges)
            if self._wins(step):
                return self._done(step)
        except QuantizerFailed as exc:  # the int8 step came from the converter: no islands without the Quantizer
            self.say(f"float islands skipped: {exc.message}")
        return self._climb_floats(cal, float16, float32)

    def _climb_floats(self, cal: Calibrated, float16: Callable[[], Quantized], float32: Quantized) -> Outcome:
        """Step 4: int8 weights with float activations, float16, float32."""
        started = time.perf_counter()
        for name, make in (("dynamic range", cal.dynamic), ("float16", float16), ("float32", lambda: float32)):
            try:
                step = self._step(name, make(), started)
            except QuantizerFailed as exc:
                self.say(f"{name} skipped: {exc.message}")
                continue
            if self._wins(step):
                return self._done(step)
            started = time.perf_counter()
        return self._done(None)

    def only(self, name: str, q: Quantized) -> Outcome:
        """A one-step ladder: this model holds the bar or nothing does."""
        step = self._step(name, q, time.perf_counter())
        return self._done(step if step.meets else None)

    def _done(self, step: Step | None) -> Outcome:
        if step is None:
            return Outcome(None, self.steps, "no step held the bar")
        first = self.steps[0]
        if step is first:
            why = "full int8 with min/max ranges holds the bar"
        else:
            failed = [s for s in self.steps if s is not step and not s.meets]
            slow = [s for s in self.steps if s is not step and s.meets]
            why = f"{step.name} is the first step that holds the bar"
            if failed:
                why += f"; below it: {', '.join(s.name for s in failed)}"
            if slow:
                why += f"; held it but slower than float32 on the host: {', '.join(s.name for s in slow)}"
        return Outcome(step, self.steps, why)

    def best(self) -> Step:
        """The closest step to the bar (what --accept-low-fidelity ships)."""
        return max(self.steps, key=lambda s: margin(s.report, self.bar))


def float_model(tflite: bytes, precision: str) -> Quantized:
    return Quantized(tflite, precision, False, tensor_facts(tflite))
