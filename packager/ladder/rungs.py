"""The rungs of the precision ladder, cheapest first, as rows of one table.

Each row: a name, a family, when it applies (given what the climb has seen
so far) and how its model is made. :class:`packager.ladder.Ladder` walks the
rows in order, measures each model that is made and stops at the first that
wins. Families:

* ``int8``: full int8 of the converted float graph: LiteRT Quantizer with
  min/max ranges (the TFLite converter's model when the Quantizer cannot
  take the graph); the TFLite converter's full-integer model (it calibrates
  differently and wins on some small models); ranges chosen per tensor;
* ``repaired``: full int8 of the repaired float graph (packager.repairs),
  when a repair applies; its ranges are searched only when the repair
  brought min/max closer to the bar;
* ``islands``: int8 with float islands: output joins of ranges far apart
  (no search), then the fewest blocks a search finds;
* ``float``: int8 weights with float activations (dynamic range), float16,
  float32.

``--precision int8`` takes only the first two families: full integer or nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from ..fidelity import Bar, margin
from ..quantize import Calibrated, Quantized, QuantizerFailed
from .joins import JOIN_SPREAD, Joins, output_joins
from .searches import float_islands, ranges_per_tensor
from .steps import Step

# Samples the later full-int8 candidates calibrate on (the TFLite converter's own calibration, the repaired
# graph's), evenly spaced, when there are more. The first step calibrates on all of them (up to 500); these are
# the search, each judged on the held-out samples like every step, so a thinner calibration shows as a lower
# figure there, never as a wrong ship. On PP-OCRv4 rec (500 samples) the converter's calibration took 164 s,
# 77 s on 250. 128 was too few: PP-OCR cls's converter model fell from top-1 100% (160 samples) to 97.5%.
SEARCH_CALIBRATION = 250


@dataclasses.dataclass
class Made:
    model: Quantized
    note: str = ""
    name: str | None = None  # a name of its own (the islands step counts its float ops)


@dataclasses.dataclass
class Climb:
    """What the ladder has seen so far; the rungs' applies-when and makers read it."""

    candidates: object  # packager.precision.Candidates (or a stand-in): calibrated, converter_int8, repaired, ...
    precision: str  # auto | int8
    bar: Bar
    judge: Callable[[Quantized], float]  # margin on the validation samples (the searches' figure)
    steps: list[Step] = dataclasses.field(default_factory=list)
    quantizer_failed: str | None = None  # LiteRT Quantizer could not take the float graph: why
    best: Step | None = None  # the closest full-int8 step (its ranges seed the islands)
    cal: Calibrated | None = None  # the calibrated graph the islands start from (the repaired one when better)
    _repaired: object = dataclasses.field(default=None, repr=False)
    _repaired_tried: bool = False
    _joins: Joins | None = None

    @property
    def met(self) -> bool:
        """Some step held the bar (and was passed over for speed): ranges, repairs and islands serve fidelity."""
        return any(s.meets for s in self.steps)

    def repaired(self) -> Calibrated | None:
        if not self._repaired_tried:
            self._repaired_tried = True
            self._repaired = self.candidates.repaired()
        return self._repaired

    def joins(self) -> Joins:
        """The output joins to leave float (packager.ladder.joins), found once."""
        if self._joins is None:
            self._joins = output_joins(self.cal or self.candidates.calibrated)
        return self._joins

    def note(self, step: Step, family: str) -> None:
        """Keep the closest full-int8 step, and the graph it came from."""
        if family not in ("int8", "repaired") or step.model.precision != "int8":
            return
        if self.best is None or margin(step.report, self.bar) > margin(self.best.report, self.bar):
            self.best = step
            self.cal = self.repaired() if family == "repaired" else None


@dataclasses.dataclass(frozen=True)
class Rung:
    name: str
    family: str  # int8 | repaired | islands | float
    applies: Callable[[Climb], bool]
    make: Callable[[Climb], Made]


