"""Stage 6: full-integer quantization, calibrated on the user's samples.

We own this step (rather than onnx2tf's int8 path, which accepts only 4-D
float image inputs): the TFLite converter gets a representative dataset made
from the user's calibration samples, moved into the converted layout. Any
input works: images, audio frames, feature vectors, several inputs; integer
inputs (ids) are passed through as integers.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edge_runtime.errors import UserError

from .layout import TensorMap
from .quiet import captured_output

IO_DTYPES = ("int8", "uint8", "float32")


@dataclasses.dataclass
class Quantized:
    tflite: bytes
    strict: bool  # False when some ops had to stay float
    io: dict[str, dict]  # signature key -> TFLite tensor facts
    log: str


def _dataset(samples: dict[str, np.ndarray], in_maps: list[TensorMap], dtypes: dict[str, np.dtype]):
    count = len(next(iter(samples.values())))

    def gen():
        for i in range(count):
            yield {
                m.key: np.transpose(samples[m.spec.name][i], m.permutation).astype(dtypes[m.key])
                for m in in_maps
            }

    return gen


def _tensor_facts(tflite: bytes) -> dict[str, dict]:
    """Index, shape, dtype and quantization of each signature input/output."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(
        model_content=tflite, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    sig = interp._get_full_signature_list()["serving_default"]
    details = {d["index"]: d for d in interp.get_tensor_details()}
    facts = {}
    for key, index in [*sig["inputs"].items(), *sig["outputs"].items()]:
        d = details[index]
        scale, zero_point = d["quantization"]
        facts[key] = {
            "tflite_index": int(index),
            "tflite_name": d["name"],
            "tflite_shape": [int(x) for x in d["shape"]],
            "tflite_dtype": np.dtype(d["dtype"]).name,
            "scale": float(scale),
            "zero_point": int(zero_point),
        }
    return facts


def quantize(saved_model_dir, in_maps: list[TensorMap], samples, io_dtype: str = "int8",
             per_tensor: bool = False, verbose: bool = False) -> Quantized:
    """SavedModel -> full-integer TFLite model.

    Args:
        saved_model_dir: the float SavedModel from the converter.
        in_maps: how each ONNX input maps onto the SavedModel's.
        samples: calibration samples (held-out ones excluded), ONNX layout.
        io_dtype: dtype of the model's float inputs/outputs: int8, uint8 or
            float32 (quantize/dequantize inside the model).
        per_tensor: one scale per tensor instead of per output channel.

    Returns:
        The model bytes and its I/O facts. When an op has no integer kernel
        the model keeps that op in float (``strict`` False) rather than
        failing; the op report names it.
    """
    import tensorflow as tf

    sig = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]
    dtypes = {k: v.dtype.as_numpy_dtype for k, v in sig.structured_input_signature[1].items()}
    io_type = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[io_dtype]

    def make(strict: bool):
        conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = _dataset(samples, in_maps, dtypes)
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if not strict:
            ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
        conv.target_spec.supported_ops = ops
        conv.inference_input_type = io_type
        conv.inference_output_type = io_type
        if per_tensor:
            conv._experimental_disable_per_channel = True
        return conv.convert()

    errors = []
    for strict in (True, False):
        with captured_output(show=verbose) as log:
            try:
                tflite = make(strict)
            except Exception as exc:  # the converter raises ConverterError and plain Exceptions
                errors.append(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
                continue
        return Quantized(tflite, strict, _tensor_facts(tflite), log.text())
    raise UserError(
        f"the TFLite converter could not quantize the model: {errors[-1]}",
        "run with -v for the converter's log",
    )
