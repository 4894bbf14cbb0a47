"""The two searches of the ladder, each judged by the model's outputs on validation samples.

* Activation ranges chosen per tensor (:mod:`packager.ranges` proposes the
  candidates and walks them).
* Float islands: blocks of ops in graph order left float, chosen by
  measuring the outputs with each block float (not each layer's own error:
  damage that is spread shows only at the outputs), then shrunk by halves.
"""

from __future__ import annotations

import math
from typing import Callable

from ..quantize import Calibrated, Quantized, QuantizerFailed, op_scopes

ISLAND_BLOCKS = 8
# The searches judge on calibration samples, which flatter the model they calibrated: aim a little above the bar.
SEARCH_TARGET = 1.003
HISTOGRAM_SAMPLES = 64


def ranges_per_tensor(cal: Calibrated, judge: Callable[[Quantized], float]) -> tuple[Quantized, str]:
    """The int8 model with a range rule per tensor chosen by ``judge`` (higher is better), and a note."""
    from ..ranges import candidates, collect, search

    hists = collect(cal.float_tflite, cal.dataset[:HISTOGRAM_SAMPLES], cal.qsv)
    cands = {n: candidates(h) for n, h in hists.items()}
    choice = search(list(cal.qsv), cands, lambda ranges: judge(cal.int8(ranges)), good_enough=SEARCH_TARGET)
    ranges = {t: cands[t][r] for t, r in choice.rules.items()}
    counts = ", ".join(f"{n} {r}" for r, n in sorted(choice.counts().items(), key=lambda x: -x[1]))
    return cal.int8(ranges), f"{len(choice.trials)} trials; {counts}"


def float_islands(cal: Calibrated, ranges: dict | None, judge: Callable[[Quantized], float]) -> tuple[Quantized, str]:
    """The fewest blocks of ops left float that bring ``judge`` to the target, and a note. A choice that
    leaves every op float after the shrink is no step: float32 with conversions around it (passed over
    wherever it holds), so it is not measured."""
    scopes = [s for t, s in op_scopes(cal.float_tflite) if s and t not in ("QUANTIZE", "DEQUANTIZE")]
    size = max(1, -(-len(scopes) // ISLAND_BLOCKS))
    blocks = [scopes[i:i + size] for i in range(0, len(scopes), size)]

    def score(chosen: list[list[str]]) -> float:
        return judge(cal.int8(ranges, [s for b in chosen for s in b]))

    gains = sorted(range(len(blocks)), key=lambda i: -score([blocks[i]]))
    chosen: list[list[str]] = []
    best = -math.inf
    for i in gains:
        chosen.append(blocks[i])
        best = score(chosen)
        if best >= SEARCH_TARGET:
            break
    if best >= SEARCH_TARGET:
        chosen = _shrink(chosen, score)
    flat = [s for b in chosen for s in b]
    if len(flat) == len(scopes):
        raise QuantizerFailed(f"no choice of float islands short of all {len(scopes)} ops reached the bar on the "
                              "validation samples: that is float32 with conversions around it")
    return cal.int8(ranges, flat), f"{len(flat)} of {len(scopes)} ops float"


def _shrink(chosen: list[list[str]], score: Callable[[list[list[str]]], float], rounds: int = 2) -> list[list[str]]:
    """Halves of each chosen block that are not needed go back to int8."""
    for _ in range(rounds):
        refined = []
        for k, block in enumerate(chosen):
            half = len(block) // 2
            kept = block
            for part in (block[:half], block[half:]):
                if not part or len(part) == len(kept):
                    continue
                trial = refined + [[s for s in kept if s not in part]] + chosen[k + 1:]
                if score(trial) >= SEARCH_TARGET:
                    kept = [s for s in kept if s not in part]
            refined.append(kept)
        chosen = [b for b in refined if b]
    return chosen
