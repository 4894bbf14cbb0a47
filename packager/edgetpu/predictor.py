"""Edge TPU compatibility, predicted without the Edge TPU compiler.

The compiler (x86 Linux only, unmaintained) maps ops in execution order and
delegates one segment: the first op it cannot map, and every op after it,
run on the CPU. So the figure that matters is where mapping stops, and why.
Each op of the int8 .tflite is checked against Coral's documented supported
operations and model requirements (:mod:`packager.edgetpu.rules`): op type,
8-bit tensors, static shapes, the rank rule and the op's own limitations. A
prediction, not a compilation: limitations the documentation leaves vague
(sizes "that might not be mapped") are not guessed at.

The flatbuffer is read with the schema module ai-edge-litert ships: op
options (fused activation, dilation, masks) and constant buffers are not
visible through the Interpreter.
"""

from __future__ import annotations

import functools

import numpy as np

from .rules import CHECKS, EIGHT_BIT, op_inputs, op_outputs, table, tensor_reason


@functools.cache
def _schema():
    from ai_edge_litert import schema_py_generated as schema

    def names(enum) -> dict[int, str]:
        return {v: k for k, v in vars(enum).items() if not k.startswith("_")}

    return schema, names(schema.BuiltinOperator), names(schema.TensorType), names(schema.ActivationFunctionType)


class _Graph:
    """The main subgraph of a .tflite: tensors, constants and ops in execution order."""

    def __init__(self, tflite: bytes):
        schema, self.op_names, self.type_names, self.activations = _schema()
        self.model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
        self.sub = self.model.subgraphs[0]

    def op_type(self, op) -> str:
        code = self.model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        if self.op_names.get(builtin) == "CUSTOM":
            return f"CUSTOM:{(code.customCode or b'?').decode(errors='replace')}"
        return self.op_names.get(builtin, f"BUILTIN_{builtin}")

    def tensor(self, index: int):
        return self.sub.tensors[index]

    def name(self, index: int) -> str:
        raw = self.tensor(index).name
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        first = text.split(";")[0]  # the converter joins fused tensors' names with ';'
        return first if len(first) <= 60 else first[:57] + "..."

    def dtype(self, index: int) -> str:
        return self.type_names.get(self.tensor(index).type, "?")

    def shape(self, index: int) -> list[int]:
        shape = self.tensor(index).shape
        return [] if shape is None else [int(d) for d in shape]

    def dynamic(self, index: int) -> bool:
        sig = self.tensor(index).shapeSignature
        return sig is not None and any(int(d) < 0 for d in sig)

    def constant(self, index: int) -> bool:
        buffer = self.model.buffers[self.tensor(index).buffer]
        return (buffer.data is not None and len(buffer.data) > 0) or bool(getattr(buffer, "size", 0))

    def values(self, index: int) -> np.ndarray | None:
        """A constant int32/int64 tensor's values (axes, paddings), else None."""
        buffer = self.model.buffers[self.tensor(index).buffer]
        dtype = {"INT32": np.int32, "INT64": np.int64}.get(self.dtype(index))
        if dtype is None or buffer.data is None or not len(buffer.data):
            return None
        return np.frombuffer(np.asarray(buffer.data, dtype=np.uint8).tobytes(), dtype=dtype).reshape(self.shape(index))

    def all_zero(self, index: int) -> bool:
        buffer = self.model.buffers[self.tensor(index).buffer]
        if buffer.data is None:
            return False
        raw = np.asarray(buffer.data, dtype=np.uint8)
        zp = self.tensor(index).quantization
        zero_points = [] if zp is None or zp.zeroPoint is None else list(zp.zeroPoint)
        if self.dtype(index) in EIGHT_BIT and zero_points:  # quantized zero is the zero point
            values = raw.view(np.int8 if self.dtype(index) == "INT8" else np.uint8)
            return bool(np.all(values == int(zero_points[0])))
        return not raw.any()


