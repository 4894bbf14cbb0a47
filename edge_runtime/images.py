"""Image files from anyone: the one door through which their bytes reach a decoder.

A frame given to ``edge-run run`` and the images of a calibration or
evaluation folder on the host are opened here, by the same rules:

* only Pillow's JPEG, PNG, BMP, PPM and WebP plugins: whatever a file's
  suffix says, it is opened as one of these or refused, so none of Pillow's
  other format plugins (TIFF, PSD, FITS, ...) ever parses a file from
  elsewhere;
* the size the file declares is checked before a pixel is decoded (a PNG of
  180 KB can declare 7900x7900 pixels and take 660 MB once decoded): first
  by the caller (the runner wants exactly its frame's size), then against
  ``MAX_PIXELS``; Pillow's own bomb check, which only warns below twice its
  limit, is an error too;
* whatever a decoder raises on broken data is one ``UserError`` naming the
  file: besides OSError and ValueError, a PNG chunk of a garbage type raises
  SyntaxError (found by fuzzing).

Standard library only at import; Pillow when a file is opened (a device
has it only where a bundle takes camera frames).
"""

from __future__ import annotations

import contextlib
import re
import warnings
from pathlib import Path
from typing import Callable, Iterator

from .errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".webp")
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "PPM", "WEBP")
FORMATS_TEXT = f"{', '.join(IMAGE_FORMATS[:-1])} or {IMAGE_FORMATS[-1]}"
# Pixels an image may declare (a 9000x7000 photo); more is a decompression bomb or a broken file.
MAX_PIXELS = 64_000_000


def _pillow(path: Path):
    try:
        from PIL import Image
    except ImportError:
        raise UserError(f"reading {path.suffix} files needs Pillow, which this Python lacks",
                        "install the bundle with its install.sh (image bundles carry Pillow's wheel), or pass a "
                        ".npy of uint8 frames") from None
    return Image


@contextlib.contextmanager
def open_image(path: Path, name: str, hint: str, check: Callable | None = None) -> Iterator:
    """Open an image file, its header only, by the rules above; the block decodes it.

    Args:
        path: the file.
        name: how refusals name it ("calibration image PATH", or the path).
        hint: what to do about a file that does not decode.
        check: called with the opened image (size, mode, format known, no
            pixel decoded) before the size limit; refuses with its own
            ``UserError``.

    Yields:
        The ``PIL.Image.Image``; whatever decoding it in the block raises
        (``load``, ``convert``, ``np.asarray``) becomes one UserError.
    """
    Image = _pillow(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=IMAGE_FORMATS) as img:  # reads the header only
                if check is not None:
                    check(img)
                if img.width * img.height > MAX_PIXELS:
                    raise _too_large(path, name, f"{img.width}x{img.height} pixels")
                yield img
    except UserError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_large(path, name, f"{int(found[1]):,} pixels" if found else "more pixels than Pillow allows") \
            from None
    except Exception as exc:  # noqa: BLE001 (Pillow's decoders raise what they like on broken data: a file that
        # does not decode is bad input, said in one line, whatever its decoder raised)
        raise UserError(f"{name} cannot be read as an image ({type(exc).__name__}: {exc})", hint) from None


def _too_large(path: Path, name: str, declared: str) -> UserError:
    return UserError(
        f"{name} ({path.stat().st_size:,} bytes) declares {declared}, over the limit of "
        f"{MAX_PIXELS // 1_000_000} megapixels; not decoded (a decompression bomb, or a broken file)",
        "remove it, or downscale it: nothing larger than the model's input is needed",
    )
