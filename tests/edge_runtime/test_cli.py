"""edge-run on the host: run, bench, info, bad input, tampered bundles.

Tests marked slow need the built digits bundle; `describe` is tested on
manifests written by hand.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edge_runtime
from edge_runtime.bundle import open_bundle
from edge_runtime.cli import main
from edge_runtime.describe import describe
from edge_runtime.model import usable_cores
from tests.conftest import ROOT, run_cli
from tests.helpers.manifests import BAR, hand_manifest, reseal_below_the_bar


def edge_run_error(capsys, *args):
    code = main([*map(str, args)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.slow
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


@pytest.mark.slow
def test_raw_mode_returns_quantized_tensors(digits, digits_bundle, tmp_path):
    model = edge_runtime.load(digits_bundle)
    spec = model.inputs[0]
    q = np.zeros(spec["tflite_shape"], np.int8)
    np.save(tmp_path / "q.npy", q)
    run_cli("edge_runtime", "run", digits_bundle, "--raw", "--input", tmp_path / "q.npy", "--output", tmp_path / "r.npz")
    with np.load(tmp_path / "r.npz") as r:
        assert r["scores"].dtype == np.int8 and r["scores"].shape == (1, 10)


@pytest.mark.slow
def test_wrong_input_name(capsys, digits_bundle, tmp_path):
    np.savez(tmp_path / "in.npz", pixels=np.zeros((1, 1, 8, 8), np.float32))
    err = edge_run_error(capsys, "run", digits_bundle, "--input", tmp_path / "in.npz")
    assert "missing: image" in err and "unknown: pixels" in err


@pytest.mark.slow
def test_wrong_input_shape(capsys, digits_bundle, tmp_path):
    np.save(tmp_path / "in.npy", np.zeros((1, 8, 8, 1), np.float32))
    err = edge_run_error(capsys, "run", digits_bundle, "--input", tmp_path / "in.npy")
    assert "input 'image' takes shape (1, 1, 8, 8)" in err and "found (1, 8, 8, 1)" in err


@pytest.mark.slow
def test_wrong_input_dtype(capsys, digits_bundle, tmp_path):
    np.save(tmp_path / "in.npy", np.zeros((1, 1, 8, 8), np.uint8))
    err = edge_run_error(capsys, "run", digits_bundle, "--input", tmp_path / "in.npy")
    assert "takes float32, found uint8" in err


@pytest.mark.slow
def test_pickled_input_refused(capsys, digits_bundle, tmp_path):
    np.save(tmp_path / "in.npy", np.array([object()] * 2, dtype=object), allow_pickle=True)
    err = edge_run_error(capsys, "run", digits_bundle, "--input", tmp_path / "in.npy")
    assert "without pickles" in err


@pytest.fixture
def bundle_copy(digits_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(digits_bundle, copy)
    return copy


@pytest.mark.slow
def test_modified_model_refused(capsys, bundle_copy, digits, tmp_path):
    data = bytearray((bundle_copy / "model.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle_copy / "model.tflite").write_bytes(bytes(data))
    np.save(tmp_path / "x.npy", np.load(digits / "test_x.npy")[:1])
    err = edge_run_error(capsys, "run", bundle_copy, "--input", tmp_path / "x.npy")
    assert "model.tflite was modified" in err


@pytest.mark.slow
def test_modified_manifest_refused(capsys, bundle_copy):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["inputs"][0]["scale"] *= 2  # a plausible, silent accuracy killer
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    err = edge_run_error(capsys, "info", bundle_copy)
    assert "manifest.json was modified" in err


@pytest.mark.slow
def test_modified_runner_refused(capsys, bundle_copy):
    with open(bundle_copy / "edge_runtime" / "tensors.py", "a") as f:
        f.write("\n# edited\n")
    err = edge_run_error(capsys, "bench", bundle_copy, "--runs", "1")
    assert "edge_runtime/tensors.py was modified" in err


@pytest.mark.slow
def test_bench_json(digits_bundle):
    result = json.loads(run_cli("edge_runtime", "bench", digits_bundle, "--runs", "20", "--warmup", "2",
                                "--threads", "1", "--json").stdout)
    lat = result["latency_ms"]
    assert result["runs"] == 20 and result["threads"] == 1 and result["delegate"] == "xnnpack"
    assert 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["max"]
    assert result["throughput_per_s"] > 0 and result["peak_rss_mb"] > 10
    assert result["runtime"].startswith("ai_edge_litert")


@pytest.mark.slow
def test_bench_text_and_info(digits_bundle):
    text = run_cli("edge_runtime", "bench", digits_bundle, "--runs", "5").stdout
    assert "latency" in text and "median" in text and "peak RSS" in text
    info = run_cli("edge_runtime", "info", digits_bundle).stdout
    assert "image [1, 1, 8, 8] float32 -> tflite [1, 8, 8, 1] int8" in info


@pytest.mark.slow
def test_edge_run_writes_nothing_on_stderr(digits, digits_bundle, tmp_path):
    """Not a line from the runtime either ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU." every call)."""
    x = tmp_path / "x.npy"
    np.save(x, np.load(digits / "test_x.npy")[:1])
    for args in (("run", digits_bundle, "--input", x, "--output", tmp_path / "y.npz"),
                 ("bench", digits_bundle, "--runs", "5"), ("info", digits_bundle)):
        proc = run_cli("edge_runtime", *args)
        assert proc.stdout and proc.stderr == "", (args, proc.stderr)


