"""The ONNX I/O contract: predict(), edge-run run and edge-run serve take the arrays onnxruntime takes and give
back onnxruntime's shapes, whatever an input's first dimension means (the rule: edge_runtime.tensors).

Three real builds, run side by side once for the module (the converter is the slow part): inputs of ranks 1-5
whose first dimension is not a batch, the same ranks with a symbolic batch (fixed at 1 by the build), and a
sequence model [8, 16] -> [8]. Hypothesis then draws arrays in each form the runner takes.
"""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import edge_runtime
from edge_runtime.cli import main as edge_run
from edge_runtime.drift import representable
from edge_runtime.errors import UserError
from edge_runtime.tensors import BATCH_AXIS as ALONG
from edge_runtime.tensors import ONE, STACKED
from tests.conftest import ROOT, run_cli
from tests.fixtures.contract_models import BATCHED, UNBATCHED, calibration, sequence_mean, shifts
from tests.helpers.serve import Server

SEQUENCE = ([8, 16],)
MODELS = {"unbatched": UNBATCHED, "batched": BATCHED, "sequence": SEQUENCE}


@dataclasses.dataclass
class Built:
    name: str
    onnx: Path
    bundle: Path
    session: object  # onnxruntime.InferenceSession of the ONNX model the bundle was built from

    @property
    def inputs(self) -> dict[str, list]:
        """{name: declared shape}, as onnxruntime reports it (a symbolic dimension is a string)."""
        return {i.name: list(i.shape) for i in self.session.get_inputs()}

    def reference(self, feeds: dict[str, np.ndarray], form: str) -> dict[str, np.ndarray]:
        """onnxruntime's outputs: run on the arrays as they are, or once per sample of a stack, stacked."""
        names = [o.name for o in self.session.get_outputs()]
        if form != STACKED:
            return dict(zip(names, self.session.run(None, feeds)))
        count = len(next(iter(feeds.values())))
        runs = [self.session.run(None, {k: v[i] for k, v in feeds.items()}) for i in range(count)]
        return {name: np.stack([r[k] for r in runs]) for k, name in enumerate(names)}


def _write_model(work: Path, name: str) -> tuple[Path, Path]:
    """The ONNX model and its calibration file (the build's stacked format, 48 samples)."""
    if name == "sequence":
        np.save(work / "sequence.npy", np.random.default_rng(1).standard_normal((48, 8, 16)).astype(np.float32))
        return sequence_mean(work / "sequence.onnx"), work / "sequence.npy"
    np.savez(work / f"{name}.npz", **calibration(MODELS[name], 48))
    return shifts(work / f"{name}.onnx", MODELS[name]), work / f"{name}.npz"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Built]:
    import onnxruntime as ort

    work = tmp_path_factory.mktemp("contract")
    builds = {}
    for name in MODELS:
        model, data = _write_model(work, name)
        kinds = [] if name == "sequence" else [a for i in range(len(MODELS[name]))
                                               for a in ("--output-kind", f"y{i}=regression")]
        builds[name] = model, subprocess.Popen(
            [sys.executable, "-m", "packager", "build", str(model), "--target", "rpi4", "--calibration", str(data),
             "-o", str(work / "dist"), "--no-wheels", *kinds],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    logs = {name: proc.communicate()[0] for name, (_, proc) in builds.items()}  # every build ends before a check
    for name, (model, proc) in builds.items():
        assert proc.returncode == 0, f"build of {name} failed:\n{logs[name][-3000:]}"
    return {name: Built(name, model, work / "dist" / f"{name}-rpi4",
                        ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]))
            for name, (model, _) in builds.items()}


@pytest.fixture(scope="module")
def servers(built):
    running = {name: Server(b.bundle) for name, b in built.items()}
    yield running
    for srv in running.values():
        assert srv.stop() == 0


@st.composite
def requests(draw, inputs: dict[str, list]):
    """(form, {name: array}): every input in one form, as the runner takes them."""
    static = {name: [d if isinstance(d, int) else 1 for d in shape] for name, shape in inputs.items()}
    batch = all(shape and not isinstance(shape[0], int) for shape in inputs.values())
    form = draw(st.sampled_from([ONE, STACKED, ALONG] if batch else [ONE, STACKED]))
    count = 1 if form == ONE else draw(st.integers(2 if form == ALONG else 1, 3))
    feeds = {}
    for name, shape in static.items():
        dims = shape if form == ONE else [count, *shape] if form == STACKED else [count, *shape[1:]]
        feeds[name] = draw(hnp.arrays(np.float32, dims, elements=st.floats(-0.5, 0.5, width=32)))
    return form, feeds


