"""Stage 4: graph preparation, run on every model before conversion.

A table of passes, each a function ``run(proto) -> list[str]`` that edits the
shape-fixed ONNX graph in place and says what it changed:

  branches     ``If`` nodes whose condition is constant (evaluated from
               constants and static shapes) replaced by the branch they take,
               first: so that every later pass sees one graph (before
               simplify, too: onnxsim needs a graph onnxruntime loads);
  dequantize   pre-quantized ONNX (onnxruntime's dynamic, QOperator and QDQ
               forms) back to float with dequantized weights, so that our own
               calibration quantizes it properly;
  functions    ops the converter has no handler for, that ONNX defines as
               functions of simpler ops (GroupNormalization, RMSNormalization,
               Attention, Swish, CastLike...), expanded into those ops;
  conv1d       1-D convolutions written as 2-D ones (Unsqueeze -> 1 x k
               Conv -> Squeeze, as tf2onnx writes Keras' Conv1D) made 1-D:
               onnx2tf lays the unsqueezed tensor out wrongly;
  simplify     constants folded and static shapes propagated (onnxsim), so
               ``Shape``/``Range``/``Gather`` chains with static answers go;
  erf          Erf (exact GELU) in its tanh form, max error 3.6e-4: TFLite
               has no Erf kernel, so such encoders never became int8;
  scalar_affine  x * s + b with scalars s, b on a feature map as a 1x1
               depthwise Conv: int8 XNNPACK refuses an ADD of a small
               constant (PP-LCNetV3's affine blocks);
  layout_hints rank-3..5 ``Constant`` nodes (what onnxsim folds e.g. a
               detector's anchor grid into) made initializers: onnx2tf
               transposes Constant nodes to channels-last blindly, which
               breaks heads whose 3-D tensors stay in ONNX order;
  slice_axes   a Slice over several axes split into one-axis Slices with
               explicit, clamped bounds: onnx2tf moves the axes channels-last
               but fills in their bounds in the old order (the STFT-as-Conv1d
               front ends of audio models);
  integer_inputs  id models whose sequence length equals the embedding
               width: onnx2tf cannot tell [1, n, n] token tensors from
               channels-last ones; an exact identity MatMul pins them.

The prepared graph must still be the user's model: it is run in onnxruntime
on the user's own samples beside the original, and a pass whose result no
longer matches stops the build with an error naming the pass. A pass either
changes the graph, finds nothing to do, says it does not apply and why
(``errors.NotApplicable``, reported with the changes), or fails: any other
exception stops the build naming the pass, never a silent skip (a skipped
dequantize left ``DynamicQuantizeLSTM`` for the converters to fail on).
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from typing import Callable

import numpy as np

from edge_runtime.errors import UserError

from .errors import NotApplicable

# Exact rewrites must reproduce the model to rounding. Turning int8 weights back
# into float removes the original's own activation rounding (the original is
# itself an approximation of the float model), and the Erf rewrite is an
# approximation: those may differ by that much.
EXACT_COSINE = 0.9999
DEQUANTIZED_COSINE = 0.99
CHECK_SAMPLES = 4


@dataclasses.dataclass(frozen=True)
class Pass:
    name: str
    run: Callable  # (onnx.ModelProto) -> list[str], edits in place
    exact: bool  # True: must reproduce the model to rounding


def _lazy(module: str) -> Callable:
    """The ``run`` of a pass module, imported when the pass first runs (importing this stage stays cheap)."""

    def run(proto) -> list[str]:
        return importlib.import_module(f"{__name__}.{module}").run(proto)

    return run


PASSES: tuple[Pass, ...] = (
    # first: quantized ops inside the branch taken (quantize_dynamic's EnableSubgraph) join the main graph
    Pass("branches", _lazy("branches"), exact=True),
    Pass("dequantize", _lazy("dequantize"), exact=False),
    Pass("functions", _lazy("functions"), exact=True),
    Pass("conv1d", _lazy("conv1d"), exact=True),  # after branches (their convs), before simplify (cleans up)
    Pass("simplify", _lazy("simplify"), exact=True),
    Pass("erf", _lazy("erf"), exact=False),  # approximate: held to the dequantize bar
    Pass("scalar_affine", _lazy("scalar_affine"), exact=True),
    Pass("layout_hints", _lazy("layout_hints"), exact=True),  # after every onnxsim run: it makes such Constants
    Pass("slice_axes", _lazy("slice_axes"), exact=True),  # after every onnxsim run: onnxsim merges the Slices again
    Pass("integer_inputs", _lazy("integer_inputs"), exact=True),  # last: onnxsim would fold its MatMul+Add into Gemm
)


@dataclasses.dataclass
class Preparation:
    """What the stage did: for the build output and the manifest."""

    changes: list[str]  # "pass: what changed", in order
    nodes_before: int
    nodes_after: int
    cosine: dict[str, float]  # per output, prepared vs original, on the user's samples (worst sample)
    seconds: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _outputs(session, samples: dict[str, np.ndarray], count: int) -> list[list[np.ndarray]]:
    names = [i.name for i in session.get_inputs()]
    return [session.run(None, {n: np.asarray(samples[n][i]) for n in names}) for i in range(count)]


def _session(proto):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _cosines(before: list, after: list, output_names: list[str]) -> dict[str, float]:
    from ..layout import cosine

    return {
        name: min(cosine(old[k], new[k]) for old, new in zip(before, after))
        for k, name in enumerate(output_names)
    }


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def _run_pass(step: Pass, proto, changes: list[str]) -> list[str]:
    """``step.run(proto)``; a pass that does not apply leaves the graph as it was and says why in ``changes``.

    Raises:
        UserError: the pass failed on this graph (its own message, or the exception it raised).
    """
    before = proto.SerializeToString()
    try:
        return step.run(proto)
    except UserError:
        raise
    except NotApplicable as exc:
        proto.ParseFromString(before)
        changes.append(f"{step.name}: does not apply ({exc})")
        return []
    except Exception as exc:
        raise UserError(
            f"graph preparation failed: pass '{step.name}' raised {_first_line(exc)}",
            "this is an edgepack bug; please report it with the model (run with -v for the traceback)",
        ) from exc


def prepare(proto, samples: dict[str, np.ndarray], passes: tuple[Pass, ...] = PASSES,
            reference: Callable | None = None) -> Preparation:
    """Run every pass on ``proto`` (shape-fixed, edited in place) and check it.

    Args:
        proto: the shape-fixed ONNX model; replaced in place by the prepared one.
        samples: calibration samples, (N, *shape) per input, ONNX layout.
        passes: the pass table (tests give their own).
        reference: (samples, count) -> [[output arrays] per sample], the
            user's original model; default: ``proto`` itself in onnxruntime.

    Raises:
        UserError: a pass failed, or its result no longer matches the model.
    """
    import onnx

    start = time.perf_counter()
    nodes_before = len(proto.graph.node)
    output_names = [o.name for o in proto.graph.output]
    count = min(CHECK_SAMPLES, len(next(iter(samples.values()))))
    original = previous = (reference or (lambda s, n: _outputs(_session(proto), s, n)))(samples, count)
    changes: list[str] = []
    scores = {name: 1.0 for name in output_names}
    for step in passes:
        made = _run_pass(step, proto, changes)
        if not made:
            continue
        try:
            proto.CopyFrom(onnx.shape_inference.infer_shapes(proto))
            onnx.checker.check_model(proto)
            outputs = _outputs(_session(proto), samples, count)
        except Exception as exc:  # onnx or onnxruntime rejected the rewritten graph
            raise UserError(
                f"graph preparation broke the model: pass '{step.name}' ({'; '.join(made)}) "
                f"made a graph that does not load: {str(exc).strip().splitlines()[0][:200]}",
                "this is an edgepack bug; please report it with the model",
            ) from None
        # Each pass answers for its own change: measured against the graph it was given.
        step_scores = _cosines(previous, outputs, output_names)
        bar = EXACT_COSINE if step.exact else DEQUANTIZED_COSINE
        worst = min(step_scores, key=step_scores.get)
        if step_scores[worst] < bar:
            raise UserError(
                f"graph preparation changed the model's results: after pass '{step.name}' "
                f"({'; '.join(made)}) output '{worst}' has cosine {step_scores[worst]:.5f} "
                f"against the graph before that pass, in onnxruntime (expected >= {bar})",
                "this is an edgepack bug; please report it with the model (run with -v for details)",
            )
        previous, scores = outputs, _cosines(original, outputs, output_names)
        changes.extend(f"{step.name}: {m}" for m in made)
    return Preparation(changes, nodes_before, len(proto.graph.node), scores, round(time.perf_counter() - start, 2))
