"""A real third-party model: PaddleOCR's text-direction classifier (MobileNetV3,
dynamic H/W), calibrated on a folder of rendered text lines."""

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import run_cli
from tests.fixtures.image_files import png_header_only
from tests.fixtures.text_lines import to_input, write_lines

pytestmark = pytest.mark.slow
OUTPUT = "save_infer_model/scale_0.tmp_1"


def test_ppocr_agreement_through_edge_run(ppocr_model, tmp_path):
    write_lines(tmp_path / "calib", 200, seed=1)
    labels = np.array(write_lines(tmp_path / "held_out", 150, seed=2))
    out = tmp_path / "dist"
    build = run_cli("packager", "build", ppocr_model, "--target", "rpi4", "--calibration", tmp_path / "calib",
                    "--input-shape", "x=1,3,48,192", "--mean", "0.5", "--std", "0.5", "-o", out,
                    "--precision", "int8")  # the real int8 classifier, whatever auto would choose
    assert "int8 vs float ONNX" in build.stderr
    bundle = out / "ch_ppocr_mobile_v2.0_cls_infer-rpi4"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["inputs"][0]["declared_shape"][2:] == ["?", "?"]
    assert manifest["inputs"][0]["shape"] == [1, 3, 48, 192]
    assert manifest["ops"]["float_ops"] == []
    assert manifest["fidelity"]["outputs"][OUTPUT]["top1_agreement"] >= 0.95

    x = to_input(tmp_path / "held_out")
    np.save(tmp_path / "x.npy", x)
    run_cli("edge_runtime", "run", bundle.parent / f"{bundle.name}.tar.gz", "--input", tmp_path / "x.npy",
            "--output", tmp_path / "y.npz")
    with np.load(tmp_path / "y.npz") as y:
        int8 = y[OUTPUT]
    session = ort.InferenceSession(str(ppocr_model), providers=["CPUExecutionProvider"])
    ref = np.concatenate([session.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))])
    assert int8.shape == ref.shape == (150, 2)
    agreement = float((int8.argmax(1) == ref.argmax(1)).mean())
    assert agreement >= 0.98, agreement
    # and the classifier still does its job on these lines
    assert float((int8.argmax(1) == labels).mean()) >= 0.9


def test_precision_int8_is_full_integer_in_one_xnnpack_piece_and_all_on_the_edge_tpu(ppocr_model, tmp_path):
    """MobileNetV3's 18 HARD_SWISH and 9 RELU_0_TO_1, respelled for LiteRT Quantizer (packager.int8_spelling):
    its model is full integer (before: the 9 RELU_0_TO_1 stayed float, so --precision int8 refused it and
    shipped the TFLite converter's), XNNPACK takes it in one piece (before: 28, split by both ops; float32: 10)
    and the Edge TPU would map every op (before: it stopped at the first HARD_SWISH, which Coral's compiler
    does not map: google-coral/edgetpu#272)."""
    write_lines(tmp_path / "calib", 120, seed=3)
    build = run_cli("packager", "build", ppocr_model, "--target", "coral-usb", "--calibration", tmp_path / "calib",
                    "--input-shape", "x=1,3,48,192", "--mean", "0.5", "--std", "0.5", "--precision", "int8",
                    "--no-wheels", "-o", tmp_path / "dist")
    manifest = json.loads((tmp_path / "dist" / "ch_ppocr_mobile_v2.0_cls_infer-coral-usb" / "manifest.json").read_text())
    assert manifest["quantization"]["full_integer"] is True and manifest["ops"]["float_ops"] == []
    assert manifest["precision"]["step"] == "int8, min/max"
    chosen = manifest["precision"]["steps"][0]
    assert chosen["step"] == "int8, min/max" and chosen["xnnpack_partitions"] == 1, chosen
    assert not {"HARD_SWISH", "RELU_0_TO_1"} & set(manifest["ops"]["counts"])
    assert "float32 reference: " in build.stderr and "XNNPACK takes the chosen model in" not in build.stderr
    edgetpu = manifest["edgetpu"]
    assert edgetpu["first_cpu_op"] is None and edgetpu["ops_edgetpu"] == edgetpu["ops_total"], edgetpu
    assert "Edge TPU: edgetpu_compiler is not on PATH" in build.stderr and edgetpu["summary"] in build.stderr