def infer_json(server: Server, model: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """An OIP v2 infer request over loopback (JSON tensors); the outputs in the shapes the reply gives."""
    body = {"inputs": [{"name": k, "datatype": "FP32", "shape": list(v.shape), "data": v.ravel().tolist()}
                       for k, v in feeds.items()]}
    status, reply, _ = server.request("POST", f"/v2/models/{model}/infer", json.dumps(body))
    assert status == 200, reply[:500]
    return {o["name"]: np.array(o["data"], np.float32).reshape(o["shape"]) for o in json.loads(reply)["outputs"]}


def run_cli_npz(bundle: Path, feeds: dict[str, np.ndarray], work: Path) -> dict[str, np.ndarray]:
    """edge-run run --input x.npz --output y.npz, in this process (the same entry point as the command)."""
    np.savez(work / "x.npz", **feeds)
    assert edge_run(["run", str(bundle), "--input", str(work / "x.npz"), "--output", str(work / "y.npz")]) == 0
    with np.load(work / "y.npz") as y:
        return {k: y[k] for k in y.files}


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_predict_run_and_serve_give_onnxruntime_shapes(built, servers, name, tmp_path_factory):
    b, server, work = built[name], servers[name], tmp_path_factory.mktemp(name)
    model = edge_runtime.load(b.bundle, threads=1)
    steps = {o["name"]: o["scale"] for o in model.outputs}
    ranges = {o["name"]: representable(o) for o in model.outputs}  # int8 outputs saturate there

    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                         HealthCheck.large_base_example])
    @given(requests(b.inputs))
    def check(request):
        form, feeds = request
        want = b.reference(feeds, form)
        got = model.predict(feeds)
        for out, ref in want.items():
            assert got[out].shape == ref.shape, (form, {k: v.shape for k, v in feeds.items()})
            # Values too, to catch samples out of order or out of place: within four quantization steps of
            # onnxruntime's, inside the output's int8 range (small inputs keep the sequence model's hidden
            # layer inside its calibrated range).
            np.testing.assert_allclose(got[out], np.clip(ref, *ranges[out]), atol=4 * steps[out],
                                       err_msg=f"{out} ({form})")
        for where, outputs in (("edge-run run", run_cli_npz(b.bundle, feeds, work)),
                               ("serve", infer_json(server, f"{name}-rpi4", feeds))):
            assert outputs.keys() == got.keys(), where
            for out, value in outputs.items():
                assert value.shape == want[out].shape, (where, form, out)
                np.testing.assert_array_equal(value, got[out], err_msg=f"{where}: {out} ({form})")

    check()


@pytest.mark.slow
def test_a_sequence_model_round_trips_with_onnxruntime_shapes(built, servers, tmp_path):
    """Input [8, 16] (8 steps, no batch axis), output [8]: the array onnxruntime takes, (8,) back."""
    b = built["sequence"]
    x = np.random.default_rng(5).uniform(-1, 1, (8, 16)).astype(np.float32)
    (want,) = b.session.run(None, {"x": x})
    model = edge_runtime.load(b.bundle)
    one = model.predict({"x": x})["y"]
    assert one.shape == want.shape == (8,)
    assert model.predict({"x": np.stack([x, -x, x])})["y"].shape == (3, 8)  # N samples stacked in front
    np.save(tmp_path / "x.npy", x)
    shown = run_cli("edge_runtime", "run", b.bundle, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npz")
    assert "y (8,) float32" in shown.stdout
    with np.load(tmp_path / "y.npz") as y:
        np.testing.assert_array_equal(y["y"], one)
    status, reply, _ = servers["sequence"].request("POST", "/v2/models/sequence-rpi4/infer", (tmp_path / "x.npy")
                                                   .read_bytes(), {"Content-Type": "application/x-npy"})
    assert status == 200, reply[:300]
    with np.load(io.BytesIO(reply)) as y:
        np.testing.assert_array_equal(y["y"], one)
    np.save(tmp_path / "t.npy", x.T)  # (16, 8): another layout, refused with the shape onnxruntime takes
    refused = run_cli("edge_runtime", "run", b.bundle, "--input", tmp_path / "t.npy", check=False)
    assert refused.returncode == 2 and "input 'x' takes shape (8, 16)" in refused.stderr and "(16, 8)" in refused.stderr


@pytest.mark.slow
def test_inputs_in_different_forms_are_refused(built):
    """One input as one sample, the others stacked: which outputs shape would be a guess, so none is made."""
    model = edge_runtime.load(built["unbatched"].bundle)
    feeds = {spec["name"]: np.zeros((1, *spec["shape"]), np.float32) for spec in model.inputs}
    feeds["x0"] = np.zeros(model.inputs[0]["shape"], np.float32)
    with pytest.raises(UserError, match="different forms: 'x0' one sample, 'x1' stacked"):
        model.predict(feeds)
    stacked = model.predict({k: v if k != "x0" else v[None] for k, v in feeds.items()})
    assert {k: v.shape for k, v in stacked.items()} == {f"y{i}": (1, *s) for i, s in enumerate(UNBATCHED)}
