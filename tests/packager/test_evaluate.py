"""`edgepack evaluate`: task metrics of the float ONNX model and the bundle, side by side."""

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest

from edge_runtime.errors import UserError
from packager.evaluate import class_folders, class_metrics, load_class_folders, load_labels, score_output
from packager.onnx_model import TensorSpec
from tests.conftest import ROOT, accuracy, run_cli

IMAGE = TensorSpec("image", ["N", 1, 8, 8], "float32")


def _evaluate(bundle, *args, check=True):
    return run_cli("packager", "evaluate", bundle, *args, check=check)


def _float_accuracy(digits, x, y) -> float:
    session = ort.InferenceSession(str(digits / "digits.onnx"), providers=["CPUExecutionProvider"])
    return accuracy(session.run(None, {"image": x})[0], y)


def _write_pngs(folder, images) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:03d}.png")


# --- metrics, output choice, loaders: no converter -------------------------------------------------------------


def test_metrics_by_hand():
    m = class_metrics(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), classes=3)
    assert m["accuracy"] == 0.75
    (c0, c1) = m["per_class"]  # class 2 is neither present nor predicted: no row
    assert (c0["class"], c0["precision"], c0["recall"], c0["support"]) == (0, 1.0, 0.5, 2)
    assert (c1["class"], c1["precision"], c1["recall"], c1["support"]) == (1, pytest.approx(2 / 3), 1.0, 2)
    assert c1["f1"] == pytest.approx(0.8)
    assert m["macro"]["f1"] == pytest.approx((2 / 3 + 0.8) / 2)


