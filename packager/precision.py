"""Stage 6 of `edgepack build`: the precision the bundle ships, chosen by the ladder (packager.ladder).

:class:`Candidates` is every model the ladder may pick, made on demand
from one conversion: float32 and float16 exports, the graph calibrated once
for LiteRT Quantizer, the TFLite converter's full-integer model, and the
repaired graph (packager.repairs) converted again with the same strategy.
"""

from __future__ import annotations

import copy
import dataclasses
import functools

import numpy as np

from edge_runtime.errors import UserError

from .fidelity import RATES, Bar
from .ladder import RATE_VALIDATION, VALIDATION, Bench, Ladder, Outcome, float_model
from .ladder.rungs import SEARCH_CALIBRATION
from .quantize import (
    Calibrated,
    Quantized,
    converter_int8,
    export_float,
    export_float16,
)
from .quiet import captured_output
from .report import detail, warn


@dataclasses.dataclass
class Candidates:
    """The models the ladder can choose from; each made once, when the ladder first asks."""

    conversion: object  # packager.convert.Conversion
    calib: dict[str, np.ndarray]
    io_dtype: str
    per_tensor: bool
    verbose: bool
    pinned: dict | None  # {input: (min, max)} ranges calibration does not choose (pixel inputs)
    reconvert: object  # (proto, workdir name) -> Conversion | None: the same strategy on another graph
    prepared: object  # the prepared ONNX graph the conversion started from (repairs start from it too)

    @functools.cached_property
    def float32(self) -> Quantized:
        return float_model(self._float_tflite, "float32")

    @functools.cached_property
    def _float_tflite(self) -> bytes:
        return export_float(self.conversion.saved_model, self.verbose)

    def float16(self) -> Quantized:
        return float_model(export_float16(self.conversion.saved_model, self.verbose), "float16")

    @functools.cached_property
    def calibrated(self) -> Calibrated:
        return self._calibrate(self._float_tflite, self.conversion.in_maps)

    def converter_int8(self, io_dtype: str | None = None, limit: int | None = None) -> Quantized:
        """The TFLite converter's full-integer model (its own calibration, on at most ``limit`` samples)."""
        return converter_int8(self.conversion.saved_model, self.conversion.in_maps, thinned(self.calib, limit),
                              io_dtype or self.io_dtype, self.per_tensor, self.verbose)

    def repaired(self) -> Calibrated | None:
        """The float graph repaired (packager.repairs), converted again; None when no repair applies."""
        from .repairs import equalize, fuse_activations

        proto = copy.deepcopy(self.prepared)
        changes = [change for repair in (fuse_activations, equalize) for change in repair(proto)]
        if not changes:
            return None
        for change in changes:
            detail(f"repair: {change}")
        try:
            again = self.reconvert(proto, "repaired")
        except UserError as exc:
            warn(f"the repaired graph did not convert ({exc}); going on without it")
            return None
        return self._calibrate(export_float(again.saved_model, self.verbose), again.in_maps, SEARCH_CALIBRATION)

    def _calibrate(self, float_tflite: bytes, in_maps, limit: int | None = None) -> Calibrated:
        return Calibrated(float_tflite, in_maps, thinned(self.calib, limit), self.io_dtype, self.per_tensor,
                          self.verbose, self.pinned)


def thinned(samples: dict[str, np.ndarray], limit: int | None) -> dict[str, np.ndarray]:
    """At most ``limit`` of the samples, evenly spaced (a folder sorted by class keeps every class)."""
    count = len(next(iter(samples.values()), ()))
    if limit is None or count <= limit:
        return samples
    keep = np.unique(np.linspace(0, count - 1, limit).round().astype(int))
    return {k: v[keep] for k, v in samples.items()}


BAR_FLAGS = ("min_cosine", "min_top1", "min_f1", "min_channel_cosine", "min_detection_f1", "min_exact_match")


def bar_of(opts) -> Bar:
    """The default bar with the user's overrides; 0 switches a criterion off."""
    given = {name: getattr(opts, name, None) for name in BAR_FLAGS}
    return dataclasses.replace(Bar(), **{k: (v or None) for k, v in given.items() if v is not None})


