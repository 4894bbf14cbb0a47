"""Input and output files of `edge-run run` and `edge-run health`: .npy, .npz, camera-frame images.

Every file is checked before the model runs (an --output that cannot be
written, an image of the wrong size) and refused in one line.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import UserError
from .images import FORMATS_TEXT, IMAGE_SUFFIXES, open_image
from .tensors import feeds_from_numpy


def read_input(path: str, model) -> dict[str, np.ndarray]:
    if not Path(path).is_file():
        raise UserError(f"input file {path} does not exist", "pass a .npy (one-input model) or .npz")
    if Path(path).suffix.lower() in IMAGE_SUFFIXES:
        return read_image(Path(path), model)
    return feeds_from_numpy(path, model.inputs, path)


def read_image(path: Path, model) -> dict[str, np.ndarray]:
    """An image file for a bundle that takes camera frames: decoded as it is, never resized or converted.

    A frame of another size, or with another number of channels (greyscale
    for an RGB model, RGBA), is refused with what the bundle takes: the
    camera pipeline on the device should deliver that, and a silent resize
    here would hide that it does not.

    The size the file declares is compared before a pixel is decoded: a PNG
    of 180 KB can declare 7900x7900 pixels and took 660 MB to decode, more
    than a 512 MB board has, only to be refused for its size afterwards.
    """
    from .tensors import IMAGE_FORMAT, frame_shape, frames

    images = [s for s in model.inputs if s.get("format") == IMAGE_FORMAT]
    if len(model.inputs) != 1 or not images:
        raise UserError(f"{path} is an image file; {model.name} takes "
                        + ", ".join(f"{s['name']} {s['dtype']} {s['shape']}" for s in model.inputs)
                        + ("" if images else " (tensors, not camera frames)"),
                        "pass a .npy or .npz, or build the bundle with --input-format image-uint8")
    spec = images[0]
    _, height, width, channels = spec["shape"]

    def check(img):
        if (img.height, img.width) != (height, width):
            bands = "" if img.mode == "P" else f"x{len(img.getbands())}"
            raise UserError(f"{path}: input '{spec['name']}' takes frames of {frame_shape(spec)}, found "
                            f"{img.height}x{img.width}{bands} ({path.stat().st_size:,}-byte {img.format} file; "
                            "not decoded)",
                            f"resize the frames to {width}x{height} (width x height) before, e.g. PIL's "
                            "Image.resize, or ask the camera for that size")

    with open_image(path, str(path), f"pass a {FORMATS_TEXT} file", check) as img:  # one door (images.py)
        mode = img.mode
        if mode == "P":  # a palette indexes colours: decoding it gives the RGB(A) pixels
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        elif mode == "1":
            img = img.convert("L")
        pixels = np.asarray(img)
    if pixels.dtype != np.uint8:
        raise UserError(f"{path} holds {mode} pixels ({pixels.dtype}), not 8-bit",
                        "save it as an 8-bit RGB or greyscale image")
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    if pixels.shape[2] != channels:
        raise UserError(f"{path} is a {img.mode} image ({pixels.shape[2]} channel(s)); {model.name} takes "
                        f"{channels} ({'RGB' if channels == 3 else 'greyscale'})",
                        f"convert it first, e.g. Image.open(f).convert('{'RGB' if channels == 3 else 'L'}')")
    frames(pixels, spec, str(path))  # the size, said with the file's name
    return {spec["name"]: pixels}


def check_output(path: str) -> Path:
    """--output names a file we can write: checked before the model runs, so a run never ends in a traceback."""
    out = Path(path)
    parent = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise UserError(f"--output {out} is a folder", "name the .npz file to write, e.g. --output y.npz")
    if not parent.is_dir():
        raise UserError(f"--output {out}: the folder {parent} does not exist", "create it, or write elsewhere")
    if not os.access(parent, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UserError(f"--output {out} cannot be written here (permission denied)", "write elsewhere")
    return out


def write_npz(out: Path, outputs: dict[str, np.ndarray]) -> None:
    """Written whole or not at all: a temp file beside it, renamed into place."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.npz")  # savez appends .npz otherwise
    try:
        np.savez(tmp, **outputs)
        os.replace(tmp, out)
    except OSError as exc:
        raise UserError(f"could not write --output {out} ({exc.strerror or exc})", "free space or write elsewhere") from None
    finally:
        tmp.unlink(missing_ok=True)