def op_reason(g: _Graph, op, runtime: int | None = None) -> tuple[str, str | None]:
    """(op type, why it cannot run on the Edge TPU or None); runtime: the device's Edge TPU runtime."""
    op_type = g.op_type(op)
    if op_type.startswith("CUSTOM:"):
        return op_type, f"custom op {op_type[7:]} is not a TFLite built-in"
    entry = table()["ops"].get(op_type)
    if entry is None:
        return op_type, f"op {op_type} is not in the Edge TPU's supported operations"
    if runtime is not None and entry.get("runtime", 0) > runtime:
        return op_type, f"{op_type} needs Edge TPU runtime {entry['runtime']} (the target has {runtime})"
    for is_input, indices in ((True, [int(i) for i in op.inputs]), (False, op_outputs(op))):
        for position, index in enumerate(indices):
            if index < 0:
                continue
            why = tensor_reason(g, op_type, op, position, index, is_input)
            if why:
                return op_type, why
    for check in entry.get("checks", []):
        why = CHECKS[check](g, op, op_type)
        if why:
            return op_type, f"{op_type}: {why}"
    return op_type, None


def _float_io_edges(g: _Graph, ops: list) -> tuple[int, int]:
    """How many ops at the start quantize float model inputs, and at the end dequantize to float outputs.

    A model with float I/O starts with QUANTIZE (float -> int8) and ends with
    DEQUANTIZE (int8 -> float). The compiler leaves those on the CPU around
    the one Edge TPU segment: they do not stop the mapping of the ops between
    them (edgetpu_ops.toml, "Float I/O", for the compiler log that shows it).
    """
    inputs = {int(i) for i in (g.sub.inputs if g.sub.inputs is not None else [])}
    outputs = {int(i) for i in (g.sub.outputs if g.sub.outputs is not None else [])}

    def edge(op, kind: str, ends: set[int], index_of) -> bool:
        ins, outs = op_inputs(op), op_outputs(op)
        if g.op_type(op) != kind or len(ins) != 1 or len(outs) != 1:
            return False
        return index_of(ins, outs) in ends and g.dtype(ins[0] if kind == "QUANTIZE" else outs[0]) == "FLOAT32"

    lead = 0
    while lead < len(ops) and edge(ops[lead], "QUANTIZE", inputs, lambda i, o: i[0]):
        lead += 1
    trail = 0
    while trail < len(ops) - lead and edge(ops[-1 - trail], "DEQUANTIZE", outputs, lambda i, o: o[0]):
        trail += 1
    return lead, trail


def compatibility(tflite: bytes, runtime: int | None = None) -> dict:
    """Which ops the Edge TPU compiler would map, and where mapping stops.

    Args:
        runtime: the device's Edge TPU runtime version, when known: ops
            that need a newer one count as CPU ops.

    Returns:
        {"ops_total", "ops_edgetpu", "first_cpu_op": {index, type, why} or None,
        "float_io": {"quantize", "dequantize"} edge ops left on the CPU without
        stopping the mapping, "reasons": {op type: why} for every op type that
        cannot be mapped (first reason seen), "summary": one line}.
    """
    g = _Graph(tflite)
    ops = list(g.sub.operators or [])
    lead, trail = _float_io_edges(g, ops)
    first = None
    reasons: dict[str, str] = {}
    for index, op in enumerate(ops[lead:len(ops) - trail], start=lead):
        op_type, why = op_reason(g, op, runtime)
        if why is None:
            continue
        reasons.setdefault(op_type, why)
        if first is None:
            first = {"index": index, "type": op_type, "why": why}
    mapped = (first["index"] if first else len(ops) - trail) - lead
    if len(g.model.subgraphs) > 1:  # control flow: the compiler maps the main subgraph only
        reasons.setdefault("SUBGRAPHS", f"{len(g.model.subgraphs)} subgraphs (only the first is compiled)")
    float_io = {"quantize": lead, "dequantize": trail}
    return {
        "ops_total": len(ops),
        "ops_edgetpu": mapped,
        "first_cpu_op": first,
        "float_io": float_io,
        "reasons": reasons,
        "summary": summary_line(len(ops), mapped, first, float_io),
        "source": table()["source"],
    }


def summary_line(total: int, mapped: int, first: dict | None, float_io: dict | None = None) -> str:
    """'N of M ops would run on the Edge TPU; first CPU op: X (why)[; float I/O on the CPU: ...]'."""
    stop = "none" if first is None else f"{first['type']} #{first['index']} ({first['why']})"
    line = f"{mapped} of {total} ops would run on the Edge TPU; first CPU op: {stop}"
    edges = [f"{n} {kind.upper()}" for kind, n in (float_io or {}).items() if n]
    return line + (f"; float I/O on the CPU: {', '.join(edges)}" if edges else "")

