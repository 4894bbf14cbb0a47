"""The Edge TPU's rules: its supported-ops table (edgetpu_ops.toml, data) and the checks it names.

Coral documents what the compiler maps: op types, 8-bit tensors, static
shapes, the rank rule (the general requirements, :func:`tensor_reason`) and
each op's own limitations (the table's `checks`, :data:`CHECKS`). A check
takes the graph view of :mod:`packager.edgetpu.predictor`, one op and its
type, and says why the op stays on the CPU, or None.
"""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path

import numpy as np

TABLE = Path(__file__).with_name("edgetpu_ops.toml")
EIGHT_BIT = ("INT8", "UINT8")
PARAMETER_TYPES = ("INT32", "INT64")  # axes, shapes, paddings, biases: fine when constant
WEIGHTED = {"CONV_2D": (1, 2), "DEPTHWISE_CONV_2D": (1, 2), "FULLY_CONNECTED": (1, 2), "TRANSPOSE_CONV": (1, 3)}
SOFTMAX_MAX = 16000


@functools.cache
def table() -> dict:
    """The supported-ops table (edgetpu_ops.toml)."""
    with TABLE.open("rb") as f:
        return tomllib.load(f)


def op_inputs(op) -> list[int]:
    return [int(i) for i in op.inputs if i >= 0]


def op_outputs(op) -> list[int]:
    return [int(i) for i in op.outputs]


def _over_one(shape: list[int]) -> int:
    return sum(1 for d in shape if d > 1)


# --- the general requirements ---------------------------------------------------------------

def tensor_reason(g, op_type: str, op, position: int, index: int, is_input: bool) -> str | None:
    """Why one input/output of an op keeps it off the Edge TPU, or None."""
    kind = g.dtype(index)
    what = f"{'input' if is_input else 'output'} '{g.name(index)}'"
    weighted = WEIGHTED.get(op_type, ())
    if is_input and position in weighted and not g.constant(index):
        return f"{op_type} {'weights' if position == weighted[0] else 'bias'} '{g.name(index)}' are not constant"
    if kind not in EIGHT_BIT:
        if not (is_input and kind in PARAMETER_TYPES and g.constant(index)):
            return f"{kind.lower()} {what}" + (" (not a compile-time constant)" if kind in PARAMETER_TYPES else "")
    if g.dynamic(index):
        return f"dynamic shape {list(g.tensor(index).shapeSignature)} of {what}"
    shape = g.shape(index)
    if not g.constant(index) and len(shape) > 3 and any(d > 1 for d in shape[:-3]):
        return f"{len(shape)}-D {what} {shape} with {_over_one(shape)} dims > 1 (only the 3 innermost may be)"
    return None


# --- the op-specific limitations (edgetpu_ops.toml `checks`) --------------------------------

def _no_fused_activation(g, op, op_type):
    act = getattr(op.builtinOptions, "fusedActivationFunction", 0) or 0
    return None if act == 0 else f"fused {g.activations.get(act, act)} activation"


def _same_dilation(g, op, op_type):
    o = op.builtinOptions
    h, w = getattr(o, "dilationHFactor", 1) or 1, getattr(o, "dilationWFactor", 1) or 1
    return None if h == w else f"dilation {h} in y but {w} in x"


def _fc_default_weights(g, op, op_type):
    fmt = getattr(op.builtinOptions, "weightsFormat", 0) or 0
    return None if fmt == 0 else f"weights format {fmt} (only the default is supported)"


def _output_1d(g, op, op_type):
    shape = g.shape(op_outputs(op)[0])
    return None if _over_one(shape) <= 1 else f"output {shape} is not 1-D"


def _concat_constant_zero_pad(g, op, op_type):
    ins = op_inputs(op)
    constants = [i for i in ins if g.constant(i)]
    if not constants:
        return None
    if len(ins) != 2:
        return f"constant input '{g.name(constants[0])}' among {len(ins)} inputs (allowed only with 2)"
    if not g.all_zero(constants[0]):
        return f"constant input '{g.name(constants[0])}' is not all zeros"
    return None


