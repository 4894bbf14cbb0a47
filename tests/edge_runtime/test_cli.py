"""edge-run on the host: run, bench, info, bad input, tampered bundles."""

import json
import shutil

import numpy as np
import pytest

import edge_runtime
from edge_runtime.cli import main
from tests.conftest import run_cli

pytestmark = pytest.mark.slow  # needs the built digits bundle


def edge_run_error(capsys, *args):
    code = main([*map(str, args)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    return err


def test_library_predict_matches_cli(digits, digits_bundle, tmp_path):
    x = np.load(digits / "test_x.npy")[:5]
    model = edge_runtime.load(digits_bundle)
    lib = model.predict({"image": x})["scores"]
    np.save(tmp_path / "x.npy", x)
    run_cli("edge_runtime", "run", digits_bundle, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npz")
    with np.load(tmp_path / "y.npz") as y:
        np.testing.assert_array_equal(y["scores"], lib)
    # one sample, exactly the ONNX shape
    one = model.predict({"image": x[:1]})["scores"]
    assert one.shape == (1, 10)
    np.testing.assert_array_equal(one, lib[:1])


def test_raw_mode_returns_quantized_tensors(digits, digits_bundle, tmp_path):
    model = edge_runtime.load(digits_bundle)
    spec = model.inputs[0]
    q = np.zeros(spec["tflite_shape"], np.int8)
    np.save(tmp_path / "q.npy", q)
    run_cli("edge_runtime", "run", digits_bundle, "--raw", "--input", tmp_path / "q.npy", "--output", tmp_path / "r.npz")
    with np.load(tmp_path / "r.npz") as r:
        assert r["scores"].dtype == np.int8 and r["scores"].shape == (1, 10)


def test_wrong_input_name(capsys, digits_bundle, tmp_path):
    np.savez(tmp_path / "in.npz", pixels=np.zeros((1, 1, 8, 8), np.float32))
    err = edge_run_error(capsys, "run", digits_bundle, "--input", tmp_path / "in.npz")
    assert "missing: image" in err and "unknown: pixels" in err


def test_wrong_input_shape(capsys, digits_bundle, tmp_path):
    np.save(tmp_path / "in.npy", np.zeros((1, 8, 8, 1), np.float32))
    err = edge_run_error(capsys, "run", digits_bundle, "--input", tmp_path / "in.npy")
    assert "input 'image' must have shape" in err and "found (1, 8, 8, 1)" in err


def test_wrong_input_dtype(capsys, digits_bundle, tmp_path):
    np.save(tmp_path / "in.npy", np.zeros((1, 1, 8, 8), np.uint8))
    err = edge_run_error(capsys, "run", digits_bundle, "--input", tmp_path / "in.npy")
    assert "takes float32, found uint8" in err


def test_pickled_input_refused(capsys, digits_bundle, tmp_path):
    np.save(tmp_path / "in.npy", np.array([object()] * 2, dtype=object), allow_pickle=True)
    err = edge_run_error(capsys, "run", digits_bundle, "--input", tmp_path / "in.npy")
    assert "without pickles" in err


@pytest.fixture
def bundle_copy(digits_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(digits_bundle, copy)
    return copy


def test_modified_model_refused(capsys, bundle_copy, digits, tmp_path):
    data = bytearray((bundle_copy / "model.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle_copy / "model.tflite").write_bytes(bytes(data))
    np.save(tmp_path / "x.npy", np.load(digits / "test_x.npy")[:1])
    err = edge_run_error(capsys, "run", bundle_copy, "--input", tmp_path / "x.npy")
    assert "model.tflite was modified" in err


def test_modified_manifest_refused(capsys, bundle_copy):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["inputs"][0]["scale"] *= 2  # a plausible, silent accuracy killer
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    err = edge_run_error(capsys, "info", bundle_copy)
    assert "manifest.json was modified" in err


def test_modified_runner_refused(capsys, bundle_copy):
    with open(bundle_copy / "edge_runtime" / "tensors.py", "a") as f:
        f.write("\n# edited\n")
    err = edge_run_error(capsys, "bench", bundle_copy, "--runs", "1")
    assert "edge_runtime/tensors.py was modified" in err


def test_bench_json(digits_bundle):
    result = json.loads(run_cli("edge_runtime", "bench", digits_bundle, "--runs", "20", "--warmup", "2",
                                "--threads", "1", "--json").stdout)
    lat = result["latency_ms"]
    assert result["runs"] == 20 and result["threads"] == 1 and result["delegate"] == "xnnpack"
    assert 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["max"]
    assert result["throughput_per_s"] > 0 and result["peak_rss_mb"] > 10
    assert result["runtime"].startswith("ai_edge_litert")


def test_bench_text_and_info(digits_bundle):
    text = run_cli("edge_runtime", "bench", digits_bundle, "--runs", "5").stdout
    assert "latency" in text and "median" in text and "peak RSS" in text
    info = run_cli("edge_runtime", "info", digits_bundle).stdout
    assert "image [1, 1, 8, 8] float32 -> tflite [1, 8, 8, 1] int8" in info


def test_missing_bundle(capsys, tmp_path):
    err = edge_run_error(capsys, "info", tmp_path / "nothing")
    assert "does not exist" in err


def test_empty_input(capsys, digits_bundle, tmp_path):
    np.save(tmp_path / "in.npy", np.zeros((0, 1, 8, 8), np.float32))
    err = edge_run_error(capsys, "run", digits_bundle, "--input", tmp_path / "in.npy")
    assert "holds no samples" in err
