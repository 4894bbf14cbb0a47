"""Stages 1–2 of `edgepack build`: the user's model and samples, read and checked.

The ONNX model with its dynamic dimensions fixed (and, for camera bundles,
the pixel input in front), the float reference the user ran (onnxruntime on
the model as given), and the calibration samples split into the part that
calibrates and the held-out part that judges.
"""

from __future__ import annotations

import copy
import dataclasses

from edge_runtime.errors import UserError

from .calibration import lack_of_variation, load_calibration, split_holdout
from .inputs.image import FORMAT as IMAGE_FORMAT
from .inputs.image import ImageInput
from .inputs.image import plan as plan_image_input
from .kinds import parse_declared
from .onnx_model import load_onnx
from .reference import Reference
from .report import detail, warn
from .shapes import fix_shapes, resolve_shapes


@dataclasses.dataclass
class Source:
    model: object  # OnnxModel
    shapes: dict[str, list[int]]
    fixed: object  # the shape-fixed ONNX proto
    reference: Reference
    image: ImageInput | None
    notes: list[str]  # what putting the pixel input in front changed
    declared: dict  # --output-kind: {output name: (kind, threshold or None)}


@dataclasses.dataclass
class Samples:
    data: dict  # every sample, ONNX layout
    calib: dict  # the part that calibrates
    holdout: dict  # the part that judges
    warnings: list[str]  # what makes the figures meaningless (manifest: quantization.calibration.warnings)

    @property
    def counts(self) -> tuple[int, int]:
        return len(next(iter(self.calib.values()))), len(next(iter(self.holdout.values())))


def load_source(opts, overrides: dict[str, list[int]]) -> Source:
    """Stage 1: the model, its shapes fixed, camera input in front, and its float reference."""
    model = load_onnx(opts.model)
    shapes = resolve_shapes(model.inputs, overrides)
    image, notes = None, []
    if opts.input_format == IMAGE_FORMAT:
        image = plan_image_input(model.inputs, shapes, opts.mean, opts.std)
        model, notes = _with_pixel_input(model, shapes, image)
    declared = parse_declared(opts.output_kinds, [o.name for o in model.outputs])
    fixed = fix_shapes(model, shapes)
    # The user's own model, as they ran it: some only load in onnxruntime with
    # dynamic shapes (branches never taken that fit no static shape).
    return Source(model, shapes, fixed, Reference(model.proto), image, notes, declared)


def read_samples(opts, source: Source) -> Samples:
    """Stage 2: the calibration data, warned about (or refused, strict) when it cannot mean anything."""
    if opts.calibration == "random":
        warn("--calibration random: the model is calibrated on noise; its accuracy figures mean "
             "NOTHING. Use real samples for anything you ship.")
    data = load_calibration(opts.calibration, source.model.inputs, source.shapes, opts.mean, opts.std, source.image)
    warnings = calibration_warnings(opts, data)
    samples = Samples(data, *split_holdout(data), warnings)
    total, (calibrating, held) = len(next(iter(data.values()))), samples.counts
    if calibrating + held < total:
        detail(f"{total} samples: {held} held out to judge; {calibrating} of the other {total - held}, evenly spread, "
               "calibrate (more would not move the int8 ranges, and each calibration runs the model on every one)")
    return samples


def calibration_warnings(opts, data: dict) -> list[str]:
    """What makes the fidelity figures meaningless: warned now and kept in the manifest; refused by strict.

    Calibration data that does not vary (identical or blank samples) gives a
    perfect fidelity report for a model nobody tested (packager.calibration).
    """
    found = lack_of_variation(data)
    if found and opts.precision == "strict":
        raise UserError(
            f"--precision strict: the calibration data does not vary ({'; '.join(found)}); "
            "fidelity measured on it would mean nothing",
            "give representative samples of the device's real input, or drop --precision strict "
            "to build anyway (with a warning)",
        )
    if found:
        warn(f"the calibration data does not vary: {'; '.join(found)}. The int8 ranges are calibrated on it and "
             "the fidelity figures measured on it mean NOTHING. Give representative samples "
             "(--precision strict refuses such data).")
    notes = [f"no variation: {line}" for line in found]
    if opts.calibration == "random":
        notes.insert(0, "--calibration random: calibrated and judged on noise")
    return notes


def as_frames(data: dict, image: ImageInput | None) -> dict:
    """Samples as the bundle takes them: an image input's pixel values as uint8 frames."""
    if image is None:
        return data
    return {k: image.frames(v) if k == image.name else v for k, v in data.items()}


def _with_pixel_input(model, shapes: dict, image: ImageInput):
    """The model with ``image``'s pixel input in front (a copy; ``shapes`` is updated in place)."""
    proto = copy.deepcopy(model.proto)
    notes = image.prepend(proto)
    inputs = [image.pixel_spec(s) if s.name == image.name else s for s in model.inputs]
    shapes[image.name] = image.pixel_shape(shapes[image.name])
    return dataclasses.replace(model, proto=proto, inputs=inputs), notes
