"""Stage 6, before LiteRT Quantizer: HARD_SWISH, RELU_0_TO_1 and global max pools respelled in the float .tflite.

MobileNetV3, PP-LCNet and the PP-OCR models are full of hard-swish and
hard-sigmoid. The converter writes them as HARD_SWISH and RELU_0_TO_1, and
in int8 neither survives (ai-edge-litert 2.3.0, litert-quantizer 0.11):
XNNPACK takes HARD_SWISH in float only, RELU_0_TO_1 in no precision, and
LiteRT Quantizer has no int8 RELU_0_TO_1 (it leaves a DEQUANTIZE,
RELU_0_TO_1, QUANTIZE trio each time). XNNPACK's int8 path has ADD and MUL
with a fused RELU6 clamp, but no standalone RELU6, MINIMUM or MAXIMUM
(xnnpack_delegate.cc, VisitUnaryNode/VisitBinaryNode). So, exactly in float:

  HARD_SWISH(x)   = MUL(MUL(x, 1/6), ADD(x, 3, fused RELU6))
  RELU_0_TO_1(x)  = MUL(MUL(x, 6, fused RELU6), 1/6)

Measured on PP-OCR's direction classifier (LiteRT Quantizer min/max): XNNPACK
partitions 28 -> 1 (float32: 10), float ops 27 -> 0, host int8 latency about
10x lower, Edge TPU mapping 2 ops -> all; fidelity as before (mean cosine
0.99973 against 0.99968 on 150 rendered lines).

A global max pool (REDUCE_MAX over height and width of a 4-D tensor, as onnx2tf
writes GlobalMaxPool) has no int8 kernel in LiteRT Quantizer either (it stays
float between a DEQUANTIZE and a QUANTIZE); it is the same values as a
MAX_POOL_2D whose window is the whole plane, which both take in int8
(a RESHAPE after it when the reduction drops the axes).

Why here and not in the ONNX graph: the TFLite converter fuses such
spellings back into HARD_SWISH (optimize_patterns.td, MatchHardSwishPattern*),
and on those it does not fuse, its own int8 calibration puts ranges on the
wrong tensors (the x / 6 tensor got a range 3-4x too wide, the RELU6 output
the range of the product), which cost PP-OCRv4 det's converter model its
accuracy (cosine 0.94 -> 0.74 on 16 text scenes). LiteRT Quantizer calibrates each tensor of the float
.tflite it is given, so the respelled ops get their own ranges; the
converter's int8 candidate and the float rungs keep the converter's ops.
"""

from __future__ import annotations

import numpy as np

SIXTH = 1 / 6