def test_metrics_match_scikit_learn():
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 300)  # class 5 never present
    predicted = np.where(rng.random(300) < 0.7, labels, rng.integers(0, 6, 300))
    predicted[predicted == 3] = 4  # class 3 never predicted
    shown = np.unique(np.concatenate([labels, predicted]))
    m = class_metrics(labels, predicted, classes=6, shown=shown)
    p, r, f, s = precision_recall_fscore_support(labels, predicted, labels=shown, zero_division=0)
    assert m["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    rows = m["per_class"]
    assert [row["class"] for row in rows] == shown.tolist() == [0, 1, 2, 3, 4, 5]
    np.testing.assert_allclose([row["precision"] for row in rows], p)
    np.testing.assert_allclose([row["recall"] for row in rows], r)
    np.testing.assert_allclose([row["f1"] for row in rows], f)
    assert [row["support"] for row in rows] == s.tolist()
    mp, mr, mf, _ = precision_recall_fscore_support(labels, predicted, labels=shown, average="macro", zero_division=0)
    assert m["macro"] == pytest.approx({"precision": mp, "recall": mr, "f1": mf})


def test_score_output_choice():
    boxes = {"name": "boxes", "shape": [1, 100, 4]}
    scores = {"name": "scores", "shape": [1, 10]}
    logits = {"name": "logits", "shape": [1, 1, 5]}
    assert score_output([boxes, scores, logits], None) is scores
    assert score_output([boxes, scores, logits], "logits") is logits
    with pytest.raises(UserError, match="--output nope is not an output.*boxes, scores, logits"):
        score_output([boxes, scores, logits], "nope")
    with pytest.raises(UserError, match=r"class scores.*boxes \[1, 100, 4\]"):
        score_output([boxes], None)
    with pytest.raises(UserError, match=r"class scores.*boxes \[1, 100, 4\]"):
        score_output([boxes, scores], "boxes")


def test_class_folders_give_labels_by_sorted_name(tmp_path):
    rng = np.random.default_rng(1)
    cats, dogs = rng.integers(0, 256, (3, 8, 8), dtype=np.uint8), rng.integers(0, 256, (2, 8, 8), dtype=np.uint8)
    _write_pngs(tmp_path / "dog", dogs)
    _write_pngs(tmp_path / "cat", cats)
    (tmp_path / "emu").mkdir()  # a class with no samples keeps its index
    _write_pngs(tmp_path / "zebra", cats[:1])
    (tmp_path / "notes.txt").write_text("not an image, not a class")

    samples, labels, names = load_class_folders(tmp_path, IMAGE, [1, 1, 8, 8])
    assert names == ["cat", "dog", "emu", "zebra"]
    assert labels.tolist() == [0, 0, 0, 1, 1, 3]
    assert samples.shape == (6, 1, 1, 8, 8) and samples.dtype == np.float32
    expected = np.concatenate([cats, dogs, cats[:1]]).astype(np.float32) / 255.0
    np.testing.assert_allclose(samples[:, 0, 0], expected, atol=1e-6)

    flat = tmp_path / "flat"
    _write_pngs(flat, cats)
    assert class_folders(flat) == []


def test_class_folders_use_mean_and_std(tmp_path):
    _write_pngs(tmp_path / "a", np.full((1, 8, 8), 255, dtype=np.uint8))
    samples, _, _ = load_class_folders(tmp_path, IMAGE, [1, 1, 8, 8], mean=(0.5,), std=(0.25,))
    np.testing.assert_allclose(samples, 2.0)


def test_labels_must_be_integer_ids(tmp_path):
    np.save(tmp_path / "ok.npy", np.array([[1], [2]], dtype=np.int32))
    assert load_labels(str(tmp_path / "ok.npy")).tolist() == [1, 2]
    np.save(tmp_path / "float.npy", np.array([1.0, 2.0]))
    np.save(tmp_path / "onehot.npy", np.eye(3, dtype=np.int64))
    for bad in ("float.npy", "onehot.npy"):
        with pytest.raises(UserError, match="one integer class id per sample"):
            load_labels(str(tmp_path / bad))
    with pytest.raises(UserError, match="is not a .npy"):
        load_labels(str(tmp_path / "missing.npy"))


def test_fixed_inputs_fed_to_onnx_with_their_built_value(tmp_path):
    """A config input frozen at build time is not in the data; onnxruntime still needs it."""
    from onnx import TensorProto, helper

    from packager.evaluate import _data_inputs, _float_scores
    from packager.onnx_model import tensor_specs

    graph = helper.make_graph(
        [helper.make_node("Cast", ["k"], ["kf"], to=TensorProto.FLOAT), helper.make_node("Mul", ["x", "kf"], ["y"])],
        "scaled",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("k", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    manifest = {"inputs": [{"name": "x", "shape": [1, 4]}],
                "fixed_inputs": [{"name": "k", "shape": [1], "dtype": "int64", "value": [3]}]}
    x = np.arange(12, dtype=np.float32).reshape(3, 1, 4)
    y = _float_scores(proto, {"x": x}, manifest, 3)["y"]
    np.testing.assert_array_equal(y, x * 3)

    specs = tensor_specs(proto.graph, "input")
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "xk.npz", x=x, k=np.full((3, 1), 3))
    assert [s.name for s in _data_inputs(specs, manifest, tmp_path / "x.npy")[0]] == ["x"]
    inputs, shapes = _data_inputs(specs, manifest, tmp_path / "xk.npz")  # the build's own .npz may hold it
    assert [s.name for s in inputs] == ["x", "k"] and shapes == {"x": [1, 4], "k": [1]}


# --- the command on the real example bundle ---------------------------------------------------------------------


@pytest.mark.slow
def test_json_figures_float_and_bundle(digits, digits_bundle):
    test_x, test_y = np.load(digits / "test_x.npy"), np.load(digits / "test_y.npy")
    proc = _evaluate(digits_bundle, "--data", digits / "test_x.npy", "--labels", digits / "test_y.npy",
                     "--model", digits / "digits.onnx", "--json")
    report = json.loads(proc.stdout)
    assert report["name"] == "digits-rpi4" and report["output"] == "scores"
    assert report["samples"] == len(test_y) and report["classes"] == 10
    flt, bnd = report["float"], report["bundle"]
    assert flt["accuracy"] == pytest.approx(_float_accuracy(digits, test_x, test_y), abs=1e-12)
    assert flt["accuracy"] > 0.95 and bnd["accuracy"] > 0.95, "the example model reaches ~98-99%"
    assert abs(flt["accuracy"] - bnd["accuracy"]) <= 0.01 and report["agreement"] >= 0.98
    for side in (flt, bnd):
        assert [row["class"] for row in side["per_class"]] == list(range(10))
        assert [row["support"] for row in side["per_class"]] == np.bincount(test_y, minlength=10).tolist()
        assert sum(row["support"] for row in side["per_class"]) == len(test_y)
        assert all(0.8 < row["f1"] <= 1 for row in side["per_class"])

    text = _evaluate(digits_bundle, "--data", digits / "test_x.npy", "--labels", digits / "test_y.npy",
                     "--model", digits / "digits.onnx").stdout
    assert f"{flt['accuracy'] * 100:.2f}%" in text and f"{bnd['accuracy'] * 100:.2f}%" in text
    class_rows = [line for line in text.splitlines() if line[:1].isdigit()]
    assert "agreement" in text and len(class_rows) == 10


@pytest.mark.slow
def test_archive_finds_its_model_by_name_and_checks_it(digits, digits_bundle, tmp_path):
    archive = shutil.copy(digits_bundle.with_name("digits-rpi4.tar.gz"), tmp_path)
    args = ("--data", digits / "test_x.npy", "--labels", digits / "test_y.npy", "--json")
    assert not (ROOT / "digits.onnx").exists(), "the test needs no digits.onnx in the working directory"

    missing = _evaluate(archive, *args, check=False)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "digits.onnx" in missing.stderr and "--model" in missing.stderr

    shutil.copy(digits / "digits.onnx", tmp_path)
    report = json.loads(_evaluate(archive, *args).stdout)
    assert report["model"] == str(tmp_path / "digits.onnx") and report["float"]["accuracy"] > 0.95

    import onnx

    other = onnx.load(str(digits / "digits.onnx"))
    other.producer_name = "another export"  # a valid model, not the one the bundle was built from
    onnx.save(other, str(tmp_path / "digits.onnx"))
    for extra in ((), ("--model", tmp_path / "digits.onnx")):
        refused = _evaluate(archive, *args, *extra, check=False)
        assert refused.returncode == 2 and refused.stdout == ""
        assert "sha256" in refused.stderr and "--model" in refused.stderr and "digits.onnx" in refused.stderr


@pytest.mark.slow
def test_bad_labels_and_data_refused(digits, digits_bundle, tmp_path):
    test_y = np.load(digits / "test_y.npy")
    np.save(tmp_path / "short.npy", test_y[:-1])
    np.save(tmp_path / "float.npy", test_y.astype(np.float32))
    out_of_range = test_y.copy()
    out_of_range[3] = 10
    np.save(tmp_path / "range.npy", out_of_range)
    np.save(tmp_path / "rgb.npy", np.zeros((len(test_y), 3, 8, 8), np.float32))
    model = ("--model", digits / "digits.onnx")
    cases = [
        (("--data", digits / "test_x.npy", "--labels", tmp_path / "short.npy"), f"{len(test_y) - 1} labels"),
        (("--data", digits / "test_x.npy", "--labels", tmp_path / "float.npy"), "integer class id"),
        (("--data", digits / "test_x.npy", "--labels", tmp_path / "range.npy"), "0..10, the model scores 10"),
        (("--data", tmp_path / "rgb.npy", "--labels", digits / "test_y.npy"), "must have shape"),
        (("--data", digits / "test_x.npy", "--output", "logits"), "--output"),  # without labels too
        (("--data", digits / "test_x.npy", "--labels", digits / "test_y.npy", "--output", "logits"), "--output"),
    ]
    for args, fragment in cases:
        proc = _evaluate(digits_bundle, *args, *model, check=False)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.count("error:") == 1 and fragment in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_without_labels_the_bundle_is_judged_against_float_by_output_kind(digits, digits_bundle):
    proc = _evaluate(digits_bundle, "--data", digits / "test_x.npy", "--model", digits / "digits.onnx", "--json")
    report = json.loads(proc.stdout)
    assert report["labels"] is None and report["samples"] == len(np.load(digits / "test_x.npy"))
    scores = report["fidelity"]["outputs"]["scores"]
    assert scores["kind"] == "classes" and scores["top1_agreement"] >= 0.98  # the same class as float, per sample
    assert report["shortfalls"] == []
    text = _evaluate(digits_bundle, "--data", digits / "test_x.npy", "--model", digits / "digits.onnx").stdout
    assert "no labels: the bundle against the float model" in text and "classes" in text
    assert text.rstrip().endswith("verdict    holds the build's bar on this data")


@pytest.mark.slow
def test_image_folder_with_a_sub_folder_per_class(digits, digits_bundle, tmp_path):
    test_x, test_y = np.load(digits / "test_x.npy"), np.load(digits / "test_y.npy")
    chosen = np.concatenate([np.flatnonzero(test_y == c)[:5] for c in range(10)])
    pixels = np.round(test_x[chosen, 0] * 255).astype(np.uint8)
    for c in range(10):
        _write_pngs(tmp_path / "images" / str(c), pixels[test_y[chosen] == c])

    proc = _evaluate(digits_bundle, "--data", tmp_path / "images", "--model", digits / "digits.onnx", "--json")
    report = json.loads(proc.stdout)
    assert report["samples"] == 50
    for side in ("float", "bundle"):
        rows = report[side]["per_class"]
        assert [(row["name"], row["support"]) for row in rows] == [(str(c), 5) for c in range(10)]
    as_read = (pixels.astype(np.float32) / 255.0)[:, None]  # what the image loader feeds
    assert report["float"]["accuracy"] == pytest.approx(_float_accuracy(digits, as_read, test_y[chosen]))
    assert report["float"]["accuracy"] >= 0.9 and report["bundle"]["accuracy"] >= 0.9

    both = _evaluate(digits_bundle, "--data", tmp_path / "images", "--labels", digits / "test_y.npy",
                     "--model", digits / "digits.onnx", check=False)
    assert both.returncode == 2 and "sub-folder per class" in both.stderr