def test_camera_frames_bundle_takes_png_and_uint8_frames(ppocr_model, ppocr_camera, tmp_path):
    """--input-format image-uint8 on the real classifier: the bundle takes the PNG lines as they are (uint8
    48x192x3), PP-OCR's (x/255 - 0.5)/0.5 runs inside the model, and its answers agree with float onnxruntime
    on the normalised lines as the tensor-input bundle's do. Frames of another size or channel count are
    refused with what the bundle takes."""
    import edge_runtime
    from edge_runtime.tensors import from_tflite, pixel_mode, to_tflite
    from PIL import Image

    labels = np.load(ppocr_camera / "labels.npy")
    assert "image_input: input 'x' takes uint8 HxWx3 frames" in (ppocr_camera / "stderr").read_text()
    bundle = ppocr_camera / "dist" / "ch_ppocr_mobile_v2.0_cls_infer-rpi4"
    for folder in ("held_out",):
        shutil.copytree(ppocr_camera / folder, tmp_path / folder)
    manifest = json.loads((bundle / "manifest.json").read_text())
    spec = manifest["inputs"][0]
    assert (spec["shape"], spec["dtype"], spec["format"]) == ([1, 48, 192, 3], "uint8", "image-uint8")
    assert spec["tflite_shape"] == [1, 48, 192, 3] and spec["permutation"] == [0, 1, 2, 3]
    assert spec["normalisation"]["mean"] == [0.5, 0.5, 0.5] and manifest["ops"]["float_ops"] == []
    # the pixel range is 0..255 with scale 1: a frame is its own quantized value, no per-frame arithmetic
    assert pixel_mode(spec) in ("flip", "copy"), spec
    assert manifest["input_statistics"]["x"]["channel_axis"] == 3
    assert manifest["fidelity"]["outputs"][OUTPUT]["top1_agreement"] >= 0.95

    files = sorted((tmp_path / "held_out").glob("*.png"))
    frames = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    np.save(tmp_path / "frames.npy", frames)
    run_cli("edge_runtime", "run", bundle, "--input", tmp_path / "frames.npy", "--output", tmp_path / "y.npz")
    with np.load(tmp_path / "y.npz") as y:
        int8 = y[OUTPUT]
    session = ort.InferenceSession(str(ppocr_model), providers=["CPUExecutionProvider"])
    x = to_input(tmp_path / "held_out")
    ref = np.concatenate([session.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))])
    assert int8.shape == ref.shape == (100, 2)
    assert float((int8.argmax(1) == ref.argmax(1)).mean()) >= 0.98
    assert float((int8.argmax(1) == labels).mean()) >= 0.9

    # a PNG file gives the same bytes as its row of the array; the in-place writer as the copying path
    run_cli("edge_runtime", "run", bundle, "--input", files[0], "--output", tmp_path / "one.npz")
    with np.load(tmp_path / "one.npz") as one:
        assert one[OUTPUT].tobytes() == int8[:1].tobytes()
    model = edge_runtime.load(bundle, threads=1)
    raw = model.invoke([to_tflite(frames[3][np.newaxis], spec)])[0]
    assert model.predict({"x": frames[3]})[OUTPUT].tobytes() == from_tflite(raw, manifest["outputs"][0]).tobytes()
    run_cli("edge_runtime", "health", bundle)
    # the server takes the frame as a UINT8 tensor, and says what it takes when given another size
    from tests.helpers.serve import Server, infer_body

    server = Server(bundle, "--max-body", "1000000")  # a JSON frame: 28k pixels as text
    try:
        status, body, _ = server.request("POST", f"/v2/models/{manifest['name']}/infer",
                                         infer_body(frames[3][np.newaxis], "x", "UINT8"))
        assert status == 200, body
        answer = json.loads(body)["outputs"][0]
        assert np.array_equal(np.asarray(answer["data"], np.float32).reshape(answer["shape"]), int8[3:4])
        status, body, _ = server.request("POST", f"/v2/models/{manifest['name']}/infer",
                                         infer_body(frames[3][:24][np.newaxis], "x", "UINT8"))
        assert status == 400 and b"takes frames of 48x192x3" in body, body
    finally:
        server.stop()

    # edgepack evaluate reads the same labelled images as pixels for both sides: frames into the bundle, and the
    # bundle's own normalisation in front of the float model
    for name, label in zip(files, labels):
        folder = tmp_path / "classes" / ("0_upright" if label == 0 else "1_flipped")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name.name).write_bytes(name.read_bytes())
    scored = json.loads(run_cli("packager", "evaluate", bundle, "--data", tmp_path / "classes", "--model", ppocr_model,
                                "--json").stdout)
    assert scored["samples"] == 100 and scored["agreement"] >= 0.98, scored["agreement"]
    assert scored["bundle"]["accuracy"] >= 0.9 and scored["float"]["accuracy"] >= 0.9
    other = run_cli("packager", "evaluate", bundle, "--data", tmp_path / "classes", "--model", ppocr_model,
                    "--mean", "0.4", check=False)
    assert other.returncode != 0 and "--mean 0.4 differs from the [0.5, 0.5, 0.5] built into" in other.stderr

    Image.fromarray(frames[0]).resize((96, 24)).save(tmp_path / "small.png")
    Image.fromarray(frames[0]).convert("L").save(tmp_path / "grey.png")
    Image.fromarray(frames[0]).convert("RGBA").save(tmp_path / "rgba.png")
    np.save(tmp_path / "float.npy", frames.astype(np.float32) / 255)
    (tmp_path / "bomb.png").write_bytes(png_header_only(7900, 7900))
    refusals = {
        "bomb.png": "found 7900x7900x3 (",  # refused from its header: its broken pixel data is never decoded
        "small.png": "takes frames of 48x192x3 (height x width x RGB), found 24x96x3",
        "grey.png": "is a L image (1 channel(s)); ch_ppocr_mobile_v2.0_cls_infer-rpi4 takes 3 (RGB)",
        "rgba.png": "is a RGBA image (4 channel(s))",
        "float.npy": "takes uint8 camera frames of 48x192x3 (height x width x RGB), found float32",
    }
    for name, message in refusals.items():
        proc = run_cli("edge_runtime", "run", bundle, "--input", tmp_path / name, "--output", tmp_path / "bad.npz",
                       check=False)
        assert proc.returncode != 0 and message in proc.stderr, (name, proc.stderr[-800:])
        assert not (tmp_path / "bad.npz").exists()
