"""--input-format image-uint8: camera frames in, the user's normalisation folded into the model.

The real third-party case (PP-OCR's classifier, NCHW) is in test_build_ppocr.py; here a channels-last
(TF-exported) model with per-channel ImageNet normalisation, calibrated on low-contrast photos, so that
the pixel range the build pins (0..255) is not what calibration sees, and the pieces one by one.
"""

import copy
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_runtime.errors import UserError
from edge_runtime.manifest import Malformed, check
from edge_runtime.tensors import frames, pixel_mode, quantize, to_tflite
from packager.onnx_model import TensorSpec
from packager.inputs.image import plan
from tests.conftest import run_cli
from tests.fixtures.image_files import png_header_only

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def nhwc_cnn(path):
    """A channels-last classifier as TF exporters write it: [1, 32, 32, 3] -> Transpose -> Conv ... -> 5 classes."""
    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.3, (8, 8, 3, 3)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.normal(0, 0.5, (8, 5)).astype(np.float32), "head")]
    nodes = [
        helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "head"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    graph = helper.make_graph(nodes, "nhwc", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 32, 32, 3])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 5])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8  # what onnxruntime loads
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def dim_photos(folder, count: int, seed: int) -> np.ndarray:
    """Low-contrast photo crops (pixels 30..220) as PNGs; returns them as uint8 frames [N, 32, 32, 3]."""
    from PIL import Image

    from tests.fixtures.corpus import _photo_crops

    folder.mkdir()
    out = []
    for i, crop in enumerate(_photo_crops(np.random.default_rng(seed), count, 32)):
        pixels = (30 + np.asarray(crop, np.float32) * (190 / 255)).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"crop_{i:03d}.png")
        out.append(pixels)
    return np.stack(out)


@pytest.mark.slow
def test_channels_last_model_with_imagenet_normalisation(tmp_path):
    model = nhwc_cnn(tmp_path / "nhwc.onnx")
    dim_photos(tmp_path / "calib", 80, seed=1)
    held = dim_photos(tmp_path / "held", 40, seed=2)
    out = tmp_path / "dist"
    build = run_cli("packager", "build", model, "--target", "rpi4", "--calibration", tmp_path / "calib",
                    "--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD)),
                    "--input-format", "image-uint8", "--io-dtype", "int8", "--precision", "int8", "--no-wheels",
                    "--min-top1", "0.8", "-o", out)  # random weights: near-tied classes flip under any rounding
    assert "(Mul, Add, Transpose)" in build.stderr
    bundle = out / "nhwc-rpi4"
    manifest = json.loads((bundle / "manifest.json").read_text())
    spec = manifest["inputs"][0]
    assert (spec["shape"], spec["dtype"], spec["tflite_shape"]) == ([1, 32, 32, 3], "uint8", [1, 32, 32, 3])
    assert spec["normalisation"] == {"mean": list(MEAN), "std": list(STD), "layout": "NHWC"}
    # calibration saw 30..220 only; LiteRT Quantizer's range for the input is pinned to 0..255 all the same
    assert manifest["quantization"]["tool"] == "litert-quantizer", manifest["precision"]["step"]
    assert (spec["tflite_dtype"], spec["scale"], spec["zero_point"]) == ("int8", 1.0, -128)
    assert pixel_mode(spec) == "flip"

    np.save(tmp_path / "frames.npy", held)
    run_cli("edge_runtime", "run", bundle, "--input", tmp_path / "frames.npy", "--output", tmp_path / "y.npz")
    with np.load(tmp_path / "y.npz") as y:
        got = y["probs"]
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x = ((held / 255.0 - np.array(MEAN)) / np.array(STD)).astype(np.float32)
    ref = np.concatenate([session.run(None, {"image": x[i:i + 1]})[0] for i in range(len(x))])
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert got.shape == ref.shape == (40, 5) and cos.mean() >= 0.99 and cos.min() >= 0.95, cos
    assert float((got.argmax(1) == ref.argmax(1)).mean()) >= 0.85


def test_pixel_modes_give_what_quantizing_the_pixel_values_gives():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (1, 4, 5, 3), dtype=np.uint8)
    base = {"format": "image-uint8", "dtype": "uint8", "permutation": [0, 1, 2, 3]}
    cases = [("int8", 1.0, -128, "flip"), ("uint8", 1.0, 0, "copy"), ("float32", 0.0, 0, "copy"),
             ("int8", 0.9, -120, "quantize"), ("uint8", 1.0, 3, "quantize")]
    for dtype, scale, zero, mode in cases:
        spec = {**base, "tflite_dtype": dtype, "scale": scale, "zero_point": zero}
        assert pixel_mode(spec) == mode
        want = (frame.astype(np.float32) if dtype == "float32"
                else quantize(frame.astype(np.float32), np.dtype(dtype), scale, zero))
        got = to_tflite(frame, spec)
        assert got.dtype == want.dtype and np.array_equal(got, want), (dtype, scale, zero)
    assert pixel_mode({**base, "format": None, "tflite_dtype": "int8", "scale": 1.0, "zero_point": -128}) is None


