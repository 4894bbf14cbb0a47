"""Stage 2: the calibration set, read from what the user already has.

Every source is turned into ``{input name: array (N, *input shape)}`` in the
ONNX model's own layout and dtype: exactly what the user would feed
onnxruntime. Layout changes for the converter happen elsewhere, never here
and never by the user.

Sources:
  * a folder of images (jpg/png/bmp) for a model with one image input:
    resized to the input's HxW, scaled to 0..1, then ``(x - mean) / std``;
  * a ``.npy`` for a model with one input;
  * a ``.npz`` with one array per input name;
  * ``random``, only when asked for by name (the figures then mean nothing).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from edge_runtime.errors import UserError
from edge_runtime.images import open_image

from .inputs.config import is_config_input
from .inputs.image import image_layout, normalisation
from .onnx_model import TensorSpec

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")  # what a folder is read for (README); a subset of the runner's
MIN_SAMPLES = 10
UNIFORM_AXIS = 4  # axes longer than this (not colour channels) must vary within a sample

Calibration = dict[str, np.ndarray]


def batched_samples(array: np.ndarray, shape: list[int], name: str, source: str) -> np.ndarray:
    """View an array as samples of one input, the build's calibration format: returns (N, *shape).

    Accepted: ``(N, *shape)``, and when the input's first dimension is a
    batch of 1, ``(N, *shape[1:])`` (samples along the batch axis; a single
    sample of exactly ``shape`` is that with N=1).
    """
    shape = list(shape)
    got = list(array.shape)
    if len(got) == len(shape) + 1 and got[1:] == shape:
        return array
    if shape and shape[0] == 1 and len(got) == len(shape) and got[1:] == shape[1:]:
        return array.reshape(got[0], *shape)
    accepted = f"(N, {', '.join(map(str, shape))})"
    if shape and shape[0] == 1:
        accepted += f" or (N, {', '.join(map(str, shape[1:]))})"
    raise UserError(
        f"{source}: input '{name}' must have shape {accepted}, found {tuple(got)}",
        "give samples in the ONNX model's own layout (the one onnxruntime takes), one per row",
    )


def _read_image(file: Path, channels: int, height: int, width: int) -> np.ndarray:
    """One image as (H, W, C) float pixels in 0..255, resized to the input's HxW.

    Opened by the runner's own rules (edge_runtime.images): the formats
    Pillow may parse, the declared size bounded before a pixel is decoded,
    any decoder error one line naming the file.
    """
    from PIL import Image

    with open_image(file, f"calibration image {file}", "remove or replace the file") as img:
        img = img.convert("RGB" if channels == 3 else "L")
        img = img.resize((width, height), Image.BILINEAR)
        return np.asarray(img, dtype=np.float32).reshape(height, width, channels)


def load_image_folder(folder: Path, spec: TensorSpec, shape: list[int], mean, std, raw: bool = False) -> np.ndarray:
    """Images -> (N, *shape[1:]) float array in the input's layout (``raw``: pixel values 0..255)."""
    found = image_layout(shape)
    if found is None:
        raise UserError(
            f"an image folder can calibrate only a 4-D image input with 1 or 3 channels; "
            f"input '{spec.name}' has shape {shape}",
            "pass a .npy (one input) or .npz (one array per input name) of real samples instead",
        )
    layout, channels, height, width = found
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(
            f"calibration folder {folder} holds no images (looked for {', '.join(IMAGE_SUFFIXES)})",
            "put representative images from the device's real input in the folder",
        )
    mean_v, std_v = normalisation(mean, std, channels)
    samples = []
    for file in files:
        pixels = _read_image(file, channels, height, width)
        x = pixels if raw else (pixels / 255.0 - mean_v) / std_v
        samples.append(x.transpose(2, 0, 1) if layout == "NCHW" else x)
    return np.stack(samples).astype(spec.dtype)


def _load_array_file(path: Path):
    """The array of a .npy, or the arrays of a .npz by name (``.files``, ``with`` work as on np.load's).

    Sizes are checked before anything is allocated or inflated (a header can
    declare petabytes; a small .npz can inflate to gigabytes), pickles are
    never loaded. The limit is generous, calibration sets are legitimately
    large: 4 GiB of arrays (500 samples of a 1x3x640x640 float32 input take 2.5 GB).
    """
    from edge_runtime.arrays import load_arrays

    limit = 4 * 1024 ** 3
    arrays = load_arrays(path, limit, str(path), "use fewer samples: 100-500 representative ones are enough")
    one = isinstance(arrays, np.ndarray)
    if one == (Path(path).suffix == ".npz"):  # callers go by the name
        holds = "one array, as np.save writes" if one else "arrays by name, as np.savez writes"
        raise UserError(f"{path} holds {holds}; its name ends in {Path(path).suffix or 'nothing'}",
                        "name it .npy for np.save, .npz for np.savez")
    return arrays


