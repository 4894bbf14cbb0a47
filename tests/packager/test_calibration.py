"""Calibration sources read into the ONNX layout, never transposed by the user."""

import numpy as np
import pytest
from PIL import Image

from edge_runtime.errors import UserError
from packager.calibration import load_calibration, split_holdout
from packager.onnx_model import TensorSpec

IMG = TensorSpec("x", [1, 3, 6, 4], "float32")


def test_npy_both_sample_forms(tmp_path):
    a = np.random.default_rng(0).random((12, 3, 6, 4), dtype=np.float32)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", a[:, None])
    for name in ("a.npy", "b.npy"):
        data = load_calibration(str(tmp_path / name), [IMG], {"x": [1, 3, 6, 4]})
        assert data["x"].shape == (12, 1, 3, 6, 4)
        np.testing.assert_array_equal(data["x"][:, 0], a)


def test_image_folder_resized_scaled_normalised_in_nchw(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(10):
        pixels = np.zeros((12, 8, 3), np.uint8)
        pixels[..., 0] = 255  # pure red
        Image.fromarray(pixels).save(folder / f"{i}.png")
    data = load_calibration(str(folder), [IMG], {"x": [1, 3, 6, 4]}, mean=(0.5,), std=(0.25,))
    x = data["x"]
    assert x.shape == (10, 1, 3, 6, 4) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0, 0], 2.0)   # (1 - 0.5) / 0.25
    np.testing.assert_allclose(x[:, 0, 1:], -2.0)  # (0 - 0.5) / 0.25


def test_image_folder_nhwc_model(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(10):
        Image.fromarray(np.full((6, 4), 51 * (i % 5), np.uint8)).save(folder / f"{i}.bmp")
    spec = TensorSpec("gray", [1, 6, 4, 1], "float32")
    x = load_calibration(str(folder), [spec], {"gray": [1, 6, 4, 1]})["gray"]
    assert x.shape == (10, 1, 6, 4, 1)
    np.testing.assert_allclose(x[:5, 0, 0, 0, 0], [0, 0.2, 0.4, 0.6, 0.8], atol=1e-6)


def test_unreadable_image_named(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="broken.jpg cannot be read"):
        load_calibration(str(folder), [IMG], {"x": [1, 3, 6, 4]})


def test_integer_inputs_stay_integer(tmp_path):
    ids = TensorSpec("ids", [1, 5], "int64")
    np.save(tmp_path / "ids.npy", np.arange(60, dtype=np.int32).reshape(12, 5))
    data = load_calibration(str(tmp_path / "ids.npy"), [ids], {"ids": [1, 5]})
    assert data["ids"].dtype == np.int64 and data["ids"].shape == (12, 1, 5)
    np.save(tmp_path / "f.npy", np.zeros((12, 5), np.float32))
    with pytest.raises(UserError, match="takes int64"):
        load_calibration(str(tmp_path / "f.npy"), [ids], {"ids": [1, 5]})


def test_npz_counts_must_agree(tmp_path):
    a, b = TensorSpec("a", [1, 2], "float32"), TensorSpec("b", [1, 3], "float32")
    np.savez(tmp_path / "c.npz", a=np.zeros((12, 2), np.float32), b=np.zeros((11, 3), np.float32))
    with pytest.raises(UserError, match="same number of samples"):
        load_calibration(str(tmp_path / "c.npz"), [a, b], {"a": [1, 2], "b": [1, 3]})


def test_mean_std_rejected_for_arrays(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((12, 3, 6, 4), np.float32))
    with pytest.raises(UserError, match="image folders only"):
        load_calibration(str(tmp_path / "a.npy"), [IMG], {"x": [1, 3, 6, 4]}, mean=(0.5,))


def test_holdout_is_disjoint_and_spread():
    data = {"x": np.arange(100)[:, None]}
    calib, hold = split_holdout(data)
    assert len(hold["x"]) == 20 and len(calib["x"]) == 80
    assert not set(hold["x"].ravel()) & set(calib["x"].ravel())
    assert hold["x"].min() == 0 and hold["x"].max() == 99


def test_a_large_set_holds_out_300_and_calibrates_on_500_spread_over_the_rest():
    data = {"x": np.arange(2000)[:, None]}
    calib, hold = split_holdout(data)
    assert len(hold["x"]) == 300 and len(calib["x"]) == 500
    assert not set(hold["x"].ravel()) & set(calib["x"].ravel())
    assert calib["x"].min() < 10 and calib["x"].max() > 1990
