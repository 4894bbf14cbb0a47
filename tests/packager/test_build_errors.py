"""Bad input to `edgepack build`: one clear error line, exit 2, nothing written."""

import pickle
import subprocess
import sys

import numpy as np
import pytest

from packager.cli import main
from tests.conftest import ROOT
from tests.fixtures.models import dynamic_conv, external_data_outside, invalid_graph


@pytest.fixture
def model(tmp_path):
    return dynamic_conv(tmp_path / "net.onnx")


def build(capsys, tmp_path, *args):
    out = tmp_path / "dist"
    code = main(["build", *map(str, args), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert not out.exists(), "a failed build left files behind"
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


def calib(tmp_path, array, name="calib.npy"):
    path = tmp_path / name
    np.save(path, array)
    return path


GOOD = np.zeros((20, 3, 16, 16), np.float32)


def test_missing_onnx(capsys, tmp_path):
    msg = build(capsys, tmp_path, tmp_path / "nope.onnx", "--target", "rpi4", "--calibration", "random")
    assert "does not exist" in msg and "nope.onnx" in msg


def test_the_library_raises_user_error_from_packager_and_the_runner_stays_apart(tmp_path):
    import packager
    from edge_runtime.errors import UserError

    assert packager.UserError is UserError and "UserError" in packager.__all__
    with pytest.raises(packager.UserError, match="nope.onnx") as err:
        packager.build(packager.BuildOptions(str(tmp_path / "nope.onnx"), "rpi4", "random", out_dir=str(tmp_path)))
    assert err.value.hint  # what to do about it
    imported = subprocess.run([sys.executable, "-c", "import sys, edge_runtime.cli, edge_runtime.server; "
                               "print(sorted(m for m in sys.modules if m.split('.')[0] == 'packager'))"],
                              capture_output=True, text=True, cwd=ROOT, check=True)
    assert imported.stdout == "[]\n"  # the device has no packager to import


def test_corrupt_onnx(capsys, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not protobuf\xff\xff")
    msg = build(capsys, tmp_path, bad, "--target", "rpi4", "--calibration", "random")
    assert "not a readable ONNX model" in msg or "not a valid ONNX model" in msg


def test_invalid_onnx_fails_checker(capsys, tmp_path):
    path = invalid_graph(tmp_path / "invalid.onnx")
    msg = build(capsys, tmp_path, path, "--target", "rpi4", "--calibration", "random")
    assert "is not a valid ONNX model" in msg


def test_external_data_outside_model_folder(capsys, tmp_path):
    (tmp_path / "m").mkdir()
    path = external_data_outside(tmp_path / "m" / "ext.onnx")
    msg = build(capsys, tmp_path, path, "--target", "rpi4", "--calibration", "random")
    assert "outside the model's folder" in msg and "../weights.bin" in msg


def test_dynamic_dims_without_input_shape_names_each(capsys, tmp_path, model):
    msg = build(capsys, tmp_path, model, "--target", "rpi4", "--calibration", calib(tmp_path, GOOD))
    assert "x dimension 2 ('height')" in msg and "x dimension 3 ('width')" in msg
    assert "--input-shape x=1,3,<height>,<width>" in msg
    assert "dimension 0" not in msg  # the batch defaults to 1


def test_input_shape_contradicting_model(capsys, tmp_path, model):
    msg = build(capsys, tmp_path, model, "--target", "rpi4", "--calibration", "random",
                "--input-shape", "x=1,4,16,16")
    assert "dimension 1 to 4" in msg and "fixes it at 3" in msg


def test_input_shape_unknown_name(capsys, tmp_path, model):
    msg = build(capsys, tmp_path, model, "--target", "rpi4", "--calibration", "random",
                "--input-shape", "image=1,3,16,16")
    assert "'image'" in msg and "inputs are x" in msg


def test_unknown_target(capsys, tmp_path, model):
    msg = build(capsys, tmp_path, model, "--target", "rpi9", "--calibration", "random")
    assert "unknown target 'rpi9'" in msg and "rpi4" in msg


@pytest.mark.parametrize(
    "array, expect",
    [
        (np.zeros((20, 16, 16, 3), np.float32), "must have shape (N, 1, 3, 16, 16) or (N, 3, 16, 16), found (20, 16, 16, 3)"),
        (np.zeros((5, 3, 16, 16), np.float32), "5 calibration samples, at least 10"),
        (np.zeros((20, 3, 16, 16), np.uint8), "takes float32, found uint8"),
        (np.full((20, 3, 16, 16), np.nan, np.float32), "NaN or Inf"),
    ],
    ids=["nhwc-layout", "too-few", "uint8-for-float", "nan"],
)
def test_bad_calibration_array(capsys, tmp_path, model, array, expect):
    msg = build(capsys, tmp_path, model, "--target", "rpi4", "--input-shape", "x=1,3,16,16",
                "--calibration", calib(tmp_path, array))
    assert expect in msg


def test_pickled_npy_is_never_loaded(capsys, tmp_path, model):
    path = tmp_path / "evil.npy"
    np.save(path, np.array([{"a": 1}] * 20, dtype=object), allow_pickle=True)
    msg = build(capsys, tmp_path, model, "--target", "rpi4", "--input-shape", "x=1,3,16,16", "--calibration", path)
    assert "pickled" in msg and "never loads pickles" in msg


def test_raw_pickle_file_is_refused(capsys, tmp_path, model):
    path = tmp_path / "data.npy"
    path.write_bytes(pickle.dumps(GOOD))
    msg = build(capsys, tmp_path, model, "--target", "rpi4", "--input-shape", "x=1,3,16,16", "--calibration", path)
    assert "pickle" in msg


def test_empty_image_folder(capsys, tmp_path, model):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    msg = build(capsys, tmp_path, model, "--target", "rpi4", "--input-shape", "x=1,3,16,16",
                "--calibration", tmp_path / "images")
    assert "holds no images" in msg


def test_npz_missing_input_name(capsys, tmp_path, model):
    path = tmp_path / "c.npz"
    np.savez(path, image=GOOD)
    msg = build(capsys, tmp_path, model, "--target", "rpi4", "--input-shape", "x=1,3,16,16", "--calibration", path)
    assert "missing: x" in msg and "unexpected: image" in msg
