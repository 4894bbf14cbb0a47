"""Stage 8: what the int8 model is made of.

Ops counted by type and dtype; float ops left inside the graph are named,
because they are slow on the CPU and break the Edge TPU. Quantize ops at the
model's float inputs and dequantize ops at its float outputs (``--io-dtype
float32``) are the boundary, not float compute, and are not flagged.
"""

from __future__ import annotations

import collections

import numpy as np

FLOAT_KINDS = ("float16", "float32", "float64", "bfloat16")


def _short(name: str, limit: int = 100) -> str:
    """The converter joins fused tensors' names with ';' (thousands of characters): keep the first."""
    first = name.split(";")[0]
    return first if len(first) <= limit else first[:limit - 3] + "..."


def op_report(tflite: bytes) -> dict:
    """{"total", "counts": {op: {dtype: n}}, "float_ops": [{index, type, output}]}."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(
        model_content=tflite, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    tensors = {d["index"]: d for d in interp.get_tensor_details()}
    graph_inputs = {d["index"] for d in interp.get_input_details()}
    graph_outputs = {d["index"] for d in interp.get_output_details()}

    def dtype(index: int) -> str:
        return np.dtype(tensors[index]["dtype"]).name if index in tensors else "none"

    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    float_ops = []
    ops = interp._get_ops_details()
    for op in ops:
        ins = [int(i) for i in op["inputs"] if i >= 0]
        outs = [int(i) for i in op["outputs"]]
        name = op["op_name"]
        out_type = dtype(outs[0]) if outs else "none"
        in_type = dtype(ins[0]) if ins else "none"
        label = out_type if in_type == out_type or not ins else f"{in_type}->{out_type}"
        counts[name][label] += 1
        boundary = (name == "QUANTIZE" and set(ins) & graph_inputs) or (
            name == "DEQUANTIZE" and set(outs) & graph_outputs
        )
        if boundary:
            continue
        if any(dtype(i) in FLOAT_KINDS for i in ins + outs):
            float_ops.append(
                {"index": int(op["index"]), "type": name, "output": _short(tensors[outs[0]]["name"]) if outs else ""}
            )
    return {
        "total": len(ops),
        "counts": {op: dict(c) for op, c in sorted(counts.items())},
        "float_ops": float_ops,
    }