def _min_max(climb: Climb) -> Made:
    try:
        return Made(climb.candidates.calibrated.int8())
    except QuantizerFailed as exc:
        if climb.candidates.converter_int8 is None:
            raise
        climb.quantizer_failed = exc.message
        return Made(climb.candidates.converter_int8(), note=exc.message, name="int8 (TFLite converter)")


def _thinned_note(climb: Climb) -> str:
    count = len(next(iter(climb.candidates.calib.values()), ())) if getattr(climb.candidates, "calib", None) else 0
    return f"calibrated on {SEARCH_CALIBRATION} of {count} samples" if count > SEARCH_CALIBRATION else ""


def _searching(climb: Climb) -> bool:
    return not climb.met and climb.quantizer_failed is None


def _repairable(climb: Climb) -> bool:
    return _searching(climb) and climb.repaired() is not None


def _repair_helped(climb: Climb) -> bool:
    """The repaired graph's min/max step came closer to the bar than the first step: only then are its ranges
    searched (a repair that makes min/max worse starts the search lower; on PP-OCRv4 rec that search cost as
    much as the full-int8 step and ended below the bar, like every full-int8 step there)."""
    if not _repairable(climb):
        return False
    repaired = next((s for s in climb.steps if s.name == "int8 repaired, min/max"), None)
    return repaired is not None and margin(repaired.report, climb.bar) > margin(climb.steps[0].report, climb.bar)


def _floats_allowed(climb: Climb) -> bool:
    return climb.precision == "auto"


RUNGS = (
    Rung("int8, min/max", "int8", lambda c: True, _min_max),
    Rung("int8, TFLite converter", "int8",
         lambda c: _searching(c) and c.candidates.converter_int8 is not None,
         lambda c: Made(c.candidates.converter_int8(limit=SEARCH_CALIBRATION), note=_thinned_note(c))),
    Rung("int8, ranges per tensor", "int8", _searching,
         lambda c: Made(*ranges_per_tensor(c.candidates.calibrated, c.judge))),
    Rung("int8 repaired, min/max", "repaired", _repairable, lambda c: Made(c.repaired().int8(), note=_thinned_note(c))),
    Rung("int8 repaired, ranges per tensor", "repaired", _repair_helped,
         lambda c: Made(*ranges_per_tensor(c.repaired(), c.judge))),
    Rung("output joins float", "islands", lambda c: _floats_allowed(c) and not c.met and bool(c.joins().tail),
         lambda c: _joins(c, c.joins().tail, "")),
    Rung("output joins and their decode float", "islands",
         lambda c: _floats_allowed(c) and not c.met and len(c.joins().decode) > len(c.joins().tail),
         lambda c: _joins(c, c.joins().decode, ", and the unweighted ops that decode the head before them")),
    Rung("float islands", "islands", lambda c: _floats_allowed(c) and not c.met, lambda c: _islands(c)),
    Rung("dynamic range", "float", _floats_allowed, lambda c: Made(c.candidates.calibrated.dynamic())),
    Rung("float16", "float", _floats_allowed, lambda c: Made(c.candidates.float16())),
    Rung("float32", "float", _floats_allowed, lambda c: Made(c.candidates.float32)),
)


def _island_start(climb: Climb) -> tuple[Calibrated, dict | None]:
    """The calibrated graph islands are cut from, and the ranges of the closest full-int8 step."""
    return climb.cal or climb.candidates.calibrated, climb.best.model.ranges if climb.best is not None else None


def _islands(climb: Climb) -> Made:
    cal, ranges = _island_start(climb)
    model, note = float_islands(cal, ranges, climb.judge)
    return Made(model, note=note, name=f"int8 + {len(model.float_ops)} float ops")


def _joins(climb: Climb, scopes: list[str], decode: str) -> Made:
    cal, ranges = _island_start(climb)
    note = (f"joins of ranges {climb.joins().spread:.0f}x apart (>= {JOIN_SPREAD:.0f}x) left float, with the "
            f"layout ops after them{decode}: each input keeps its own int8 scale")
    return Made(cal.int8(ranges, scopes), note=note, name=f"int8 + {len(scopes)} float ops")
