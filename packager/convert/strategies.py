"""The ways through the converter, as rows of one table, tried in order.

A row says what it does, when it applies (a look at the prepared ONNX
graph), an optional graph lowering done just for this attempt, and the
onnx2tf options it sets. The build tries every row that applies until one
produces a float model that reproduces the ONNX model on the user's
samples; the first such row wins and is recorded in the manifest.

Why these rows (onnx2tf's README and issue tracker, and measurements here):
  onnx2tf            its defaults; most CNNs convert this way. Our prepare
                     stage has already simplified the graph, so onnx2tf's own
                     onnxsim run is skipped (it costs seconds, finds nothing).
  onnx2tf-unrolled   recurrent layers (LSTM/GRU/RNN) unrolled over the static
                     sequence into MatMul/Sigmoid/Tanh steps before onnx2tf:
                     its LSTM handler raises on real models (TypeError,
                     UnboundLocalError on 'dummy_tensor'), while the
                     primitive ops convert and quantize to int8 cleanly.
  onnx2tf-keep-shapes  every input kept in its ONNX layout (onnx2tf's
                     keep_shape_absolutely_input_names): for sequence and
                     feature inputs that onnx2tf would wrongly treat as
                     channels-first images.
  onnx2tf-no-strict  onnx2tf's strict layout correction off: it guesses the
                     layout of each 3-D/4-D tensor from its shape, and those
                     guesses differ on heads whose branches meet in a Concat.
  onnx2tf-unrolled-keep-shapes, onnx2tf-unrolled-no-strict
                     both at once, for recurrent models whose front end
                     also trips the layout guesses.
Every row keeps integer inputs of rank 3 or more (ids) in their ONNX layout:
onnx2tf would otherwise move them channels-last like feature maps.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

RECURRENT_OPS = ("LSTM", "GRU", "RNN")


@dataclasses.dataclass(frozen=True)
class Strategy:
    name: str
    what: str  # one line for the user
    applies: Callable  # (onnx.ModelProto) -> bool
    lower: Callable | None  # (onnx.ModelProto, Limits) -> list[str], edits a copy in place
    options: Callable  # (onnx.ModelProto) -> dict of onnx2tf.convert keyword arguments


def _always(proto) -> bool:
    return True


def _has_recurrent(proto) -> bool:
    return any(n.op_type in RECURRENT_OPS for n in proto.graph.node)


def _input_names(proto) -> list[str]:
    initializers = {t.name for t in proto.graph.initializer}
    return [i.name for i in proto.graph.input if i.name not in initializers]


@dataclasses.dataclass(frozen=True)
class Limits:
    """What an attempt may take: memory for the converter (--max-memory, MB) and time (--strategy-timeout, s)."""

    max_memory_mb: int
    seconds: float | None = None


# What onnx2tf takes to convert an unrolled graph: its worker's peak RSS and time, measured on the CRNN fixture's
# two bidirectional LSTMs unrolled over 48 and 192 steps (2,311 and 9,223 nodes: 1,017 and 1,835 MB, 240 and
# 2,171 s, on this 2-core machine under load). Memory grows with the nodes; time about with their square.
MB_PER_NODE = 0.12
BASE_MB = 750
SECONDS_PER_NODE_SQUARED = 2.5e-5


def _unroll(proto, limits: Limits) -> list[str]:
    """Recurrent layers unrolled, after the estimate of what it makes fits the memory and time budgets."""
    from edge_runtime.errors import UserError

    from . import recurrent

    size = recurrent.estimate(proto, MB_PER_NODE, BASE_MB)
    seconds = SECONDS_PER_NODE_SQUARED * size.nodes ** 2
    what = (f"unrolling {'; '.join(size.layers)} makes about {size.nodes:,} nodes, an estimated {size.megabytes:,} MB "
            f"and {seconds:,.0f} s to convert")
    if size.megabytes > limits.max_memory_mb:
        raise UserError(f"{what}, over the budget of {limits.max_memory_mb:,} MB",
                        "raise --max-memory on a machine that has it, or export the model with fewer steps "
                        "(a shorter fixed sequence: --input-shape)")
    if limits.seconds is not None and seconds > limits.seconds:
        raise UserError(f"{what}, over the time budget of {limits.seconds:,.0f} s an attempt",
                        "raise --strategy-timeout, or export the model with fewer steps (--input-shape)")
    notes = recurrent.run(proto)
    return notes + [f"unrolled graph: {size.nodes:,} nodes, about {size.megabytes:,} MB and {seconds:,.0f} s to "
                    "convert (estimated)"]


INTEGER_TYPES = (2, 3, 4, 5, 6, 7, 12, 13)  # onnx.TensorProto uint8..int64


def _integer_layout_inputs(proto) -> list[str]:
    """3-5-D integer inputs (ids): onnx2tf would move them channels-last like feature maps."""
    initializers = {t.name for t in proto.graph.initializer}
    return [i.name for i in proto.graph.input if i.name not in initializers
            and i.type.tensor_type.elem_type in INTEGER_TYPES and len(i.type.tensor_type.shape.dim) >= 3]


def _base(proto) -> dict:
    keep = _integer_layout_inputs(proto)
    return {"not_use_onnxsim": True, **({"keep_shape_absolutely_input_names": keep} if keep else {})}


def _keep_shapes(proto) -> dict:
    return {**_base(proto), "keep_shape_absolutely_input_names": _input_names(proto)}


def _no_strict(proto) -> dict:
    return {**_base(proto), "disable_strict_mode": True}


STRATEGIES: tuple[Strategy, ...] = (
    Strategy("onnx2tf", "onnx2tf, default options", _always, None, _base),
    Strategy("onnx2tf-unrolled", "recurrent layers unrolled into primitive ops, then onnx2tf",
             _has_recurrent, _unroll, _base),
    Strategy("onnx2tf-keep-shapes", "onnx2tf keeping every input in its ONNX layout", _always, None, _keep_shapes),
    Strategy("onnx2tf-no-strict", "onnx2tf with its strict layout correction off", _always, None, _no_strict),
    Strategy("onnx2tf-unrolled-keep-shapes", "recurrent layers unrolled, inputs kept in their ONNX layout",
             _has_recurrent, _unroll, _keep_shapes),
    Strategy("onnx2tf-unrolled-no-strict", "recurrent layers unrolled, strict layout correction off",
             _has_recurrent, _unroll, _no_strict),
)