def make_bench(conversion, source, fixed_entries: list[dict], samples, verbose: bool) -> Bench:
    """Held-out samples judge the steps; the last calibration samples judge the searches. Each output's
    kind (packager.kinds) is settled here, on the float model's held-out outputs, and shown."""
    from .kinds.infer import infer_kinds

    calib, holdout = samples.calib, samples.holdout
    count = len(next(iter(calib.values())))
    with captured_output(show=verbose):
        refs = source.reference.stacked(holdout)
        kinds = infer_kinds(source.model.proto, [(m.spec.name, m.shape) for m in conversion.in_maps],
                            [(m.spec.name, m.shape) for m in conversion.out_maps], refs, source.declared)
        # a rate over samples (top-1 of classes, CTC strings) on 24 moves in 4% steps: the searches need more
        wanted = RATE_VALIDATION if any(k.kind in RATES for k in kinds.values()) else VALIDATION
        take = max(1, min(wanted, count // 4))
        validation = {k: v[count - take:] for k, v in calib.items()}
        bench = Bench(conversion.in_maps, conversion.out_maps, fixed_entries, holdout, refs, validation,
                      source.reference.stacked(validation), kinds)
    for name, kind in kinds.items():
        detail(f"output {name}: {kind.kind}{_threshold_text(kind)} ({kind.why})")
    return bench


def _threshold_text(kind) -> str:
    return f" above {kind.threshold}" if kind.threshold is not None else ""


def choose_precision(opts, candidates: Candidates, bench: Bench, profiles=(), observer=None, resume=None,
                     rungs=None) -> tuple[Outcome, Ladder]:
    """The ladder on this model for these target profiles; raises UserError when nothing may ship (without
    --accept-low-fidelity). ``observer``, ``resume``: see packager.ladder.Ladder; ``rungs``: another table."""
    bar = bar_of(opts)
    fp16 = [p.fp16_arithmetic for p in profiles]
    extra = {"rungs": rungs} if rungs is not None else {}
    # strict is auto's ladder; it differs in what it accepts as calibration data (packager.calibration)
    ladder = Ladder(bench, bar, "auto" if opts.precision == "strict" else opts.precision,
                    fp16_arithmetic=None if not fp16 or None in fp16 else all(fp16), observer=observer,
                    resume=resume, **extra)
    if candidates.io_dtype == "uint8":
        # LiteRT Quantizer writes int8 I/O only; the Edge TPU convention stays on the converter.
        outcome = ladder.only("int8 (converter, uint8 I/O)", candidates.converter_int8("uint8"))
    else:
        outcome = ladder.climb(candidates)
    if outcome.chosen is None:
        best = ladder.best()
        if not opts.accept_low_fidelity:
            raise _nothing_holds(opts, bar, ladder)
        warn(f"shipping {best.name} BELOW the fidelity bar (--accept-low-fidelity): {'; '.join(best.missing)}")
        outcome.chosen, outcome.why = best, f"--accept-low-fidelity: {best.name} came closest to the bar"
    return outcome, ladder


def _nothing_holds(opts, bar: Bar, ladder: Ladder) -> UserError:
    rows = "; ".join(f"{s.name}: {', '.join(s.missing) or 'holds the bar'}" for s in ladder.steps)
    return UserError(
        f"no {'full-integer ' if opts.precision == 'int8' else ''}model holds the fidelity bar "
        f"({bar_text(bar)}); tried: {rows}",
        "give more representative calibration data, " + (
            "drop --precision int8 to let float islands or a float precision keep the accuracy, "
            if opts.precision == "int8" else "") +
        "or ship anyway with --accept-low-fidelity (the manifest then says so)",
    )


def bar_text(bar: Bar) -> str:
    """The bar in words, one criterion per output kind (those switched off left out)."""
    parts = [("top-1", bar.min_top1, "classes/tags"), ("exact strings", bar.min_exact_match, "ctc"),
             ("F1", bar.min_f1, "score channels"), ("F1", bar.min_detection_f1, "detections"),
             ("cosine", bar.min_cosine, "regression/embedding/state"),
             ("worst channel cosine", bar.min_channel_cosine, "regression")]
    return ", ".join(f"{what} {figure} >= {value}" for figure, value, what in parts if value is not None)


def precision_entry(opts, outcome: Outcome, bar: Bar, unresolved: list[str] = ()) -> dict:
    """The manifest's ``precision``: the bar, every step tried with its figures, the chosen one and why;
    ``unresolved``: the outputs whose bar the held-out samples are too few to show (packager.fidelity)."""
    chosen = outcome.chosen
    return {
        "requested": opts.precision,
        "chosen": chosen.model.precision,
        "step": chosen.name,
        "why": outcome.why,
        "bar": dataclasses.asdict(bar),
        "meets_bar": chosen.meets,
        "accepted_low_fidelity": not chosen.meets,
        "shortfalls": chosen.missing,
        "steps": [s.row() for s in outcome.steps],
        "float32_reference": outcome.float32,
        "unresolved": list(unresolved),
    }