def _axes(g, op) -> list[int] | None:
    if len(op_inputs(op)) < 2:
        return None
    values = g.values(op_inputs(op)[1])
    if values is None:
        return None
    rank = len(g.shape(op_inputs(op)[0]))
    return sorted({int(a) % rank for a in values.ravel()}) if rank else []


def _axes_not_batch(g, op, op_type):
    axes = _axes(g, op)
    if axes is None:
        return "reduction axes are not a constant"
    return "reduces over the batch dimension" if 0 in axes and len(g.shape(op_inputs(op)[0])) > 1 else None


def _mean_z_multiple_of_4(g, op, op_type):
    axes, shape = _axes(g, op), g.shape(op_inputs(op)[0])
    if axes is None or not shape or (len(shape) - 1) not in axes:
        return None
    return None if shape[-1] % 4 == 0 else f"reduces over {shape[-1]} channels (needs a multiple of 4)"


def _axis_not_batch(g, op, op_type):
    axis = getattr(op.builtinOptions, "axis", 0) or 0
    return "packs along the batch dimension" if axis == 0 else None


def _pad_not_batch(g, op, op_type):
    pads = g.values(op_inputs(op)[1]) if len(op_inputs(op)) > 1 else None
    if pads is None:
        return "paddings are not a constant"
    return f"pads the batch dimension by {pads[0].tolist()}" if pads.ndim == 2 and pads[0].any() else None


def _alpha_innermost(g, op, op_type):
    shape = g.shape(op_inputs(op)[1])
    return None if all(d == 1 for d in shape[:-1]) else f"alpha {shape} is not 1-D"


def _io_3d(g, op, op_type):
    for index in (op_inputs(op)[0], op_outputs(op)[0]):
        shape = g.shape(index)
        if len(shape) > 3 and any(d > 1 for d in shape[:-3]):
            return f"'{g.name(index)}' {shape} is not 3-D"
    return None


def _softmax_1d_16000(g, op, op_type):
    shape = g.shape(op_inputs(op)[0])
    if _over_one(shape) > 1:
        return f"input {shape} is not 1-D"
    size = int(np.prod(shape)) if shape else 1
    return None if size <= SOFTMAX_MAX else f"input of {size} elements (at most {SOFTMAX_MAX})"


def _squeeze_leading_ones(g, op, op_type):
    shape, out = g.shape(op_inputs(op)[0]), g.shape(op_outputs(op)[0])
    leading = 0
    while leading < len(shape) and shape[leading] == 1:
        leading += 1
    kept = [d for d in shape[leading:]]
    return None if out[-len(kept):] == kept or not kept else f"squeezes {shape} to {out} (needs a relayout)"


def _strided_slice_unit(g, op, op_type):
    o = op.builtinOptions
    if getattr(o, "ellipsisMask", 0) or getattr(o, "newAxisMask", 0):
        return "ellipsis or new-axis mask set"
    strides = g.values(op_inputs(op)[3]) if len(op_inputs(op)) > 3 else None
    if strides is None:
        return "strides are not a constant"
    return None if np.all(strides == 1) else f"strides {strides.tolist()} (only 1 is supported)"


CHECKS = {
    "no_fused_activation": _no_fused_activation,
    "same_dilation": _same_dilation,
    "fc_default_weights": _fc_default_weights,
    "output_1d": _output_1d,
    "concat_constant_zero_pad": _concat_constant_zero_pad,
    "axes_not_batch": _axes_not_batch,
    "mean_z_multiple_of_4": _mean_z_multiple_of_4,
    "axis_not_batch": _axis_not_batch,
    "pad_not_batch": _pad_not_batch,
    "alpha_innermost": _alpha_innermost,
    "io_3d": _io_3d,
    "softmax_1d_16000": _softmax_1d_16000,
    "squeeze_leading_ones": _squeeze_leading_ones,
    "strided_slice_unit": _strided_slice_unit,
}

