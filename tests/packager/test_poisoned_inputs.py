"""Poisoned inputs to `edgepack build` (issue 12, section 3): refused in one line before any work.

A decompression-bomb image, an -o that cannot hold the bundle, calibration
data without variation (a perfect fidelity report for a model nobody tested).
Each goes through the real command line; all but one fail before conversion.
"""

import io
import json
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from edge_runtime.images import MAX_PIXELS
from packager.workspace import missing_dirs as _missing_dirs, remove_empty as _remove_empty
from packager.calibration import lack_of_variation
from packager.cli import main
from tests.conftest import run_cli
from tests.fixtures.image_files import PNG_SIGNATURE, png_chunk, png_with_a_garbage_chunk
from tests.fixtures.models import dynamic_conv

SHAPE = ("--input-shape", "x=1,3,16,16")


@pytest.fixture
def model(tmp_path):
    return dynamic_conv(tmp_path / "net.onnx")


def refused(capsys, out, *args) -> tuple[str, str]:
    """Run a build that must fail: exit 2, one error line, no traceback. Returns (error line, stderr)."""
    code = main(["build", *map(str, args), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0], err


def varied_images(folder, count=10):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i:02}.png")
    return folder


def png_declaring(path, width, height):
    """A real PNG of a few hundred KB whose 1-bit pixels decode to width x height (a decompression bomb)."""
    row = b"\0" * (1 + -(-width // 8))  # filter byte + packed bits
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row * 1000) for _ in range(height // 1000)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b""))
    return path


def jpeg_declaring(path, width, height):
    """A 16x16 JPEG whose frame header is edited to declare width x height."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 20, 200)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


# -- decompression bombs ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "make, width, height, declared",
    [
        (png_declaring, 30000, 30000, "900,000,000 pixels"),  # beyond PIL's own error limit
        (png_declaring, 10000, 9000, "90,000,000 pixels"),  # where PIL only warns
        (png_declaring, 9000, 8000, "9000x8000 pixels"),  # under PIL's limit, over ours
        (jpeg_declaring, 9000, 8000, "9000x8000 pixels"),
    ],
    ids=["png-30000x30000", "png-pil-warns", "png-over-our-limit", "jpeg-over-our-limit"],
)
def test_decompression_bomb_image_refused(capsys, tmp_path, model, make, width, height, declared):
    assert width * height > MAX_PIXELS
    folder = varied_images(tmp_path / "images")
    bomb = make(folder / f"bomb.{'png' if make is png_declaring else 'jpg'}", width, height)
    assert bomb.stat().st_size < 200_000  # small on disk, gigabytes decoded
    out = tmp_path / "dist"
    msg, _ = refused(capsys, out, model, "--target", "rpi4", *SHAPE, "--calibration", folder)
    assert str(bomb) in msg and declared in msg and "limit of 64 megapixels" in msg, msg
    assert not out.exists()


def test_a_calibration_image_that_does_not_decode_is_named_in_one_line(tmp_path, model):
    """A PNG whose pixel data a chunk of a garbage type interrupts: its header is sound, and decoding it raises
    SyntaxError, which ended the build in a traceback (exit 1). The real command line, as a user runs it."""
    folder = varied_images(tmp_path / "images")
    broken = folder / "05.png"
    broken.write_bytes(png_with_a_garbage_chunk(np.random.default_rng(1).integers(0, 256, (16, 16, 3), np.uint8)))
    out = tmp_path / "dist"
    out.mkdir()
    build = run_cli("packager", "build", model, "--target", "rpi4", *SHAPE, "--calibration", folder, "-o", out,
                    check=False)
    assert build.returncode == 2 and "Traceback" not in build.stderr, build.stderr
    errors = [line for line in build.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"calibration image {broken} cannot be read as an image (SyntaxError: " in errors[0], \
        build.stderr
    assert "[3/9]" not in build.stderr and list(out.iterdir()) == []


# -- -o that cannot hold the bundle -----------------------------------------------------------------------------------

def _file(tmp_path):
    target = tmp_path / "taken"
    target.write_text("keep me")
    return target, target, "is an existing file, not a folder"


def _under_file(tmp_path):
    blocker = tmp_path / "taken"
    blocker.write_text("keep me")
    return blocker / "dist", blocker, f"{blocker} is an existing file, not a folder"


def _broken_link(tmp_path):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "gone")
    return link, link, "is a broken symlink"


def _unwritable(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes to any folder: permissions cannot make one unwritable")
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    return folder / "dist", folder, "is a folder you cannot write to"


@pytest.mark.parametrize("case", [_file, _under_file, _broken_link, _unwritable],
                         ids=["file", "under-a-file", "broken-symlink", "unwritable-folder"])
def test_out_dir_is_a_file_refused(capsys, tmp_path, model, case):
    out, blocker, expect = case(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    msg, err = refused(capsys, out, model, "--target", "rpi4", *SHAPE, "--calibration", "random")
    assert f"-o/--out-dir {out} cannot hold the bundle" in msg and expect in msg, msg
    assert "[1/9]" not in err  # refused before the model was loaded
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if blocker.is_file():
        assert blocker.read_text() == "keep me"


def test_out_dir_parents_created_by_a_failed_build_are_removed(tmp_path):
    out = tmp_path / "a" / "b" / "dist"
    created = _missing_dirs(out)
    assert created == [out, out.parent, out.parent.parent]
    out.mkdir(parents=True)
    _remove_empty(created)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "mine.txt").write_text("the user's")
    created = _missing_dirs(out)
    out.mkdir(parents=True)
    _remove_empty(created)
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["mine.txt"]


# -- calibration data without variation -------------------------------------------------------------------------------

RNG = np.random.default_rng(1)
ONE_SAMPLE = RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)
DEGENERATE = {
    "constant": (np.zeros((20, 3, 16, 16), np.float32), "every value of all 20 samples is 0.0"),
    "identical": (np.repeat(ONE_SAMPLE, 20, axis=0), "all 20 samples are identical"),
    "few-distinct": (np.tile(RNG.standard_normal((3, 3, 16, 16)).astype(np.float32), (7, 1, 1, 1)),
                     "only 3 distinct samples among 21"),
    "blank-samples": (np.broadcast_to(np.linspace(-1, 1, 20, dtype=np.float32)[:, None, None, None],
                                      (20, 3, 16, 16)).copy(), "each of the 20 samples is uniform"),
}


@pytest.mark.parametrize("kind", list(DEGENERATE))
def test_constant_calibration_refused_under_strict(capsys, tmp_path, model, kind):
    array, expect = DEGENERATE[kind]
    np.save(tmp_path / "calib.npy", array)
    out = tmp_path / "dist"
    msg, err = refused(capsys, out, model, "--target", "rpi4", *SHAPE, "--calibration", tmp_path / "calib.npy",
                       "--precision", "strict")
    assert "--precision strict: the calibration data does not vary" in msg and expect in msg, msg
    assert "[3/9]" not in err  # before wheels and conversion
    assert not out.exists()


def test_blank_images_refused_under_strict(capsys, tmp_path, model):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(12):
        Image.new("RGB", (16, 16), (20 * i, 10 * i, 5 * i)).save(folder / f"{i:02}.png")
    out = tmp_path / "dist"
    msg, _ = refused(capsys, out, model, "--target", "rpi4", *SHAPE, "--calibration", folder, "--precision", "strict")
    assert "each of the 12 samples is uniform" in msg, msg
    assert not out.exists()


def test_strict_with_accept_low_fidelity_refused(capsys, tmp_path, model):
    out = tmp_path / "dist"
    msg, err = refused(capsys, out, model, "--target", "rpi4", *SHAPE, "--calibration", "random",
                       "--precision", "strict", "--accept-low-fidelity")
    assert "--precision strict and --accept-low-fidelity contradict each other" in msg, msg
    assert "[1/9]" not in err and not out.exists()


def test_strict_with_random_calibration_refused(capsys, tmp_path, model):
    out = tmp_path / "dist"
    msg, err = refused(capsys, out, model, "--target", "rpi4", *SHAPE, "--calibration", "random",
                       "--precision", "strict")
    assert "--precision strict refuses --calibration random" in msg, msg
    assert "[1/9]" not in err and not out.exists()


def test_varied_calibration_is_not_flagged():
    varied = RNG.standard_normal((20, 1, 3, 16, 16)).astype(np.float32)
    assert lack_of_variation({"x": varied}) == []
    # a configuration input (a sample rate) is the same in every sample by design
    rate = np.full((20, 1), 16000, np.int64)
    assert lack_of_variation({"x": varied, "sr": rate}) == []
    # ... but not when it is the model's only input
    assert lack_of_variation({"sr": rate}) == ["input 'sr': every value of all 20 samples is 16000"]
    # a data input that never changes is flagged next to one that does
    state = np.zeros((20, 1, 2, 64), np.float32)
    assert lack_of_variation({"x": varied, "state": state}) == ["input 'state': every value of all 20 samples is 0.0"]


@pytest.mark.slow
def test_constant_calibration_warns(tmp_path, model):
    """Without strict the build goes on, says loudly that its figures mean nothing, and the manifest keeps it."""
    np.save(tmp_path / "zeros.npy", DEGENERATE["constant"][0])
    out = tmp_path / "dist"
    proc = run_cli("packager", "build", model, "--target", "rpi4", *SHAPE, "--calibration", tmp_path / "zeros.npy",
                   "--no-wheels", "-o", out)
    warned = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert any("the calibration data does not vary: input 'x': every value of all 20 samples is 0.0" in line
               and "mean NOTHING" in line for line in warned), proc.stderr
    assert any("the figures above were measured on calibration data without variation" in line
               for line in warned), proc.stderr
    manifest = json.loads((out / "net-rpi4" / "manifest.json").read_text())
    assert manifest["quantization"]["calibration"]["warnings"] == [
        "no variation: input 'x': every value of all 20 samples is 0.0"]
    assert manifest["precision"]["requested"] == "auto"
