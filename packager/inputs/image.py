"""``--input-format image-uint8``: a bundle that takes camera frames as they come.

A camera, ``picamera2`` or ``PIL.Image`` gives uint8 pixels, height x width x
channels, RGB. An image model takes floats, usually channels first, scaled
to 0..1 and normalised per channel: ``(pixels / 255 - mean) / std``. Doing
that on the device is numpy work on every frame (a transpose, a divide, a
quantize) that costs a few percent of the inference itself.

Here the normalisation moves into the model, as its first ops, so the
device does none of it:

* the ONNX model gets a new input of the same name that takes the pixel
  values as floats, channels first ([N, C, H, W], what onnx2tf expects and
  turns channels-last), followed by ``Mul`` by ``1 / (255 * std)`` and
  ``Add`` of ``-mean / std`` per channel (and a ``Transpose`` for models
  that were channels-last already). Everything downstream (preparation,
  conversion, calibration, the fidelity check against onnxruntime) runs on
  this model, which computes exactly what the user's model computes on the
  normalised image; ``Reference`` runs it beside the converted one.
* quantization pins that input's range to 0..255 (packager.quantize), so
  its int8 scale is 1 and a pixel is its own quantized value (int8: minus
  128, a flip of the top bit; uint8 I/O: the byte itself). The converted
  model's input is already NHWC, so the frame is copied into the
  interpreter's buffer as it is (edge_runtime.tensors).
* the bundle's contract for that input is a uint8 [N, H, W, C] frame; the
  manifest says ``"format": "image-uint8"`` and keeps the mean and std.

Normalisation cannot be folded into the first convolution's weights
instead: its zero padding is zero in normalised units, which is not a pixel
value, so the border would change.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edge_runtime.errors import UserError

from ..onnx_model import TensorSpec

FORMAT = "image-uint8"
NORMALISED_SUFFIX = "__normalised"


@dataclasses.dataclass(frozen=True)
class ImageInput:
    """The one image input of a model, and the normalisation folded in front of it."""

    name: str
    layout: str  # the user's model: "NCHW" or "NHWC"
    channels: int
    mean: tuple[float, ...]  # per channel, on 0..1 pixels
    std: tuple[float, ...]

    # --- the ONNX side -------------------------------------------------------------------------------------

    def pixel_spec(self, spec: TensorSpec) -> TensorSpec:
        """The new ONNX input: float pixel values 0..255, channels first, dims as the user's input declares."""
        n, *rest = spec.shape
        c, h, w = rest if self.layout == "NCHW" else (rest[2], rest[0], rest[1])
        return TensorSpec(self.name, [n, c, h, w], "float32")

    def pixel_shape(self, shape: list[int]) -> list[int]:
        """The static shape of the new ONNX input, from the user's input's static shape."""
        if self.layout == "NCHW":
            return list(shape)
        n, h, w, c = shape
        return [n, c, h, w]

    def prepend(self, proto) -> list[str]:
        """Put the pixel input and the normalisation in front of the model (in place); says what it did."""
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        graph = proto.graph
        original = next(vi for vi in graph.input if vi.name == self.name)
        spec = TensorSpec(self.name, [d.dim_value if d.HasField("dim_value") and d.dim_value > 0
                                      else (d.dim_param or "?") for d in original.type.tensor_type.shape.dim],
                          "float32")
        normalised = self.name + NORMALISED_SUFFIX
        taken = {n for node in graph.node for n in (*node.input, *node.output)} | {i.name for i in graph.initializer}
        if normalised in taken:
            raise UserError(f"the model already has a tensor named '{normalised}'",
                            "rename it in the ONNX model, or build without --input-format image-uint8")
        for node in graph.node:
            node.input[:] = [normalised if n == self.name else n for n in node.input]
        for out in graph.output:
            if out.name == self.name:
                out.name = normalised

        mean, std = np.asarray(self.mean, np.float64), np.asarray(self.std, np.float64)
        shape = [1, self.channels, 1, 1]
        scale = numpy_helper.from_array((1.0 / (255.0 * std)).astype(np.float32).reshape(shape),
                                        normalised + "_scale")
        shift = numpy_helper.from_array((-mean / std).astype(np.float32).reshape(shape), normalised + "_shift")
        graph.initializer.extend([scale, shift])
        nchw = normalised if self.layout == "NCHW" else normalised + "_nchw"
        nodes = [helper.make_node("Mul", [self.name, scale.name], [normalised + "_scaled"], name=normalised + "_mul"),
                 helper.make_node("Add", [normalised + "_scaled", shift.name], [nchw], name=normalised + "_add")]
        if self.layout == "NHWC":
            nodes.append(helper.make_node("Transpose", [nchw], [normalised], perm=[0, 2, 3, 1],
                                          name=normalised + "_nhwc"))
        for node in reversed(nodes):
            graph.node.insert(0, node)

        pixels = self.pixel_spec(spec)
        new = helper.make_tensor_value_info(self.name, TensorProto.FLOAT,
                                            [d if isinstance(d, int) else (None if d == "?" else d)
                                             for d in pixels.shape])
        index = list(graph.input).index(original)
        graph.input.remove(original)
        graph.input.insert(index, new)
        onnx.checker.check_model(proto)
        return [f"input '{self.name}' takes uint8 {self.layout_text()} frames: (pixels / 255 - mean) / std with "
                f"mean {list(self.mean)}, std {list(self.std)} folded into the model (Mul, Add"
                + (", Transpose" if self.layout == "NHWC" else "") + ")"]

    def layout_text(self) -> str:
        return f"HxWx{self.channels}"

    # --- the device side -----------------------------------------------------------------------------------

    def frames(self, pixels: np.ndarray) -> np.ndarray:
        """Pixel samples as the ONNX input holds them ((samples, N, C, H, W) floats) -> uint8 frames [M, H, W, C]."""
        pixels = pixels.reshape(-1, *pixels.shape[-3:])
        return np.ascontiguousarray(np.moveaxis(pixels, 1, -1)).astype(np.uint8)

    def from_frames(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames [..., H, W, C] -> the ONNX input's float pixels [..., C, H, W]."""
        return np.ascontiguousarray(np.moveaxis(frames, -1, -3)).astype(np.float32)

    def manifest_entry(self, entry: dict) -> dict:
        """The manifest's input entry as the device sees it: uint8 [N, H, W, C] frames.

        The build maps the ONNX input (pixels, [N, C, H, W]) onto the TFLite
        tensor with ``permutation``; the frame is that input moved
        channels-last, so the frame's permutation is the composition.
        """
        to_onnx = [0, 3, 1, 2]  # onnx = frame.transpose(to_onnx)
        n, c, h, w = entry["shape"]
        return {
            **entry,
            "shape": [n, h, w, c],
            "dtype": "uint8",
            "permutation": [to_onnx[p] for p in entry["permutation"]],
            "format": FORMAT,
            "normalisation": {"mean": list(self.mean), "std": list(self.std), "layout": self.layout},
        }


def image_layout(shape: list[int]) -> tuple[str, int, int, int] | None:
    """Which axis of a 4-D input holds the channels (1 or 3): ("NCHW"|"NHWC", C, H, W); None: not an image."""
    if len(shape) == 4 and shape[1] in (1, 3):
        return "NCHW", shape[1], shape[2], shape[3]
    if len(shape) == 4 and shape[3] in (1, 3):
        return "NHWC", shape[3], shape[1], shape[2]
    return None


def normalisation(mean, std, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """--mean and --std as one float32 value per channel (by default 0 and 1).

    Raises:
        UserError: a count of values other than 1 or the channels, or a zero std.
    """
    return _per_channel(mean, channels, "--mean", 0.0), _per_channel(std, channels, "--std", 1.0)


def _per_channel(values: tuple[float, ...] | None, channels: int, flag: str, default: float) -> np.ndarray:
    if not values:
        return np.full(channels, default, dtype=np.float32)
    if len(values) not in (1, channels):
        raise UserError(
            f"{flag} has {len(values)} values, the input has {channels} channels",
            f"give 1 or {channels} comma-separated values",
        )
    arr = np.asarray(values, dtype=np.float32)
    if flag == "--std" and np.any(arr == 0):
        raise UserError("--std has a zero value", "give non-zero standard deviations")
    return np.broadcast_to(arr, (channels,)).copy()


def plan(inputs: list[TensorSpec], shapes: dict[str, list[int]], mean, std) -> ImageInput:
    """Which input takes the frames, and its normalisation; refuses models that have no such input.

    Raises:
        UserError: no or several 4-D float inputs with 1 or 3 channels, or
            --mean/--std that do not fit the channels.
    """
    candidates = [spec for spec in inputs if spec.is_float and image_layout(shapes[spec.name]) is not None]
    if len(candidates) != 1:
        found = ", ".join(f"{s.name} {s.dtype} {shapes[s.name]}" for s in inputs)
        raise UserError(
            f"--input-format image-uint8 needs exactly one image input (float, 4-D, 1 or 3 channels); "
            f"{'none' if not candidates else len(candidates)} of this model's inputs are: {found}",
            "build without --input-format (float tensors in), or export the model with one image input",
        )
    spec = candidates[0]
    layout, channels, _, _ = image_layout(shapes[spec.name])
    mean_v, std_v = normalisation(mean, std, channels)
    # as the user wrote them (the float32 arrays would print 0.48500001430511475)
    return ImageInput(spec.name, layout, channels, tuple(round(float(v), 7) for v in mean_v),
                      tuple(round(float(v), 7) for v in std_v))
