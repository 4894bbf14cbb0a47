"""Edge TPU compatibility report: real int8 .tflite models made with the TF converter."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from packager.edgetpu import compatibility, table

from ..conftest import run_cli

pytestmark = pytest.mark.slow  # every model here goes through the TF converter


def _int8(model, shape, io=True) -> bytes:
    """Full-integer quantization with a representative dataset (int8 I/O unless io=False)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)

    def data():
        for _ in range(8):
            yield [rng.standard_normal((1, *shape)).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = data
    if io:
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


def _keras(shape, *layers):
    import tensorflow as tf

    inp = tf.keras.Input(shape=shape, batch_size=1)
    x = inp
    for layer in layers:
        x = layer(x)
    return tf.keras.Model(inp, x)


@pytest.fixture(scope="module")
def models() -> dict[str, bytes]:
    import tensorflow as tf

    L = tf.keras.layers
    return {
        "cnn": _int8(_keras((8, 8, 3), L.Conv2D(4, 3, activation="relu"), L.MaxPooling2D(), L.Flatten(),
                            L.Dense(5)), (8, 8, 3)),
        "hard_swish": _int8(_keras((8, 8, 3), L.Conv2D(4, 3), L.Activation(tf.nn.relu6),
                                   L.Lambda(lambda t: t * tf.nn.relu6(t + 3.0) / 6.0),  # hard swish
                                   L.Conv2D(2, 1), L.Flatten(), L.Dense(3)), (8, 8, 3)),
        "float_io": _int8(_keras((8, 8, 3), L.Conv2D(4, 3), L.Flatten(), L.Dense(3)), (8, 8, 3), io=False),
        "five_d": _int8(_keras((2, 3, 4, 5), L.Lambda(lambda t: t + 1.0), L.Reshape((120,)), L.Dense(3)),
                        (2, 3, 4, 5)),
    }


def test_conv_relu_pool_fc_fully_mapped(models):
    report = compatibility(models["cnn"])
    assert report["first_cpu_op"] is None and report["reasons"] == {}
    assert report["ops_edgetpu"] == report["ops_total"] >= 4
    n = report["ops_total"]
    assert report["summary"] == f"{n} of {n} ops would run on the Edge TPU; first CPU op: none"


def test_unsupported_op_in_the_middle_stops_mapping(models):
    report = compatibility(models["hard_swish"])
    first = report["first_cpu_op"]
    assert first["type"] == "HARD_SWISH"
    assert first["why"] == "op HARD_SWISH is not in the Edge TPU's supported operations"
    assert 0 < report["ops_edgetpu"] == first["index"] < report["ops_total"]  # the ops after it: CPU
    assert report["summary"].startswith(f"{first['index']} of {report['ops_total']} ops would run on the Edge TPU; "
                                        f"first CPU op: HARD_SWISH #{first['index']} (op HARD_SWISH")


def test_float_io_edges_stay_on_the_cpu_without_stopping_mapping(models):
    """The input QUANTIZE from float and the output DEQUANTIZE to float run on the CPU around the segment."""
    from packager.edgetpu.predictor import _Graph

    g = _Graph(models["float_io"])
    types = [g.op_type(op) for op in g.sub.operators]
    assert types[0] == "QUANTIZE" and types[-1] == "DEQUANTIZE", types
    report = compatibility(models["float_io"])
    assert report["first_cpu_op"] is None and report["reasons"] == {}
    assert report["float_io"] == {"quantize": 1, "dequantize": 1}
    assert report["ops_edgetpu"] == report["ops_total"] - 2 == len(types) - 2
    n = len(types)
    assert report["summary"] == (f"{n - 2} of {n} ops would run on the Edge TPU; first CPU op: none; "
                                 "float I/O on the CPU: 1 QUANTIZE, 1 DEQUANTIZE")


def test_a_cpu_op_after_the_float_input_still_stops_mapping(models):
    """Only the edges are exempt: HARD_SWISH behind a float input's QUANTIZE stops mapping as before."""
    import tensorflow as tf

    L = tf.keras.layers
    tflite = _int8(_keras((8, 8, 3), L.Conv2D(4, 3), L.Lambda(lambda t: t * tf.nn.relu6(t + 3.0) / 6.0),
                          L.Flatten(), L.Dense(3)), (8, 8, 3), io=False)
    report = compatibility(tflite)
    assert report["float_io"]["quantize"] == 1
    first = report["first_cpu_op"]
    assert first["type"] == "HARD_SWISH" and report["ops_edgetpu"] == first["index"] - 1


def test_runtime_too_old_for_an_op(models):
    """An op the table says needs a newer Edge TPU runtime than the target's counts as a CPU op."""
    report = compatibility(models["float_io"], runtime=12)  # QUANTIZE: runtime 13 (but these are edges)
    assert report["first_cpu_op"] is None
    assert compatibility(models["cnn"], runtime=10)["first_cpu_op"] is None  # conv/pool/fc: every runtime


def test_five_d_tensor_rule(models):
    report = compatibility(models["five_d"])
    first = report["first_cpu_op"]
    assert first is not None and first["index"] == 0
    assert re.search(r"5-D (input|output) '.*' \[1, 2, 3, 4, 5\] with 4 dims > 1", first["why"]), first["why"]


def test_fused_activation_on_a_pool(models):
    """No converter emits a pool with a fused activation: set one in the flatbuffer of the real model."""
    from ai_edge_litert import schema_py_generated as schema
    import flatbuffers

    model = schema.ModelT.InitFromPackedBuf(bytearray(models["cnn"]), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    ops = model.subgraphs[0].operators
    pool = next(i for i, op in enumerate(ops)
                if names[max(model.operatorCodes[op.opcodeIndex].builtinCode,
                             model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode)] == "MAX_POOL_2D")
    ops[pool].builtinOptions.fusedActivationFunction = schema.ActivationFunctionType.RELU
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    report = compatibility(bytes(builder.Output()))
    assert report["first_cpu_op"] == {"index": pool, "type": "MAX_POOL_2D", "why": "MAX_POOL_2D: fused RELU activation"}
    assert report["ops_edgetpu"] == pool


def test_table_checks_are_all_implemented():
    from packager.edgetpu import CHECKS

    ops = table()["ops"]
    assert {"CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "SOFTMAX"} <= set(ops)
    assert "HARD_SWISH" not in ops and "DEQUANTIZE" not in ops
    assert {c for e in ops.values() for c in e.get("checks", [])} <= set(CHECKS)
    assert table()["source"].startswith("https://coral.ai/docs/edgetpu/models-intro")


def test_inspect_shows_the_line_for_the_digits_bundle(digits_bundle):
    text = run_cli("packager", "inspect", digits_bundle).stdout
    line = next(l for l in text.splitlines() if l.startswith("edgetpu "))
    manifest = json.loads((digits_bundle / "manifest.json").read_text())
    m = re.fullmatch(r"edgetpu\s+(\d+) of (\d+) ops would run on the Edge TPU; first CPU op: (.+)", line)
    assert m, line
    assert int(m[2]) == manifest["ops"]["total"]
    assert int(m[1]) <= int(m[2])
    assert manifest["edgetpu"]["summary"] == line.split(None, 1)[1]  # the build wrote the same report
    as_json = json.loads(run_cli("packager", "inspect", "--json", digits_bundle).stdout)
    assert as_json["edgetpu"]["ops_total"] == manifest["ops"]["total"]