# edge-run on one core of this machine (its CPU affinity cut to one, as taskset or a container's cpuset does)
ON_ONE_CORE = ("import os, sys; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
               "from edge_runtime.cli import main; sys.exit(main(sys.argv[1:]))")


def on_one_core(*args) -> str:
    proc = subprocess.run([sys.executable, "-c", ON_ONE_CORE, *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_threads_default_to_the_targets_but_never_more_than_the_cores_here(digits_bundle):
    assert json.loads((digits_bundle / "manifest.json").read_text())["target"]["default_threads"] == 4
    assert edge_runtime.load(digits_bundle).engine.threads == min(4, usable_cores())
    text = on_one_core("bench", digits_bundle, "--runs", "3")
    assert ", 1 thread (the target's default 4, capped at the 1 core here)\n" in text
    assert json.loads(on_one_core("bench", digits_bundle, "--runs", "3", "--json"))["threads"] == 1
    assert "ai_edge_litert 2.3.0, 1 thread, delegate xnnpack" in on_one_core("info", digits_bundle)
    # what the user asks for is what runs
    assert json.loads(on_one_core("bench", digits_bundle, "--runs", "3", "--threads", "3", "--json"))["threads"] == 3


def test_missing_bundle(capsys, tmp_path):
    err = edge_run_error(capsys, "info", tmp_path / "nothing")
    assert "does not exist" in err


@pytest.mark.slow
def test_empty_input(capsys, digits_bundle, tmp_path):
    np.save(tmp_path / "in.npy", np.zeros((0, 1, 8, 8), np.float32))
    err = edge_run_error(capsys, "run", digits_bundle, "--input", tmp_path / "in.npy")
    assert "holds no samples" in err


@pytest.mark.parametrize("args, message", [
    (["--output", "{tmp}"], "is a folder"),
    (["--output", "{tmp}/no/such/dir/y.npz"], "does not exist"),
    (["--threads", "0"], "--threads must be 1..256, found 0"),
    (["--threads", "100000"], "--threads must be 1..256"),
])
def test_run_options_are_checked_before_the_model_runs(capsys, tmp_path, args, message):
    """A bad option is a one-line error, before any bundle is even opened (issue 12)."""
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    args = [a.format(tmp=tmp_path) for a in args]
    err = edge_run_error(capsys, "run", tmp_path / "no-bundle", "--input", tmp_path / "x.npy", *args)
    assert message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]  # nothing half-written


@pytest.mark.parametrize("args", [["--runs", "0"], ["--warmup", "-1"], ["--runs", "99999999"], ["--threads", "-2"]])
def test_bench_options_are_checked(capsys, tmp_path, args):
    err = edge_run_error(capsys, "bench", tmp_path / "no-bundle", *args)
    assert "must be" in err


@pytest.mark.slow
def test_output_write_failure_leaves_nothing(capsys, digits, digits_bundle, tmp_path, monkeypatch):
    np.save(tmp_path / "x.npy", np.load(digits / "test_x.npy")[:2])

    def full(file, **arrays):
        Path(file).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    err = edge_run_error(capsys, "run", digits_bundle, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npz")
    assert "could not write --output" in err and "No space left" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


# --- precision and fidelity in `edge-run info` (issue 13) ---




def ladder_row(step, precision, meets, cosine, **extra):
    return {"step": step, "precision": precision, "cosine": cosine, "channel_cosine": None, "top1": None,
            "f1": None, "meets_bar": meets, "shortfalls": [] if meets else [f"y: cosine {cosine:.4f} < 0.99"],
            "float_ops": 0, "size": 20480, "latency_ms": 1.5, "xnnpack_partitions": 1, "seconds": 2.0, "note": "",
            **extra}




def test_describe_precision_that_holds_the_bar_and_its_ladder():
    text = describe(hand_manifest({
        "requested": "auto", "chosen": "int8", "step": "int8, ranges per tensor",
        "why": "int8, ranges per tensor is the first step that holds the bar; below it: int8, min/max",
        "bar": BAR, "meets_bar": True, "accepted_low_fidelity": False, "shortfalls": [],
        "steps": [ladder_row("int8, min/max", "int8", False, 0.9512),
                  ladder_row("int8, ranges per tensor", "int8", True, 0.9953, channel_cosine=0.934, f1=0.965,
                             note="31 trials; minmax 40, p99.99 12")],
    }))
    lines = text.splitlines()
    assert ("precision  int8 (step 'int8, ranges per tensor'; requested auto): holds the bar "
            "(top-1 >= 0.99, score F1 >= 0.95, cosine >= 0.99, worst channel >= 0.9)") in lines
    assert "WARNING" not in text and "BELOW" not in text
    header = next(i for i, line in enumerate(lines) if line.startswith("ladder "))
    assert all(word in lines[header] for word in ("step", "precision", "cosine", "task", "float ops", "size KB",
                                                  "host ms", "board ms", "parts", "verdict"))
    first, chosen = lines[header + 1].split(), lines[header + 2].split()
    assert first[:3] == ["int8,", "min/max", "int8"] and "0.9512" in first and first[-3:] == ["below", "the", "bar"]
    assert chosen[:4] == ["*", "int8,", "ranges", "per"]  # the shipped step is marked
    assert chosen[5:13] == ["int8", "0.9953", "F1", "0.965", "0", "20", "1.500", "-"]  # task figure: its F1
    assert chosen[-3:] == ["holds", "the", "bar"]
    assert "fidelity   on 40 held-out samples, float ONNX vs bundle (int8):" in lines
    assert ("           y: cosine 0.99500  max|err| 0.02  mean|err| 0.001  worst ch 0.9340 [4, axis 1]  F1 0.965"
            in lines)


def test_describe_low_fidelity_is_loud():
    shortfalls = ["y: cosine 0.9410 < 0.99", "y: score-map F1 0.612 < 0.95"]
    text = describe(hand_manifest({
        "requested": "auto", "chosen": "float16", "step": "float16",
        "why": "--accept-low-fidelity: float16 came closest to the bar",
        "bar": {**BAR, "min_top1": None}, "meets_bar": False, "accepted_low_fidelity": True,
        "shortfalls": shortfalls,
        "steps": [ladder_row("int8, min/max", "int8", False, 0.52),
                  ladder_row("float16", "float16", False, 0.941, note="")],
    }))
    lines = text.splitlines()
    # top-1 was switched off (0 at build time): the bar says what was actually required
    assert ("precision  float16 (step 'float16'; requested auto): BELOW the bar "
            "(score F1 >= 0.95, cosine >= 0.99, worst channel >= 0.9)") in lines
    assert ("WARNING    below the fidelity bar, shipped with --accept-low-fidelity: "
            "y: cosine 0.9410 < 0.99; y: score-map F1 0.612 < 0.95") in lines
    assert lines.index(next(x for x in lines if x.startswith("WARNING"))) < lines.index(
        next(x for x in lines if x.startswith("fidelity")))  # before the figures, not buried after them
    assert "float ONNX vs bundle (float16):" in text
    assert next(x for x in lines if x.startswith("           * ")).split()[1:3] == ["float16", "float16"]


def test_describe_held_step_passed_over_for_speed():
    text = describe(hand_manifest({
        "requested": "auto", "chosen": "float32", "step": "float32", "why": "...", "bar": BAR, "meets_bar": True,
        "accepted_low_fidelity": False, "shortfalls": [],
        "steps": [ladder_row("int8, min/max", "int8", True, 0.999, note="slower than float32 (1.20 ms)"),
                  ladder_row("float32", "float32", True, 1.0)],
    }))
    row = next(x for x in text.splitlines() if "int8, min/max" in x)
    assert row.endswith("holds the bar, slower than float32")


def test_describe_bundle_from_before_the_ladder():
    manifest = hand_manifest(score_map=False)
    manifest["fidelity"]["outputs"]["y"] = {"cosine": 0.999, "min_cosine": 0.99, "max_abs_error": 0.01,
                                            "mean_abs_error": 0.001, "top1_agreement": 0.983}  # the old keys only
    lines = describe(manifest).splitlines()
    assert "precision  int8 (built before the precision ladder; fidelity bar not recorded)" in lines
    assert not any(x.startswith(("WARNING", "ladder")) for x in lines)
    assert "           y: cosine 0.99900  max|err| 0.01  mean|err| 0.001  top1 98.3%" in lines




@pytest.mark.slow
def test_info_on_real_bundle_says_precision(digits_bundle):
    info = run_cli("edge_runtime", "info", digits_bundle).stdout
    precision = json.loads((digits_bundle / "manifest.json").read_text())["precision"]
    verdict = "holds the bar" if precision["meets_bar"] else "BELOW the bar"
    assert f"precision  {precision['chosen']} (step '{precision['step']}'; requested auto): {verdict}" in info
    assert f"float ONNX vs bundle ({precision['chosen']}):" in info
    assert ("WARNING" in info) == (not precision["meets_bar"])


@pytest.mark.slow
def test_info_shows_a_bundle_shipped_below_the_bar(digits_bundle, tmp_path):
    low = reseal_below_the_bar(digits_bundle, tmp_path / "low")
    assert open_bundle(low)[1]["precision"]["accepted_low_fidelity"]  # the re-seal passes verification
    info = run_cli("edge_runtime", "info", low).stdout
    assert "WARNING    below the fidelity bar, shipped with --accept-low-fidelity: scores: cosine 0.9125 < 0.99" in info
    assert "): BELOW the bar (" in info


@pytest.mark.parametrize("precision", ["x", {"steps": "zz"}, {"bar": 3}, {"shortfalls": 5},
                                       {"steps": [1]}, {"steps": [{"cosine": "high"}]}, {"meets_bar": "no"},
                                       {"chosen": ["a"]}])
def test_a_malformed_precision_section_is_refused_naming_the_field(precision):
    """A manifest resealed by hand (its digest is no signature): info and /metrics refuse, no traceback."""
    from edge_runtime.errors import UserError
    from edge_runtime.metrics import model_fidelity

    manifest = {"name": "m", "target": {"name": "rpi4", "human_name": "Pi"}, "source": {"file": "m.onnx",
                "sha256": "0" * 64}, "inputs": [], "outputs": [], "precision": precision}
    with pytest.raises(UserError, match=r"manifest precision\.\S+ .* is not what edgepack build writes"):
        describe(manifest)
    with pytest.raises(UserError, match="manifest precision"):
        model_fidelity(manifest)