class _Editor:
    """The main subgraph of a .tflite, with helpers to add constants, tensors and ops."""

    def __init__(self, tflite: bytes):
        from ai_edge_litert import schema_py_generated as schema

        self.schema = schema
        self.model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
        self.sub = self.model.subgraphs[0]
        self._constants: dict[float, int] = {}

    def builtin(self, op) -> int:
        code = self.model.operatorCodes[op.opcodeIndex]
        return max(code.builtinCode, code.deprecatedBuiltinCode)

    def is_float(self, index: int) -> bool:
        return self.sub.tensors[index].type == self.schema.TensorType.FLOAT32

    def opcode(self, builtin: int) -> int:
        for k, code in enumerate(self.model.operatorCodes):
            if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
                return k
        code = self.schema.OperatorCodeT()
        code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
        self.model.operatorCodes.append(code)
        return len(self.model.operatorCodes) - 1

    def constant(self, value: float) -> int:
        """A float32 scalar constant tensor, shared by every op that needs the value."""
        if value not in self._constants:
            buffer = self.schema.BufferT()
            buffer.data = np.frombuffer(np.float32(value).tobytes(), np.uint8).copy()
            self.model.buffers.append(buffer)
            self._constants[value] = self._tensor(f"edgepack_int8_spelling/{value:.9g}", [],
                                                  len(self.model.buffers) - 1)
        return self._constants[value]

    def name(self, index: int) -> str:
        t = self.sub.tensors[index]
        return t.name.decode(errors="replace") if isinstance(t.name, bytes) else str(t.name)

    def like(self, index: int, suffix: str) -> int:
        """A new float32 tensor of the shape of tensor ``index``."""
        t = self.sub.tensors[index]
        new = self._tensor(f"{self.name(index)};edgepack_{suffix}", list(t.shape), 0)
        if t.shapeSignature is not None:
            self.sub.tensors[new].shapeSignature = list(t.shapeSignature)
        return new

    def _tensor(self, name: str, shape: list, buffer: int) -> int:
        t = self.schema.TensorT()
        t.name, t.shape, t.type, t.buffer = name.encode(), shape, self.schema.TensorType.FLOAT32, buffer
        self.sub.tensors.append(t)
        return len(self.sub.tensors) - 1

    def binary(self, builtin: int, inputs: list[int], output: int, activation: int = 0):
        """An ADD or MUL op (their options differ only in type)."""
        s = self.schema
        op = s.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = self.opcode(builtin), inputs, [output]
        if builtin == s.BuiltinOperator.ADD:
            op.builtinOptionsType, op.builtinOptions = s.BuiltinOptions.AddOptions, s.AddOptionsT()
        else:
            op.builtinOptionsType, op.builtinOptions = s.BuiltinOptions.MulOptions, s.MulOptionsT()
        op.builtinOptions.fusedActivationFunction = activation
        return op

    def axes(self, index: int) -> list[int] | None:
        """The values of a constant int32 tensor (a reduction's axes), None when it is not a constant."""
        t = self.sub.tensors[index]
        data = self.model.buffers[t.buffer].data if t.buffer else None
        if data is None or t.type != self.schema.TensorType.INT32:
            return None
        return [int(v) for v in np.frombuffer(bytes(bytearray(data)), np.int32)]

    def plane_max(self, op) -> list | None:
        """REDUCE_MAX of [N, H, W, C] over H and W as a whole-plane MAX_POOL_2D (and a RESHAPE when the axes
        are dropped); None when the op is another reduction."""
        s, x, y = self.schema, op.inputs[0], op.outputs[0]
        shape = list(self.sub.tensors[x].shape)
        axes = self.axes(op.inputs[1]) if len(op.inputs) > 1 else None
        if len(shape) != 4 or axes is None or sorted(a % 4 for a in axes) != [1, 2] or min(shape[1:3]) < 1:
            return None
        keep = bool(op.builtinOptions.keepDims) if op.builtinOptions is not None else False
        pooled = y if keep else self._tensor(f"{self.name(y)};edgepack_pool", [shape[0], 1, 1, shape[3]], 0)
        pool = s.OperatorT()
        pool.opcodeIndex, pool.inputs, pool.outputs = self.opcode(s.BuiltinOperator.MAX_POOL_2D), [x], [pooled]
        pool.builtinOptionsType, pool.builtinOptions = s.BuiltinOptions.Pool2DOptions, s.Pool2DOptionsT()
        o = pool.builtinOptions
        o.padding, o.strideH, o.strideW, o.filterHeight, o.filterWidth = s.Padding.VALID, 1, 1, shape[1], shape[2]
        if keep:
            return [pool]
        reshape = s.OperatorT()
        reshape.opcodeIndex, reshape.inputs, reshape.outputs = self.opcode(s.BuiltinOperator.RESHAPE), [pooled], [y]
        reshape.builtinOptionsType, reshape.builtinOptions = s.BuiltinOptions.ReshapeOptions, s.ReshapeOptionsT()
        reshape.builtinOptions.newShape = list(self.sub.tensors[y].shape)
        return [pool, reshape]

    def packed(self) -> bytes:
        import flatbuffers

        builder = flatbuffers.Builder(1024)
        builder.Finish(self.model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def respell(tflite: bytes) -> tuple[bytes, dict[str, int]]:
    """The float model with every float32 HARD_SWISH, RELU_0_TO_1 and whole-plane REDUCE_MAX respelled (module doc), and
    {op name: how many}; the model unchanged (the same bytes) when there is none."""
    e = _Editor(tflite)
    ops, s = e.schema.BuiltinOperator, e.schema
    relu6 = s.ActivationFunctionType.RELU6
    counts = {"HARD_SWISH": 0, "RELU_0_TO_1": 0, "REDUCE_MAX": 0}
    rewritten = []
    for op in e.sub.operators:
        code = e.builtin(op)
        floats = e.is_float(op.inputs[0]) and e.is_float(op.outputs[0])
        pooled = e.plane_max(op) if code == ops.REDUCE_MAX and floats else None
        if pooled:
            rewritten += pooled
            counts["REDUCE_MAX"] += 1
            continue
        if code not in (ops.HARD_SWISH, ops.RELU_0_TO_1) or not floats:
            rewritten.append(op)
            continue
        x, y = op.inputs[0], op.outputs[0]
        if code == ops.HARD_SWISH:
            sixth, gate = e.like(y, "x_sixth"), e.like(y, "relu6_x_plus_3")
            rewritten += [e.binary(ops.MUL, [x, e.constant(SIXTH)], sixth),
                          e.binary(ops.ADD, [x, e.constant(3.0)], gate, relu6),
                          e.binary(ops.MUL, [sixth, gate], y)]
            counts["HARD_SWISH"] += 1
        else:
            gate = e.like(y, "relu6_6x")
            rewritten += [e.binary(ops.MUL, [x, e.constant(6.0)], gate, relu6),
                          e.binary(ops.MUL, [gate, e.constant(SIXTH)], y)]
            counts["RELU_0_TO_1"] += 1
    if not any(counts.values()):
        return tflite, {}
    e.sub.operators = rewritten
    return e.packed(), {k: v for k, v in counts.items() if v}
