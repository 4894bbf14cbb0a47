"""Stage 6: quantization on LiteRT Quantizer, calibrated on the user's samples.

The float model is exported again from onnx2tf's SavedModel (the converter
with no optimizations, so it keeps the ``serving_default`` signature), then
quantized by LiteRT Quantizer (`litert_quantizer`): recipe -> calibrate ->
quantize. LiteRT deprecates quantizing inside TFLiteConverter; the Quantizer
also gives what the precision ladder needs: recipes as data (float islands
are ``no_quantize`` entries), the calibration ranges per tensor (replaced by
:mod:`packager.ranges` before quantizing) and quantizing again in a fraction
of a second without calibrating again.

The TFLiteConverter stays where it is measured better or LiteRT Quantizer
cannot go (``converter_int8``): uint8 I/O (the Edge TPU's convention; LiteRT
Quantizer writes int8 I/O only); a model LiteRT Quantizer cannot calibrate
or quantize (its calibrator fails on the unrolled recurrent graphs of the
CRNN fixture: "Tensor data is null"); and as the ladder's second int8
candidate, because its calibration wins on some small models (the byte MLP
0.9998 against 0.9646, the GRU 0.9994 against 0.9847 in `make corpus`).

LiteRT Quantizer is given the float model with HARD_SWISH and RELU_0_TO_1
respelled into MUL and ADD with a fused RELU6 (:mod:`packager.int8_spelling`):
neither has an int8 path XNNPACK takes, and RELU_0_TO_1 none in the Quantizer.

Calibration samples arrive in the ONNX layout; they are moved into the
converted layout here. Integer inputs (ids) pass through as integers.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from edge_runtime.errors import UserError

from .int8_reads import argmax_reads_int8
from .int8_spelling import respell
from .layout import TensorMap
from .quiet import captured_output

SIGNATURE = "serving_default"


@dataclasses.dataclass
class Quantized:
    """One candidate model of the precision ladder."""

    tflite: bytes
    precision: str  # int8 | int8+float | dynamic | float16 | float32
    strict: bool  # every compute op integer
    io: dict[str, dict]  # signature key -> TFLite tensor facts
    recipe: list | None = None  # the LiteRT Quantizer recipe, when it made the model
    float_ops: list[str] = dataclasses.field(default_factory=list)  # op scopes left float on purpose
    log: str = ""
    ranges: dict | None = None  # activation ranges chosen per tensor, when not min/max
    respelled: dict | None = None  # {op: count} respelled into ops int8 XNNPACK takes (packager.int8_spelling)


def tensor_facts(tflite: bytes) -> dict[str, dict]:
    """Index, shape, dtype and quantization of each signature input/output."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(
        model_content=tflite, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    sig = interp._get_full_signature_list()[SIGNATURE]
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


def export_float(saved_model_dir, verbose: bool = False) -> bytes:
    """The float32 .tflite with its signature (onnx2tf's own file has none)."""
    import tensorflow as tf

    with captured_output(show=verbose):
        try:
            return tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir)).convert()
        except Exception as exc:  # ConverterError and plain Exceptions
            raise UserError(f"the TFLite converter could not export the float model: {_first_line(exc)}",
                            "run with -v for the converter's log") from None


def export_float16(saved_model_dir, verbose: bool = False) -> bytes:
    """float16 weights, float32 compute and I/O (the converter's documented float16 mode)."""
    import tensorflow as tf

    with captured_output(show=verbose):
        conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
        return conv.convert()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def op_scopes(tflite: bytes) -> list[tuple[str, str]]:
    """(op type, scope) of each op in execution order; the scope is what recipe regexes match."""
    return [(kind, scope(outputs)) for kind, _, outputs in op_graph(tflite)[0]]


def scope(outputs: list[str]) -> str:
    """An op's scope: its named output tensors joined as 'a;b;' ('' when none has a name)."""
    named = [name for name in outputs if name]
    return ";".join(named) + ";" if named else ""


