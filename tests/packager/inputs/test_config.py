"""A configuration input (a sample rate choosing a branch) constant in the
calibration data is fixed at build time; the bundle refuses another value."""

import json

import numpy as np
import onnx
import pytest

import edge_runtime
from edge_runtime.errors import UserError
from packager.onnx_model import load_onnx
from packager.inputs.config import constant_config_inputs
from tests.conftest import run_cli
from tests.fixtures.models import audio_and_ids, rate_switch


def _samples(count, rate=16000, seed=0):
    x = np.random.default_rng(seed).standard_normal((count, 1, 16)).astype(np.float32)
    return {"x": x, "sr": np.full(count, rate, np.int64)}


def test_only_small_integer_inputs_of_graphs_with_control_flow_are_candidates(tmp_path):
    model = load_onnx(rate_switch(tmp_path / "switch.onnx"))
    assert list(constant_config_inputs(model.proto, model.inputs, _samples(20))) == ["sr"]
    varied = _samples(20)
    varied["sr"][3] = 8000
    assert constant_config_inputs(model.proto, model.inputs, varied) == {}
    # No If/Loop: constant ids are data, never frozen.
    ids_model = load_onnx(audio_and_ids(tmp_path / "ids.onnx"))
    same_ids = {"frames": np.zeros((5, 1, 16, 40), np.float32), "token_ids": np.ones((5, 1, 8), np.int64)}
    assert constant_config_inputs(ids_model.proto, ids_model.inputs, same_ids) == {}


@pytest.mark.slow
def test_a_fixed_config_input_builds_and_is_enforced(tmp_path):
    model = rate_switch(tmp_path / "switch.onnx")
    np.savez(tmp_path / "calib.npz", **_samples(60))
    build = run_cli("packager", "build", model, "--target", "rpi4", "--no-wheels", "--calibration",
                    tmp_path / "calib.npz", "-o", tmp_path / "dist")
    assert "config_inputs: input 'sr' is 16000 in every sample: fixed at that value" in build.stderr
    bundle = tmp_path / "dist" / "switch-rpi4"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["fixed_inputs"] == [{"name": "sr", "shape": [], "dtype": "int64", "value": 16000}]
    assert [i["name"] for i in manifest["inputs"]] == ["x"]
    assert min(manifest["float_conversion_cosine"].values()) >= 0.999

    loaded = edge_runtime.load(bundle)
    fresh = _samples(5, seed=3)
    ref = onnx.load(str(model))
    import onnxruntime as ort

    session = ort.InferenceSession(ref.SerializeToString())
    want = np.concatenate([session.run(None, {"x": fresh["x"][i], "sr": np.array(16000)})[0] for i in range(5)])
    got_with = loaded.predict(fresh)["y"]  # sr given, at the built value
    got_without = loaded.predict({"x": fresh["x"]})["y"]  # or left out
    np.testing.assert_array_equal(got_with, got_without)
    assert np.abs(got_with.reshape(want.shape) - want).max() < 0.05 * np.abs(want).max()
    with pytest.raises(UserError) as err:
        loaded.predict({"x": fresh["x"], "sr": np.full(5, 8000)})
    assert "input 'sr' was fixed at 16000 when this bundle was built; found [8000" in err.value.message


@pytest.mark.parametrize("entry", [
    {"name": "sr", "value": [1] * 100000},  # a huge "value"
    {"name": "sr", "value": "16000"},
    {"name": 3, "value": 16000},
    {"name": "sr", "value": [[16000]]},
    {"name": "sr", "value": 2 ** 70},  # JSON integers are unbounded; int64 is not
    "sr",
])
def test_a_malformed_fixed_inputs_entry_is_refused_clearly(entry):
    from edge_runtime.model import fixed_inputs

    with pytest.raises(UserError) as err:
        fixed_inputs({"fixed_inputs": [entry]})
    assert "fixed_inputs entry" in err.value.message


@pytest.mark.parametrize("given", [np.array([1, 2, 3]), np.array([], np.int64), np.array(["1", "2"]), np.array([2, 1])])
def test_a_fixed_input_given_in_the_wrong_size_or_value_is_refused_clearly(given):
    from edge_runtime.model import Model

    model = Model.__new__(Model)  # only the fixed-input check, no interpreter
    model.fixed_inputs = {"cfg": np.array([1, 2])}
    with pytest.raises(UserError) as err:
        model._drop_fixed({"cfg": given, "x": np.zeros(3)})
    assert "input 'cfg' was fixed at [1, 2]" in err.value.message
