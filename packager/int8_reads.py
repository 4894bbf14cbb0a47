"""Stage 6, after LiteRT Quantizer: an ARG_MAX or ARG_MIN reads the int8 tensor itself.

LiteRT Quantizer (0.11) has no int8 ARG_MAX: a segmenter ending in its
ArgMax (DeepLab-style exports) gets a DEQUANTIZE and a float ARG_MAX at the
end, so its "full int8" has a float op. TFLite's ARG_MAX and ARG_MIN kernels
take int8 and uint8 inputs, and with one scale for the whole tensor (scale >
0) dequantizing is increasing, so the index of the largest (smallest) int8
value is the index of the largest (smallest) dequantized value, ties
included: the same indices, with no float op. Per-axis quantized inputs keep
their DEQUANTIZE. A DEQUANTIZE nothing else reads (and that is no graph
output) is dropped.

The flatbuffer is edited with the schema classes ai-edge-litert ships, as
packager.int8_spelling does (its _Editor).
"""

from __future__ import annotations

from .int8_spelling import _Editor


def argmax_reads_int8(tflite: bytes) -> tuple[bytes, int]:
    """The quantized model with every ARG_MAX/ARG_MIN behind a per-tensor DEQUANTIZE reading its int8 input,
    and how many were rewired; the same bytes when none is."""
    e = _Editor(tflite)
    ops, types = e.schema.BuiltinOperator, e.schema.TensorType
    producers = {out: op for op in e.sub.operators for out in op.outputs}
    rewired = 0
    for op in e.sub.operators:
        if e.builtin(op) not in (ops.ARG_MAX, ops.ARG_MIN):
            continue
        source = producers.get(op.inputs[0])
        if source is None or e.builtin(source) != ops.DEQUANTIZE:
            continue
        quantized = e.sub.tensors[source.inputs[0]]
        q = quantized.quantization
        one_scale = q is not None and q.scale is not None and len(q.scale) == 1 and q.scale[0] > 0
        if quantized.type in (types.INT8, types.UINT8) and one_scale:
            op.inputs[0] = source.inputs[0]
            rewired += 1
    if not rewired:
        return tflite, 0
    read = {i for op in e.sub.operators for i in op.inputs} | set(e.sub.outputs)
    e.sub.operators = [op for op in e.sub.operators
                       if e.builtin(op) != ops.DEQUANTIZE or any(out in read for out in op.outputs)]
    return e.packed(), rewired
