"""Tensor I/O between the ONNX contract and the TFLite model.

The user speaks ONNX: names, layout (e.g. NCHW) and float dtype as in the
original model. The TFLite model may differ in layout (the converter moves
channels last) and in dtype (int8/uint8 quantized). The manifest records,
per tensor, the ``permutation`` (tflite = onnx.transpose(permutation)) and
the ``scale``/``zero_point``; this module applies them both ways.

What an array given for an input holds (``predict()``, ``edge-run run``,
``edge-run serve``), by its shape against the input's ONNX shape S (the
manifest's ``shape``, rank r; a symbolic dimension is the value the build
fixed), decided by :func:`input_samples`:

- exactly S: ONE sample, whatever S's first dimension means (a batch of 1,
  a sequence, channels). This is the array onnxruntime takes, and every
  output comes back in exactly its ONNX shape.
- rank r + 1 and ``(N, *S)``: N samples STACKED in front; each output comes
  back as ``(N, *its ONNX shape)``. onnxruntime takes no array of rank
  r + 1, so this cannot be read as one sample.
- only when S[0] == 1 (a batch of 1): rank r and ``(N, *S[1:])`` with
  N != 1: N samples along the BATCH AXIS, as onnxruntime takes them when
  the model declares that dimension symbolic; an output whose ONNX shape
  starts with 1 comes back joined along it, ``(N, *shape[1:])``, any other
  output stacked, ``(N, *shape)``. (N == 1 is exactly S: one sample.)

All the inputs of one call take the same form (each one sample, each
stacked, or each along its batch axis); anything else is refused with the
ONNX shape in the message. The build's calibration arrays are another
format (always N samples: packager.calibration's ``batched_samples``).
"""

from __future__ import annotations

import math

import numpy as np

from .arrays import load_arrays
from .errors import UserError

# What one file or request of inputs may decode to (edge-run run --input, a serve .npy/.npz body): up to
# MAX_SAMPLES samples, but no more than MAX_DECODED_BYTES unless MIN_SAMPLES samples need more.
MAX_SAMPLES = 1024
MIN_SAMPLES = 4
MAX_DECODED_BYTES = 64 * 1024 * 1024


ONE, STACKED, BATCH_AXIS = "one sample", "stacked", "along the batch axis"


def input_samples(array: np.ndarray, spec: dict, source: str) -> tuple[np.ndarray, str]:
    """An array given for one input, by the runner's rule (module doc): returns ((N, *shape), its form).

    Raises:
        UserError: the array is none of the forms; the message leads with the ONNX shape.
    """
    shape, got = tuple(spec["shape"]), array.shape
    if got == shape:
        return array[np.newaxis], ONE
    if len(got) == len(shape) + 1 and got[1:] == shape:
        return array, STACKED
    if shape and shape[0] == 1 and len(got) == len(shape) and got[1:] == shape[1:]:
        return array.reshape(got[0], *shape), BATCH_AXIS
    forms = [f"N samples as {_dims('N', *shape)}"] + ([_dims("N", *shape[1:])] if shape and shape[0] == 1 else [])
    declared = spec.get("declared_shape") or shape
    fixed = "" if all(isinstance(d, int) for d in declared) else f" (declared {_dims(*declared)}, fixed by the build)"
    raise UserError(f"{source}: input '{spec['name']}' takes shape {_dims(*shape)}{fixed} (one sample, as onnxruntime "
                    f"takes it) or {' or '.join(forms)}; found {_dims(*got)}",
                    "give the array you would give onnxruntime, in the model's own layout (edge-run info shows "
                    "each input's shape)" + ("; for another size, build with --input-shape" if fixed else ""))


def _dims(*dims) -> str:
    """A shape as numpy prints one: (8, 16), (7,), ()."""
    return f"({', '.join(map(str, dims))}{',' if len(dims) == 1 else ''})"


def frame_shape(spec: dict) -> str:
    """What a camera-frame input takes, as the errors say it: "48x192x3 (height x width x RGB)"."""
    _, height, width, channels = spec["shape"]
    return f"{height}x{width}x{channels} (height x width x {'RGB' if channels == 3 else 'grey'})"


def frames(array: np.ndarray, spec: dict, source: str) -> np.ndarray:
    """Camera frames for an image input (``"format": "image-uint8"``): returns (N, 1, H, W, C).

    Accepted: one frame (H, W, C), or N of them (N, H, W, C), uint8: what
    ``np.asarray(PIL.Image)`` or a camera gives. Never resized or converted
    here: a frame of another size or channel count is refused, so what the
    model sees is what the caller chose.
    """
    _, height, width, channels = spec["shape"]
    want = frame_shape(spec)
    if array.dtype != np.uint8:
        raise UserError(f"{source}: input '{spec['name']}' takes uint8 camera frames of {want}, found {array.dtype}",
                        "give the pixels as the camera or PIL gives them (0..255, not normalised: the model does "
                        "that)")
    given = array.shape
    if array.ndim == 3:
        array = array[np.newaxis]
    if array.ndim != 4 or array.shape[1:] != (height, width, channels):
        found = "x".join(map(str, array.shape[1:])) if array.ndim == 4 else f"an array of shape {given}"
        hint = (f"give {channels} channel(s) ({'RGB' if channels == 3 else 'grey'}), channels last"
                if array.ndim == 4 and array.shape[1:3] == (height, width) else
                f"resize the frames to {width}x{height} (width x height) before, e.g. PIL's Image.resize, or ask the "
                "camera for that size")
        raise UserError(f"{source}: input '{spec['name']}' takes frames of {want}, found {found}", hint)
    return array.reshape(len(array), 1, height, width, channels)


