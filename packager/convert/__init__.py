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
import time
from pathlib import Path

import numpy as np

from edge_runtime.errors import UserError

from . import onnx2tf_backend
from .errors import ConversionFailed
from .strategies import STRATEGIES, Strategy

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


def _attempt(strategy: Strategy, proto, workdir: Path, samples, check, budget, verbose):
    """One strategy: lower, convert, check. Returns (Conversion parts, lowering notes)."""
    import onnx

    lowering: list[str] = []
    if strategy.lower is not None:
        proto = copy.deepcopy(proto)
        try:
            lowering = strategy.lower(proto)
        except UserError as exc:
            raise ConversionFailed(f"lowering refused: {exc.message}") from None
        proto = onnx.shape_inference.infer_shapes(proto)
    workdir.mkdir(parents=True)
    model_path = workdir / "model.onnx"
    onnx.save(proto, str(model_path))
    saved_model = onnx2tf_backend.convert(model_path, workdir, samples, verbose, strategy.options(proto), budget)
    try:
        maps = check(saved_model)
    except UserError as exc:
        raise ConversionFailed(exc.message) from None
    return (saved_model, *maps), lowering


def convert(proto, workdir: Path, samples: dict[str, np.ndarray], check, *, budget: float | None = DEFAULT_BUDGET,
            verbose: bool = False, strategies: tuple[Strategy, ...] = STRATEGIES, say=None) -> Conversion:
    """Try the strategies in order; the first whose float model checks out wins.

    Args:
        proto: the prepared, shape-fixed ONNX model.
        workdir: a private folder; each attempt gets a sub-folder.
        samples: calibration samples, (N, *shape) per input, ONNX layout.
        check: SavedModel folder -> (in_maps, out_maps, float cosines); raises
            UserError when the float model does not reproduce the ONNX model.
        budget: seconds per attempt before it is killed.
        say: called with a one-line progress message per attempt.

    Raises:
        UserError: no strategy produced a faithful float model.
    """
    attempts: list[Attempt] = []
    for index, strategy in enumerate(s for s in strategies if s.applies(proto)):
        if say:
            say(f"trying {strategy.name}: {strategy.what}")
        start = time.perf_counter()
        try:
            (saved_model, in_maps, out_maps, scores), lowering = _attempt(
                strategy, proto, workdir / f"attempt-{index}-{strategy.name}", samples, check, budget, verbose
            )
        except ConversionFailed as exc:
            attempts.append(Attempt(strategy.name, False, exc.reason, exc.ops,
                                    round(time.perf_counter() - start, 1), []))
            if say:
                say(f"  {strategy.name} failed: {exc.reason}")
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
