"""Stage 5: ONNX -> float TensorFlow SavedModel, by the first strategy that works.

The strategies (``strategies.STRATEGIES``) are tried in order. Each attempt
runs in its own process with a time budget, and its float SavedModel is
checked against onnxruntime on the user's samples (``layout.map_tensors``);
the first attempt that reproduces the ONNX model wins. Quantization is ours,
not the converter's (stage 6), so every strategy gets the same calibrated
int8 path. When every attempt fails, the error lists each with its reason
and the ONNX ops involved.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import time
from pathlib import Path

import numpy as np

from edge_runtime.errors import UserError

from . import onnx2tf_backend
from .errors import ConversionFailed
from .strategies import STRATEGIES, Limits, Strategy

DEFAULT_BUDGET = 600.0  # seconds per attempt


@dataclasses.dataclass
class Attempt:
    strategy: str
    ok: bool
    reason: str  # "" when it worked
    ops: list[str]  # ONNX ops the failure points at
    seconds: float
    lowering: list[str]  # what the strategy's own graph lowering changed


@dataclasses.dataclass
class Conversion:
    """The winning attempt's float model and how its tensors map onto the ONNX ones."""

    saved_model: Path
    in_maps: list
    out_maps: list
    float_cosine: dict[str, float]
    strategy: str
    attempts: list[Attempt]

    def report(self) -> dict:
        return {"strategy": self.strategy, "attempts": [dataclasses.asdict(a) for a in self.attempts]}


# onnx2tf's own op handlers raising these is a bug in the handler: no layout option changes it.
HANDLER_BUGS = re.compile(r"^(TypeError|UnboundLocalError|AttributeError|NameError|KeyError|IndexError)\b|No module named")
RUNAWAY = ("killed after its time budget", "lowering refused")


def default_limits() -> Limits:
    """This machine's memory budget for a conversion: 80% of its memory (EDGEPACK_MAX_MEMORY_MB overrides)."""
    import os

    import psutil

    given = os.environ.get("EDGEPACK_MAX_MEMORY_MB", "")
    return Limits(int(given) if given.isdigit() else int(psutil.virtual_memory().total / 2**20 * 0.8))


def _fails_the_same_way(strategy: Strategy, attempts: list[Attempt], strategies) -> str:
    """Why an attempt would repeat one already made: the same lowering ran away or was refused, or (with no
    lowering) an op's handler failed in a way only a lowering changes. '' when it may work."""
    by_name = {s.name: s for s in strategies}
    for attempt in attempts:
        earlier = by_name.get(attempt.strategy)
        if attempt.ok or earlier is None or attempt.seconds == 0.0:
            continue
        if strategy.lower is not None and strategy.lower is earlier.lower and attempt.reason.startswith(RUNAWAY):
            return f"the same lowering failed in {attempt.strategy} ({attempt.reason[:160]})"
        if strategy.lower is None and earlier.lower is None and attempt.ops and HANDLER_BUGS.search(attempt.reason):
            return (f"{attempt.strategy} failed with the same error on the same op ({attempt.ops[0]}: "
                    f"{attempt.reason[:120]}), which no layout option changes")
    return ""


def _attempt(strategy: Strategy, proto, workdir: Path, samples, check, budget, verbose, limits: Limits, say=None):
    """One strategy: lower, convert, check. Returns (Conversion parts, lowering notes)."""
    import onnx

    lowering: list[str] = []
    if strategy.lower is not None:
        proto = copy.deepcopy(proto)
        try:
            lowering = strategy.lower(proto, limits)
        except UserError as exc:
            raise ConversionFailed(f"lowering refused: {exc.message}") from None
        proto = onnx.shape_inference.infer_shapes(proto)
    workdir.mkdir(parents=True)
    model_path = workdir / "model.onnx"
    onnx.save(proto, str(model_path))
    saved_model = onnx2tf_backend.convert(model_path, workdir, samples, verbose, strategy.options(proto), budget,
                                          progress=say and (lambda seconds: say(f"  {strategy.name}: still converting "
                                                                               f"after {seconds:.0f} s")))
    try:
        maps = check(saved_model)
    except UserError as exc:
        raise ConversionFailed(exc.message) from None
    return (saved_model, *maps), lowering


def convert(proto, workdir: Path, samples: dict[str, np.ndarray], check, *, budget: float | None = DEFAULT_BUDGET,
            verbose: bool = False, strategies: tuple[Strategy, ...] = STRATEGIES, say=None,
            limits: Limits | None = None) -> Conversion:
    """Try the strategies in order; the first whose float model checks out wins.

    Args:
        proto: the prepared, shape-fixed ONNX model.
        workdir: a private folder; each attempt gets a sub-folder.
        samples: calibration samples, (N, *shape) per input, ONNX layout.
        check: SavedModel folder -> (in_maps, out_maps, float cosines); raises
            UserError when the float model does not reproduce the ONNX model.
        budget: seconds per attempt before it is killed.
        say: called with a one-line progress message per attempt.
        limits: the memory budget of a lowering (default: this machine's, packager.convert.limits).

    Raises:
        UserError: no strategy produced a faithful float model.
    """
    limits = dataclasses.replace(limits or default_limits(), seconds=budget)
    attempts: list[Attempt] = []
    for index, strategy in enumerate(s for s in strategies if s.applies(proto)):
        same = _fails_the_same_way(strategy, attempts, strategies)
        if same:
            attempts.append(Attempt(strategy.name, False, same, [], 0.0, []))
            if say:
                say(f"{strategy.name} skipped: {same}")
            continue
        if say:
            say(f"trying {strategy.name}: {strategy.what}")
        start = time.perf_counter()
        try:
            (saved_model, in_maps, out_maps, scores), lowering = _attempt(
                strategy, proto, workdir / f"attempt-{index}-{strategy.name}", samples, check, budget, verbose,
                limits, say)
        except ConversionFailed as exc:
            attempts.append(Attempt(strategy.name, False, exc.reason, exc.ops,
                                    round(time.perf_counter() - start, 1), []))
            if say:
                say(f"  {strategy.name} failed after {time.perf_counter() - start:.0f} s: {exc.reason}")
            continue
        attempts.append(Attempt(strategy.name, True, "", [], round(time.perf_counter() - start, 1), lowering))
        return Conversion(saved_model, in_maps, out_maps, scores, strategy.name, attempts)
    listed = "\n".join(
        f"  {a.strategy} ({a.seconds:g} s): {a.reason}" + (f" [ops: {', '.join(a.ops[:4])}]" if a.ops else "")
        for a in attempts
    )
    raise UserError(
        f"no conversion strategy reproduced the model ({len(attempts)} tried):\n{listed}",
        "run with -v for the converters' full logs; simplify or re-export the model, or report the ops named above",
    )