def check_dtype(array: np.ndarray, spec: dict, source: str) -> None:
    """Refuse an array whose dtype is not the input's kind (float vs integer)."""
    want = np.dtype(spec["dtype"])
    kind_ok = (want.kind == "f" and array.dtype.kind == "f") or (
        want.kind in "iub" and array.dtype.kind in "iub"
    )
    if not kind_ok:
        raise UserError(
            f"{source}: input '{spec['name']}' takes {want.name}, found {array.dtype.name}",
            f"give {want.name} values as you would to onnxruntime",
        )


def quantize(x: np.ndarray, dtype: np.dtype, scale: float, zero_point: int) -> np.ndarray:
    """Float -> integer with the tensor's affine parameters (saturating)."""
    info = np.iinfo(dtype)
    q = np.round(x.astype(np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


IMAGE_FORMAT = "image-uint8"


def _is_quantized(spec: dict) -> bool:
    return bool(spec.get("scale")) and np.dtype(spec["tflite_dtype"]).kind in "iu" and np.dtype(spec["dtype"]).kind == "f"


def pixel_mode(spec: dict) -> str | None:
    """How a uint8 frame reaches an image input's TFLite tensor; None for other inputs.

    ``copy``: the tensor takes the pixels as they are (uint8 with scale 1
    and zero point 0, or float32); ``flip``: int8 with scale 1 and zero
    point -128, where a pixel p is p - 128, i.e. p with its top bit flipped;
    ``quantize``: any other quantization, one pass of p / scale + zero point.
    """
    if spec.get("format") != IMAGE_FORMAT:
        return None
    tflite = np.dtype(spec["tflite_dtype"])
    scale, zero = spec.get("scale", 0.0), spec.get("zero_point", 0)
    if tflite.kind == "f" or (tflite == np.uint8 and (not scale or (scale == 1.0 and zero == 0))):
        return "copy"
    if tflite == np.int8 and scale == 1.0 and zero == -128:
        return "flip"
    return "quantize"


def to_tflite(sample: np.ndarray, spec: dict) -> np.ndarray:
    """One sample in the ONNX contract -> the TFLite input tensor."""
    x = np.transpose(sample, spec["permutation"])
    tdtype = np.dtype(spec["tflite_dtype"])
    mode = pixel_mode(spec)
    if mode == "flip":
        return np.ascontiguousarray(np.bitwise_xor(x, np.uint8(0x80)).view(np.int8))
    if _is_quantized(spec) or mode == "quantize":
        return quantize(x, tdtype, spec["scale"], spec["zero_point"])
    return np.ascontiguousarray(x.astype(tdtype))


def from_tflite(tensor: np.ndarray, spec: dict) -> np.ndarray:
    """A TFLite output tensor -> the ONNX contract (layout, float dtype)."""
    if _is_quantized(spec):
        y = dequantize(tensor, spec["scale"], spec["zero_point"])
    else:
        y = tensor.astype(spec["dtype"])
    return np.transpose(y, np.argsort(spec["permutation"]))


class InputWriter:
    """Puts one input's samples into the interpreter's own input buffer, quantized.

    Bit for bit what :func:`to_tflite` followed by ``set_tensor`` gives, but
    without its five temporary arrays and its copy. The one strided pass is
    the division by the scale: it reads the sample in its own (ONNX) order
    and writes a float scratch buffer, kept across calls, in the TFLite
    layout, so the innermost loop runs along a long axis (an image row)
    rather than the 3 channels the TFLite layout puts last (that order cost
    ~2x on a 320x320 image). Rounding and clipping then run in place over
    contiguous memory, and the zero point is added in the pass that casts
    into the buffer ``interpreter.tensor()`` exposes: clipping to
    [min - zero_point, max - zero_point] before adding it gives the same
    integers as adding it first and clipping to [min, max].
    The buffer view is taken per call and dropped before ``invoke()``: the
    runtime refuses to run while a view of its memory is alive.
    """

    def __init__(self, spec: dict):
        self.name, self.index = spec["name"], spec["tflite_index"]
        self.permutation = tuple(spec["permutation"])
        self.inverse = tuple(int(i) for i in np.argsort(self.permutation))
        mode = pixel_mode(spec)
        self.flip = mode == "flip"  # camera frames into int8 with scale 1: a copy that flips the top bit
        self.quantized = _is_quantized(spec) or mode == "quantize"
        if self.quantized:
            info = np.iinfo(np.dtype(spec["tflite_dtype"]))
            self.scale, self.zero_point = np.float32(spec["scale"]), np.float32(spec["zero_point"])
            self.low, self.high = np.float32(info.min) - self.zero_point, np.float32(info.max) - self.zero_point
        self.scratch: np.ndarray | None = None

    def write(self, interpreter, sample: np.ndarray) -> None:
        buffer = interpreter.tensor(self.index)()
        shape = sample.transpose(self.permutation).shape
        if shape != buffer.shape:
            raise UserError(f"input '{self.name}': the model's tensor is {buffer.shape} in its own layout, "
                            f"the sample gives {shape}", "give samples in the shape edge-run info shows")
        if self.flip:
            np.bitwise_xor(sample, np.uint8(0x80), out=buffer.view(np.uint8).transpose(self.inverse))
            return
        if not self.quantized:
            np.copyto(buffer.transpose(self.inverse), sample, casting="unsafe")
            return
        scratch = self.scratch
        if scratch is None or scratch.shape != buffer.shape:
            scratch = self.scratch = np.empty(buffer.shape, np.float32)
        onnx_order = scratch.transpose(self.inverse)  # the sample's shape: element for element
        if sample.dtype == np.float32:
            np.divide(sample, self.scale, out=onnx_order)
        else:  # as to_tflite: to float32 first, then divide in float32
            np.copyto(onnx_order, sample, casting="unsafe")
            np.divide(scratch, self.scale, out=scratch)
        np.rint(scratch, out=scratch)
        np.clip(scratch, self.low, self.high, out=scratch)
        np.add(scratch, self.zero_point, out=buffer, casting="unsafe")


class OutputReader:
    """Reads one output from the interpreter's buffer into a slot of the caller's result.

    Bit for bit :func:`from_tflite`, without ``get_tensor``'s copy and the
    temporaries: the transpose back is read in the pass that dequantizes
    straight into the (preallocated) result.
    """

    def __init__(self, spec: dict):
        self.index = spec["tflite_index"]
        self.inverse = tuple(int(i) for i in np.argsort(spec["permutation"]))
        self.quantized = _is_quantized(spec)
        self.dtype = np.dtype(np.float32 if self.quantized else spec["dtype"])
        if self.quantized:
            self.scale, self.zero_point = np.float32(spec["scale"]), np.float32(spec["zero_point"])

    def shape(self, interpreter) -> tuple[int, ...]:
        """The output's ONNX-layout shape as the last invoke produced it."""
        return interpreter.tensor(self.index)().transpose(self.inverse).shape

    def read(self, interpreter, out: np.ndarray) -> None:
        y = interpreter.tensor(self.index)().transpose(self.inverse)
        if not self.quantized:
            np.copyto(out, y, casting="unsafe")
            return
        np.subtract(y, self.zero_point, out=out)  # exact in float32: small integers
        np.multiply(out, self.scale, out=out)


def raw_to_tflite(sample: np.ndarray, spec: dict) -> np.ndarray:
    """``--raw``: the TFLite tensor as given, checked for shape and dtype."""
    want = tuple(spec["tflite_shape"])
    if sample.shape != want or sample.dtype != np.dtype(spec["tflite_dtype"]):
        raise UserError(
            f"--raw input '{spec['name']}' must be the TFLite tensor {want} {spec['tflite_dtype']}, "
            f"found {sample.shape} {sample.dtype}",
            "drop --raw to give ONNX-layout float values",
        )
    return sample


def input_budget(inputs: list[dict], samples: int = MAX_SAMPLES) -> int:
    """Bytes of arrays a file or request of model inputs may decode to.

    ``samples`` samples of every input at 8 bytes a value (the widest dtype
    an input takes), capped at MAX_DECODED_BYTES unless a few samples need
    more: what the inputs need, not what a file declares. Fixed inputs may
    ride along (a few values each).
    """
    per_sample = sum(math.prod(spec["shape"]) for spec in inputs) * 8
    return max(min(per_sample * samples, MAX_DECODED_BYTES), per_sample * MIN_SAMPLES) + 64 * 1024


def feeds_from_numpy(source, inputs: list[dict], what: str, max_bytes: int | None = None) \
        -> dict[str, np.ndarray]:
    """Read model inputs from a .npy (one-input model) or .npz keyed by input name.

    Args:
        source: a path or a seekable binary file object.
        inputs: the model's input specs.
        what: how to name the source in errors.
        max_bytes: the most the arrays may decode to, checked before they are
            allocated or decompressed; default :func:`input_budget`.

    Raises:
        UserError: unreadable, pickled, over the budget, or a .npy for a model with several inputs.
    """
    limit = input_budget(inputs) if max_bytes is None else max_bytes
    data = load_arrays(source, limit, what, "split the samples across several files or requests")
    if isinstance(data, np.ndarray):
        if len(inputs) != 1:
            names = ", ".join(s["name"] for s in inputs)
            raise UserError(f"a .npy feeds a one-input model; this one takes {names}", "pass a .npz keyed by input name")
        return {inputs[0]["name"]: data}
    return dict(data)