def check_samples(array: np.ndarray, spec: TensorSpec, shape: list[int], source: str) -> np.ndarray:
    """Check one input's samples: shape, dtype, finite values.

    Returns the samples as (N, *shape) in the input's dtype.
    """
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise UserError(
            f"{source}: input '{spec.name}' expects numbers ({spec.dtype}), found dtype {array.dtype}",
            "save numeric arrays",
        )
    want_float = spec.is_float
    if want_float and array.dtype.kind != "f":
        raise UserError(
            f"{source}: input '{spec.name}' takes {spec.dtype}, found {array.dtype}",
            "give the float values you feed onnxruntime (already scaled and normalised), not raw integers",
        )
    if not want_float and array.dtype.kind == "f":
        raise UserError(
            f"{source}: input '{spec.name}' takes {spec.dtype} (e.g. ids), found {array.dtype}",
            f"save the values as {spec.dtype}",
        )
    samples = batched_samples(array, shape, spec.name, source)
    if want_float:
        if not np.all(np.isfinite(samples)):
            raise UserError(f"{source}: input '{spec.name}' holds NaN or Inf values", "clean the samples")
        return samples.astype(spec.dtype)
    info = np.iinfo(spec.dtype) if spec.dtype != "bool" else None
    if info is not None and samples.size and (samples.min() < info.min or samples.max() > info.max):
        raise UserError(
            f"{source}: input '{spec.name}' values span {samples.min()}..{samples.max()}, outside {spec.dtype}",
            "check the samples",
        )
    return samples.astype(spec.dtype)


