"""HARD_SWISH and RELU_0_TO_1 respelled for LiteRT Quantizer: exact in float, full int8, one XNNPACK piece."""

import json
import re

import numpy as np
import pytest

from packager.int8_spelling import respell
from packager.layout import TensorMap
from packager.onnx_model import TensorSpec
from packager.ops import op_report
from packager.quantize import Calibrated
from tests.conftest import run_cli
from tests.fixtures.lcnet_models import lcnet

SHAPE = [1, 4, 4, 8]


def _float_model(ops: list[str]) -> bytes:
    """x [1, 4, 4, 8] -> each op of ``ops`` in turn -> y, a float32 .tflite with a serving_default signature
    (written with the schema, no converter: what the converter writes for hard-swish and hard-sigmoid)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    model, sub = s.ModelT(), s.SubGraphT()
    model.version, model.buffers, model.operatorCodes = 3, [s.BufferT()], []
    sub.tensors, sub.operators = [], []
    for k in range(len(ops) + 1):
        tensor = s.TensorT()
        tensor.name, tensor.shape, tensor.type, tensor.buffer = f"t{k}".encode(), SHAPE, s.TensorType.FLOAT32, 0
        sub.tensors.append(tensor)
    for k, name in enumerate(ops):
        code = s.OperatorCodeT()
        code.builtinCode = getattr(s.BuiltinOperator, name)
        code.deprecatedBuiltinCode, code.version = min(code.builtinCode, 127), 1
        model.operatorCodes.append(code)
        op = s.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = k, [k], [k + 1]
        sub.operators.append(op)
    sub.inputs, sub.outputs = [0], [len(ops)]
    signature = s.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = b"serving_default", 0
    signature.inputs, signature.outputs = [s.TensorMapT()], [s.TensorMapT()]
    signature.inputs[0].name, signature.inputs[0].tensorIndex = b"x", 0
    signature.outputs[0].name, signature.outputs[0].tensorIndex = b"y", len(ops)
    model.subgraphs, model.signatureDefs = [sub], [signature]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _run(tflite: bytes, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=tflite).get_signature_runner("serving_default")(x=x)["y"]


def _ops(tflite: bytes) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=tflite,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    return [op["op_name"] for op in interp._get_ops_details()]


X = np.linspace(-8, 8, np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)  # both clip ends and between


def test_hard_swish_and_relu_0_to_1_become_mul_and_add_computing_the_same():
    tflite = _float_model(["HARD_SWISH", "RELU_0_TO_1"])
    respelled, counts = respell(tflite)
    assert counts == {"HARD_SWISH": 1, "RELU_0_TO_1": 1}
    assert _ops(respelled) == ["MUL", "ADD", "MUL", "MUL", "MUL"]
    np.testing.assert_allclose(_run(respelled, X), _run(tflite, X), rtol=1e-6, atol=1e-6)
    assert respell(respelled) == (respelled, {})  # nothing left to do: the same bytes back


# LiteRT Quantizer's calibrator turns on experimental_preserve_all_tensors itself, and the interpreter warns
@pytest.mark.filterwarnings("ignore::UserWarning:ai_edge_litert.*")
def test_the_quantized_model_is_full_integer_in_one_xnnpack_partition():
    """Before: HARD_SWISH int8 outside XNNPACK, RELU_0_TO_1 left float between DEQUANTIZE and QUANTIZE."""
    from ai_edge_litert.interpreter import Interpreter

    spec = TensorSpec("x", SHAPE, "float32")
    samples = {"x": np.random.default_rng(0).normal(0, 3, (16, *SHAPE)).astype(np.float32)}
    cal = Calibrated(_float_model(["HARD_SWISH", "RELU_0_TO_1"]), [TensorMap(spec, SHAPE, "x", [0, 1, 2, 3])], samples)
    assert cal.respelled == {"HARD_SWISH": 1, "RELU_0_TO_1": 1}
    q = cal.int8()
    assert q.strict and op_report(q.tflite)["float_ops"] == []
    interp = Interpreter(model_content=q.tflite, num_threads=1)
    interp.allocate_tensors()
    ops = interp._get_ops_details()
    assert sum(op["op_name"] == "DELEGATE" for op in ops) == 1
    from edge_runtime.delegates import left_out

    assert left_out(interp) == {}


@pytest.mark.slow
def test_pp_lcnet_style_classifier_is_full_int8_in_no_more_xnnpack_pieces_than_float(tmp_path):
    """10 HardSwish and 2 HardSigmoid ops. Before the respelling (measured): 13 XNNPACK partitions in int8
    against 3 in float32, and 6 float ops in the int8 model (each RELU_0_TO_1 between DEQUANTIZE and QUANTIZE)."""
    model, calibration = lcnet(tmp_path)
    build = run_cli("packager", "build", model, "--target", "rpi4", "--calibration", calibration,
                    "--precision", "int8", "--accept-low-fidelity", "--no-wheels", "-o", tmp_path / "dist")
    manifest = json.loads((tmp_path / "dist" / "lcnet-rpi4" / "manifest.json").read_text())
    full_int8 = manifest["precision"]["steps"][0]  # LiteRT Quantizer, min/max: the rung called full int8
    assert full_int8["step"] == "int8, min/max"
    assert not any("not full integer" in s for s in full_int8["shortfalls"]), full_int8  # --precision int8 says so
    float32 = [line for line in build.stderr.splitlines() if "float32 reference:" in line]
    assert len(float32) == 1, build.stderr
    float_partitions = int(re.search(r"(\d+) XNNPACK partition", float32[0]).group(1))
    assert 1 <= full_int8["xnnpack_partitions"] <= float_partitions, (full_int8, float32)


def _global_max_pool(keepdims: bool) -> bytes:
    """x [1, 6, 5, 8] -> relu -> max over height and width -> y, from the TFLite converter (REDUCE_MAX)."""
    import tensorflow as tf

    class Pool(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 6, 5, 8], tf.float32, name="x")])
        def __call__(self, x):
            return {"y": tf.reduce_max(tf.nn.relu(x) * 2.0, axis=[1, 2], keepdims=keepdims)}

    pool = Pool()
    return tf.lite.TFLiteConverter.from_concrete_functions([pool.__call__.get_concrete_function()], pool).convert()


@pytest.mark.filterwarnings("ignore::UserWarning:ai_edge_litert.*")
@pytest.mark.parametrize("keepdims", [False, True])
def test_a_global_max_pool_becomes_a_whole_plane_max_pool_and_full_int8(keepdims):
    """LiteRT Quantizer has no int8 REDUCE_MAX: it stayed float between a DEQUANTIZE and a QUANTIZE."""
    model = _global_max_pool(keepdims)
    assert "REDUCE_MAX" in _ops(model)
    respelled, counts = respell(model)
    assert counts == {"REDUCE_MAX": 1} and "REDUCE_MAX" not in _ops(respelled) and "MAX_POOL_2D" in _ops(respelled)
    x = np.random.default_rng(3).normal(0, 1, (1, 6, 5, 8)).astype(np.float32)
    np.testing.assert_array_equal(_run(respelled, x), _run(model, x))  # the same values, in float
    shape = [1, 6, 5, 8]
    samples = {"x": np.random.default_rng(4).normal(0, 1, (16, *shape)).astype(np.float32)}
    cal = Calibrated(model, [TensorMap(TensorSpec("x", shape, "float32"), shape, "x", [0, 1, 2, 3])], samples)
    q = cal.int8()
    assert cal.respelled == {"REDUCE_MAX": 1} and q.strict and op_report(q.tflite)["float_ops"] == []