def op_graph(tflite: bytes) -> tuple[list[tuple[str, list[str], list[str]]], set[str]]:
    """(op type, input tensor names, output tensor names) of each op in execution order, and the model's
    output tensor names."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(
        model_content=tflite, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    names = {d["index"]: d["name"] for d in interp.get_tensor_details()}
    ops = [(op["op_name"], [names[i] for i in op["inputs"] if i >= 0 and i in names],
            [names[i] for i in op["outputs"] if i >= 0 and i in names]) for op in interp._get_ops_details()]
    return ops, {d["name"] for d in interp.get_output_details()}


def scope_regex(scopes: list[str]) -> str:
    """One regex matching exactly these op scopes (LiteRT Quantizer uses re.search on 'name;...;')."""
    return "^(?:" + "|".join(re.escape(s) for s in scopes) + ")"


class QuantizerFailed(UserError):
    """LiteRT Quantizer cannot take this model (the ladder falls back to the TFLite converter)."""


class Calibrated:
    """A float model calibrated once, quantized as often as the ladder asks."""

    def __init__(self, float_tflite: bytes, in_maps: list[TensorMap], samples: dict[str, np.ndarray],
                 io_dtype: str = "int8", per_tensor: bool = False, verbose: bool = False,
                 pinned: dict[str, tuple[float, float]] | None = None):
        """``pinned``: {ONNX input name: (min, max)} ranges that calibration does not choose (pixel inputs:
        0..255, so that their int8 scale is 1 and a frame is its own quantized value)."""
        # HARD_SWISH and RELU_0_TO_1 as ops int8 XNNPACK and LiteRT Quantizer take (packager.int8_spelling)
        self.float_tflite, self.respelled = respell(float_tflite)
        self.io_dtype = io_dtype
        self.per_tensor = per_tensor
        self.verbose = verbose
        self.dataset = signature_feeds(self.float_tflite, in_maps, samples)
        facts = tensor_facts(self.float_tflite) if pinned else {}
        self.pinned = {facts[m.key]["tflite_name"]: pinned[m.spec.name] for m in in_maps
                       if pinned and m.spec.name in pinned}
        self._qsv: dict | None = None

    @property
    def qsv(self) -> dict:
        """Per-tensor calibration statistics (min/max), computed on first use."""
        if self._qsv is None:
            from litert_quantizer import Quantizer

            with captured_output(show=self.verbose):
                try:
                    qsv = Quantizer(self.float_tflite, self.recipe()).calibrate(
                        {SIGNATURE: self.dataset}, num_threads=2)
                except Exception as exc:  # its calibrator raises ValueError/RuntimeError from the interpreter
                    raise QuantizerFailed(f"LiteRT Quantizer could not calibrate the model: {_first_line(exc)}",
                                          "run with -v for its log") from None
            from .ranges import override

            missing = [name for name in self.pinned if name not in qsv]
            if missing:  # a LiteRT Quantizer that stopped calibrating inputs: say so rather than ship scale != 1
                raise QuantizerFailed(f"LiteRT Quantizer gave no range for input tensor(s) {', '.join(missing)}",
                                      "run with -v for its log")
            self._qsv = override(qsv, self.pinned)
        return self._qsv

    def recipe(self, float_scopes: list[str] = ()) -> list:
        """static int8 (int8 weights per channel, int8 activations); float I/O and islands as no_quantize."""
        from litert_quantizer import Quantizer, qtyping, recipe

        q = Quantizer(self.float_tflite, recipe.static_wi8_ai8())
        if self.per_tensor:
            q.add_static_config(".*", "*", 8, 8, weight_granularity=qtyping.QuantGranularity.TENSORWISE)
        if self.io_dtype == "float32":
            for pseudo in ("INPUT", "OUTPUT"):
                q.update_quantization_recipe(".*", pseudo, None, "no_quantize")
        if float_scopes:
            q.update_quantization_recipe(scope_regex(list(float_scopes)), "*", None, "no_quantize")
        return q.get_quantization_recipe()

    def int8(self, ranges: dict[str, tuple[float, float]] | None = None, float_scopes: list[str] = ()) -> Quantized:
        """Static int8 with the given activation ranges (default: min/max) and ops left float."""
        from litert_quantizer import Quantizer

        from .ranges import override

        # the range search never moves a pinned range
        qsv = override(self.qsv, {k: v for k, v in ranges.items() if k not in self.pinned}) if ranges else self.qsv
        rec = self.recipe(list(float_scopes))
        with captured_output(show=self.verbose) as log:
            try:
                model = bytes(Quantizer(self.float_tflite, rec).quantize(qsv, enable_progress_report=False)
                              .quantized_model)
            except Exception as exc:  # the Quantizer raises ValueError/RuntimeError on ops it cannot take
                raise QuantizerFailed(f"LiteRT Quantizer could not quantize the model: {_first_line(exc)}",
                                      "run with -v for its log") from None
        model, _ = argmax_reads_int8(model)  # LiteRT Quantizer leaves ARG_MAX float (packager.int8_reads)
        strict = not float_scopes and _all_integer(model)
        return Quantized(model, "int8+float" if float_scopes else "int8", strict, tensor_facts(model), rec,
                         list(float_scopes), log.text(), ranges, self.respelled or None)

    def dynamic(self) -> Quantized:
        """int8 weights, float activations quantized on the fly (dynamic range)."""
        from litert_quantizer import Quantizer, recipe

        rec = recipe.dynamic_wi8_afp32()
        with captured_output(show=self.verbose) as log:
            try:
                model = bytes(Quantizer(self.float_tflite, rec).quantize(enable_progress_report=False)
                              .quantized_model)
            except Exception as exc:  # as in int8()
                raise QuantizerFailed(f"LiteRT Quantizer could not quantize the model: {_first_line(exc)}",
                                      "run with -v for its log") from None
        return Quantized(model, "dynamic", False, tensor_facts(model), rec, [], log.text(), None,
                         self.respelled or None)


def _all_integer(tflite: bytes) -> bool:
    from .ops import op_report

    return not op_report(tflite)["float_ops"]


def signature_feeds(tflite: bytes, in_maps: list[TensorMap], samples: dict[str, np.ndarray]) -> list[dict]:
    """The samples as signature feeds (converted layout and dtype), one dict per sample."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=tflite).get_signature_runner(SIGNATURE)
    dtypes = {k: v["dtype"] for k, v in runner.get_input_details().items()}
    count = len(next(iter(samples.values())))
    return [{m.key: np.transpose(samples[m.spec.name][i], m.permutation).astype(dtypes[m.key]) for m in in_maps}
            for i in range(count)]


def converter_int8(saved_model_dir, in_maps: list[TensorMap], samples, io_dtype: str = "uint8",
                   per_tensor: bool = False, verbose: bool = False) -> Quantized:
    """SavedModel -> full-integer model by TFLiteConverter; kept for uint8 I/O only (see the module doc)."""
    import tensorflow as tf

    sig = tf.saved_model.load(str(saved_model_dir)).signatures[SIGNATURE]
    dtypes = {k: v.dtype.as_numpy_dtype for k, v in sig.structured_input_signature[1].items()}
    io_type = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[io_dtype]
    count = len(next(iter(samples.values())))

    def dataset():
        for i in range(count):
            yield {m.key: np.transpose(samples[m.spec.name][i], m.permutation).astype(dtypes[m.key])
                   for m in in_maps}

    def make(strict: bool):
        conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = dataset
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
                errors.append(_first_line(exc))
                continue
        return Quantized(tflite, "int8" if strict else "int8+float", strict, tensor_facts(tflite), None, [],
                         log.text())
    raise UserError(
        f"the TFLite converter could not quantize the model: {errors[-1]}",
        "run with -v for the converter's log",
    )