def random_calibration(inputs: list[TensorSpec], shapes: dict[str, list[int]], count: int = 64) -> Calibration:
    """Random samples: lets a pipeline run, proves nothing about accuracy."""
    rng = np.random.default_rng(0)
    data = {}
    for spec in inputs:
        shape = (count, *shapes[spec.name])
        if spec.is_float:
            data[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        else:
            data[spec.name] = rng.integers(0, 2, shape).astype(spec.dtype)
    return data


def load_calibration(
    source: str,
    inputs: list[TensorSpec],
    shapes: dict[str, list[int]],
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    image=None,
) -> Calibration:
    """Read the calibration set.

    Args:
        source: folder of images, .npy, .npz, or "random".
        inputs: the model's inputs.
        shapes: the static shape of every input (after stage 2).
        mean, std: image normalisation, for image folders only.
        image: the ``packager.inputs.image.ImageInput`` of an
            ``--input-format image-uint8`` build: its input takes pixel values
            (images are not normalised, the model does it; arrays are uint8
            frames [N, H, W, C], as the device will get them).

    Returns:
        {input name: (N, *shape) array in the ONNX layout and dtype}.
    """
    if source == "random":
        data = random_calibration(inputs, shapes)
        if image is not None:
            pixels = np.random.default_rng(0).integers(0, 256, data[image.name].shape)
            data[image.name] = pixels.astype(np.float32)
        return data
    path = Path(source)
    if not path.exists():
        raise UserError(
            f"calibration data {source} does not exist",
            "pass a folder of images, a .npy, a .npz, or --calibration random",
        )
    if (mean or std) and not path.is_dir() and image is None:
        raise UserError(
            "--mean/--std apply to image folders only; arrays must already be normalised",
            "drop --mean/--std, or pass an image folder",
        )
    if path.is_dir():
        spec = _one_input(inputs, "an image folder")
        if image is not None:  # pixel values: the model normalises
            images = load_image_folder(path, spec, shapes[spec.name], None, None, raw=True)
        else:
            images = load_image_folder(path, spec, shapes[spec.name], mean, std)
        data = {spec.name: check_samples(images, spec, shapes[spec.name], str(path))}
    elif path.suffix in (".npy", ".npz"):
        data = _load_arrays(path, inputs, shapes, image)
    else:
        raise UserError(
            f"calibration data {source} is neither a folder, a .npy nor a .npz",
            "pass a folder of images, a .npy, a .npz, or --calibration random",
        )
    _check_count(source, data)
    return data


def _one_input(inputs: list[TensorSpec], source: str) -> TensorSpec:
    if len(inputs) != 1:
        raise UserError(
            f"{source} calibrates a model with one input; this model has {len(inputs)}: "
            f"{', '.join(s.name for s in inputs)}",
            "pass a .npz with one array per input name",
        )
    return inputs[0]


def _load_arrays(path: Path, inputs: list[TensorSpec], shapes: dict[str, list[int]], image) -> Calibration:
    """The samples of a .npy (one input) or a .npz (one array per input name), checked."""
    if path.suffix == ".npy":
        spec = _one_input(inputs, "a .npy")
        return {spec.name: _check_array(_load_array_file(path), spec, shapes[spec.name], path, image)}
    names = [s.name for s in inputs]
    with _load_array_file(path) as archive:
        keys = list(archive.files)
        missing = [n for n in names if n not in keys]
        extra = [k for k in keys if k not in names]
        if missing or extra:
            raise UserError(
                f"{path}: arrays must be named after the model's inputs ({', '.join(names)}); "
                f"missing: {', '.join(missing) or 'none'}; unexpected: {', '.join(extra) or 'none'}",
                "np.savez(path, **{input_name: samples})",
            )
        return {s.name: _check_array(archive[s.name], s, shapes[s.name], path, image) for s in inputs}


def _check_array(array: np.ndarray, spec: TensorSpec, shape: list[int], path: Path, image) -> np.ndarray:
    """One input's samples; the camera-frame input's as uint8 frames [N, H, W, C], as the device gets them."""
    if image is None or spec.name != image.name:
        return check_samples(array, spec, shape, str(path))
    n, c, h, w = shape
    if array.dtype != np.uint8:
        raise UserError(f"{path}: input '{spec.name}' takes uint8 frames (--input-format image-uint8), "
                        f"found {array.dtype}", f"save the frames as uint8 [N, {h}, {w}, {c}], as the camera "
                        "gives them (not normalised: the model does that)")
    frames = batched_samples(array, [n, h, w, c], spec.name, str(path))
    return check_samples(image.from_frames(frames), spec, shape, str(path))


def _check_count(source: str, data: Calibration) -> None:
    counts = {name: len(arr) for name, arr in data.items()}
    if len(set(counts.values())) != 1:
        raise UserError(
            f"{source}: every input needs the same number of samples, found {counts}",
            "give each input one sample per calibration example",
        )
    count = next(iter(counts.values()))
    if count < MIN_SAMPLES:
        raise UserError(
            f"{source}: {count} calibration samples, at least {MIN_SAMPLES} are needed "
            "(some are held out to measure int8 fidelity)",
            "give 100-500 representative samples",
        )


def lack_of_variation(data: Calibration) -> list[str]:
    """What in the calibration set does not vary: one line per input, empty when it all varies.

    Identical or blank samples calibrate the int8 ranges on nothing, and the
    held-out samples that judge fidelity are then copies of the calibration
    ones: the build would report perfect fidelity for a model never tested on
    anything. Configuration inputs next to other inputs (a sample rate, see
    packager.inputs.config) are the same in every sample by design.
    """
    problems = []
    for name, samples in data.items():
        count = len(samples)
        if not count or not samples[0].size:
            continue
        flat = samples.reshape(count, -1)
        if len(data) > 1 and is_config_input(samples.dtype, flat.shape[1]):
            continue
        lows, highs = flat.min(axis=1), flat.max(axis=1)
        if lows.min() == highs.max():
            problems.append(f"input '{name}': every value of all {count} samples is {lows[0].item()}")
            continue
        distinct = len({hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat})
        if distinct == 1:
            problems.append(f"input '{name}': all {count} samples are identical")
        elif distinct < MIN_SAMPLES:
            problems.append(f"input '{name}': only {distinct} distinct samples among {count}, "
                            "so held-out samples repeat calibration ones")
        elif _all_uniform(samples):
            problems.append(f"input '{name}': each of the {count} samples is uniform, one level all over "
                            "(blank images, silence)")
    return problems


def _all_uniform(samples: np.ndarray) -> bool:
    """Every sample is constant along each long axis (a blank image: one colour per channel).

    Axes of a few values (colour channels, a batch of 1) may vary; a sample
    with no long axis (a handful of features) is never called uniform.
    """
    long_axes = [axis for axis in range(1, samples.ndim) if samples.shape[axis] > UNIFORM_AXIS]
    return bool(long_axes) and all(np.array_equal(samples.min(axis=axis), samples.max(axis=axis))
                                   for axis in long_axes)


MAX_CALIBRATION = 500  # samples that calibrate: int8 ranges settle long before (TensorFlow suggests 100-500)


def split_holdout(data: Calibration, fraction: float = 0.2, max_holdout: int = 300,
                  max_calibration: int = MAX_CALIBRATION) -> tuple[Calibration, Calibration]:
    """Split into (calibration, held-out) sets; held-out samples never calibrate.

    Every k-th sample is held out, so a folder sorted by class still gives
    both sets every class; of the rest, at most ``max_calibration`` evenly
    spread samples calibrate (each calibration pass runs the model on every
    one, and the ladder calibrates up to three times).
    """
    count = len(next(iter(data.values())))
    n_hold = max(2, min(max_holdout, int(round(count * fraction))))
    hold_idx = np.linspace(0, count - 1, n_hold).round().astype(int)
    mask = np.zeros(count, dtype=bool)
    mask[hold_idx] = True
    rest = np.flatnonzero(~mask)
    if len(rest) > max_calibration:
        rest = rest[np.linspace(0, len(rest) - 1, max_calibration).round().astype(int)]
    calib = {k: v[rest] for k, v in data.items()}
    hold = {k: v[mask] for k, v in data.items()}
    return calib, hold