def test_frames_are_never_resized_or_converted():
    spec = {"name": "x", "shape": [1, 48, 192, 3]}
    one = np.zeros((48, 192, 3), np.uint8)
    assert frames(one, spec, "input").shape == (1, 1, 48, 192, 3)
    assert frames(np.stack([one] * 5), spec, "input").shape == (5, 1, 48, 192, 3)
    bad = {
        "found float32": one.astype(np.float32),
        "found 48x192x1": np.zeros((48, 192, 1), np.uint8),
        "found 192x48x3": np.zeros((192, 48, 3), np.uint8),
        "found an array of shape (3, 48, 192, 3, 1)": np.zeros((3, 48, 192, 3, 1), np.uint8),
    }
    for message, array in bad.items():
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
            frames(array, spec, "input")


def test_an_image_declaring_another_size_is_refused_before_its_pixels_are_decoded(tmp_path):
    from types import SimpleNamespace

    from edge_runtime.files import read_image

    model = SimpleNamespace(name="cam", inputs=[{"name": "x", "shape": [1, 48, 192, 3], "dtype": "uint8",
                                                  "format": "image-uint8"}])
    # 7900x7900: a 180 KB PNG of that size took 660 MB to decode before it was refused for its size.
    for (width, height), found in {(7900, 7900): "found 7900x7900x3", (192, 49): "found 49x192x3"}.items():
        (tmp_path / "big.png").write_bytes(png_header_only(width, height))
        with pytest.raises(UserError, match=f"takes frames of 48x192x3 \\(height x width x RGB\\), {found} "
                                            r"\(\d+-byte PNG file; not decoded\)"):
            read_image(tmp_path / "big.png", model)
    # The right size with the same broken pixel data is decoded, and fails as a broken file.
    (tmp_path / "cut.png").write_bytes(png_header_only(192, 48))
    with pytest.raises(UserError, match="cut.png cannot be read as an image"):
        read_image(tmp_path / "cut.png", model)


def test_plan_needs_one_image_input_and_fitting_normalisation():
    image = TensorSpec("image", [1, 3, 224, 224], "float32")
    ids = TensorSpec("ids", [1, 16], "int64")
    shapes = {"image": [1, 3, 224, 224], "ids": [1, 16], "other": [1, 224, 224, 3]}
    got = plan([image, ids], shapes, MEAN, STD)
    assert (got.name, got.layout, got.channels, got.mean) == ("image", "NCHW", 3, MEAN)
    with pytest.raises(UserError, match="needs exactly one image input.*none of this model's inputs"):
        plan([ids], shapes, None, None)
    with pytest.raises(UserError, match="2 of this model's inputs"):
        plan([image, TensorSpec("other", [1, 224, 224, 3], "float32")], shapes, None, None)
    with pytest.raises(UserError, match="--mean has 2 values, the input has 3 channels"):
        plan([image], shapes, (0.5, 0.5), None)


def test_prepended_model_computes_the_users_model_on_normalised_pixels(tmp_path):
    """The ONNX the build converts: pixels in, exactly the user's model on (x/255 - mean)/std out."""
    model = onnx.load(str(nhwc_cnn(tmp_path / "m.onnx")))
    image = plan([TensorSpec("image", [1, 32, 32, 3], "float32")], {"image": [1, 32, 32, 3]}, MEAN, STD)
    prepended = copy.deepcopy(model)
    image.prepend(prepended)
    assert [d.dim_value for d in prepended.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 32, 32]
    frame = np.random.default_rng(3).integers(0, 256, (1, 32, 32, 3)).astype(np.uint8)
    original = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ours = ort.InferenceSession(prepended.SerializeToString(), providers=["CPUExecutionProvider"])
    want = original.run(None, {"image": ((frame / 255.0 - np.array(MEAN)) / np.array(STD)).astype(np.float32)})[0]
    got = ours.run(None, {"image": image.from_frames(frame)})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.array_equal(image.frames(image.from_frames(frame)[np.newaxis]), frame)


def test_manifest_refuses_a_frame_input_that_is_not_one(digits_bundle):
    manifest = json.loads((digits_bundle / "manifest.json").read_text())
    spec = manifest["inputs"][0]
    frame_spec = {**spec, "format": "image-uint8", "normalisation": {"mean": [0.5], "std": [0.5]}}
    for bad, where in (({**frame_spec, "format": "image-rgb565"}, "format"),
                       (frame_spec, "inputs[0]"),  # digits' input is float [1, 64]: not uint8 frames
                       ):
        with pytest.raises(Malformed) as caught:
            check({**manifest, "inputs": [bad]})
        assert caught.value.path.startswith("inputs[0]") and where in caught.value.path


def test_drift_of_frames_is_per_channel_however_many_frames_come():
    from edge_runtime.drift import InputWatch
    from packager.input_stats import input_statistics

    spec = {"name": "x", "shape": [1, 8, 8, 3], "dtype": "uint8", "format": "image-uint8", "tflite_dtype": "int8",
            "scale": 1.0, "zero_point": -128}
    rng = np.random.default_rng(1)
    calib = rng.integers(0, 256, (50, 8, 8, 3)).astype(np.uint8)
    stats = input_statistics({"x": calib}, [spec])["x"]
    assert stats["channel_axis"] == 3 and len(stats["mean"]) == 3
    red = calib[0].copy()
    red[..., 0] = 255  # one channel saturated: a colour cast
    scores = []
    for frame in (red, red[np.newaxis]):
        watch = InputWatch(spec, stats)
        for _ in range(100):  # each frame moves the average by a bounded step (edge_runtime.drift.ALPHA)
            watch.observe(frame)
        scores.append(watch.score())
    assert scores[0] == scores[1] and scores[0] > 0.5, scores
