"""edge-run serve: the Open Inference Protocol with real clients, Prometheus
metrics checked by promtool, limits, bad input, and a clean SIGTERM.

Tests marked slow need the built digits bundle.
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import textwrap
import time

import numpy as np
import pytest

from edge_runtime.metrics import Metrics, model_fidelity
from tests.conftest import ROOT, run_cli
from tests.helpers.manifests import hand_manifest, reseal_below_the_bar
from tests.helpers.serve import MAX_BODY, Server, free_port, infer_body, promtool_check


@pytest.fixture(scope="module")
def server(digits_bundle):
    srv = Server(digits_bundle)
    yield srv
    if srv.proc.poll() is None:
        srv.stop()


@pytest.fixture(scope="module")
def samples(digits):
    return np.load(digits / "test_x.npy")[:4]




def read_all(s: socket.socket) -> str:
    s.settimeout(10)
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks).decode()


def count(metrics: str, code: str) -> int:
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in metrics.splitlines()
               if line.startswith("edge_run_requests_total") and f'code="{code}"' in line)


def valid(server, x) -> np.ndarray:
    status, body, _ = server.request("POST", "/v2/models/digits-rpi4/infer", infer_body(x[:1]))
    assert status == 200, body
    out = json.loads(body)["outputs"][0]
    return np.array(out["data"], np.float32).reshape(out["shape"])


@pytest.mark.slow
def test_tritonclient_metadata_and_infer_match_edge_run(server, samples, digits_bundle, tmp_path):
    python = os.environ.get("EDGEPACK_CLIENTS_PYTHON", str(ROOT / ".venv-clients" / "bin" / "python"))
    if not os.path.exists(python):
        pytest.fail(f"tritonclient venv missing at {python}: `make test` builds it")
    np.save(tmp_path / "x.npy", samples[:1])
    script = textwrap.dedent(f"""
        import json, numpy as np, tritonclient.http as http
        c = http.InferenceServerClient("127.0.0.1:{server.port}")
        assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("digits-rpi4")
        meta = c.get_model_metadata("digits-rpi4")
        x = np.load("{tmp_path / 'x.npy'}")
        out = {{}}
        for binary in (True, False):
            i = http.InferInput("image", list(x.shape), "FP32")
            i.set_data_from_numpy(x, binary_data=binary)
            r = c.infer("digits-rpi4", [i], outputs=[http.InferRequestedOutput("scores", binary_data=binary)])
            out[str(binary)] = r.as_numpy("scores").tolist()
        print(json.dumps({{"meta": meta, "out": out}}))
    """)
    proc = subprocess.run([python, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["meta"]["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [1, 1, 8, 8]}]
    assert result["meta"]["outputs"] == [{"name": "scores", "datatype": "FP32", "shape": [1, 10]}]
    run_cli("edge_runtime", "run", digits_bundle, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npz")
    with np.load(tmp_path / "y.npz") as y:
        expected = y["scores"]
    for key in ("True", "False"):
        np.testing.assert_array_equal(np.array(result["out"][key], np.float32), expected)


@pytest.mark.slow
def test_npy_body(server, samples):
    import io

    buf = io.BytesIO()
    np.save(buf, samples[:1])
    status, body, headers = server.request("POST", "/v2/models/digits-rpi4/infer", buf.getvalue(),
                                           {"Content-Type": "application/x-npy"})
    assert status == 200 and headers["Content-Type"] == "application/x-npz"
    with np.load(io.BytesIO(body)) as out:
        np.testing.assert_array_equal(out["scores"], valid(server, samples))




@pytest.mark.slow
def test_metrics_pass_promtool(server, samples, digits_bundle):
    valid(server, samples)
    text = server.metrics()
    for name in ("edge_run_requests_total", "edge_run_request_duration_seconds_bucket",
                 "edge_run_inference_duration_seconds_count", "edge_run_in_flight_requests",
                 "edge_run_model_info", 'edge_run_delegate_info{delegate="xnnpack",fallback="false",library="",'
                 'model_file="model.tflite",reason=""} 1.0', "edge_run_model_nodes 8.0\n",
                 'edge_run_delegate_nodes{delegate="xnnpack"} 7.0\n', "process_resident_memory_bytes",
                 "process_cpu_seconds_total", "process_open_fds"):
        assert name in text
    manifest = json.loads((digits_bundle / "manifest.json").read_text())
    precision = manifest["precision"]
    # prometheus_client spells every sample value as a float ("1.0", not "1"); Prometheus reads both alike.
    assert f"edge_run_model_fidelity_ok {float(precision['meets_bar'])!r}\n" in text
    assert (f'edge_run_model_precision_info{{precision="{precision["chosen"]}",step="{precision["step"]}"}} 1.0\n'
            in text)
    cosine = manifest["fidelity"]["outputs"]["scores"]["cosine"]
    assert f'edge_run_model_fidelity_cosine{{output="scores"}} {float(cosine)!r}\n' in text
    promtool_check(text)


def model_gauges(text: str) -> dict[str, str]:
    """{series: value} of the edge_run_model_* samples in an exposition."""
    return dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("edge_run_model_"))


def test_model_fidelity_gauges_below_the_bar():
    manifest = hand_manifest({"requested": "auto", "chosen": "int8+float", "step": "int8 + 12 float ops",
                              "meets_bar": False, "accepted_low_fidelity": True, "shortfalls": ["y: ..."]})
    manifest["fidelity"]["outputs"]["z\"q"] = {**manifest["fidelity"]["outputs"]["y"], "cosine": float("nan")}
    text = Metrics({"model": "det-rpi4"}, model_fidelity(manifest)).render()
    assert model_gauges(text) == {
        'edge_run_model_info{model="det-rpi4"}': "1.0",
        'edge_run_model_precision_info{precision="int8+float",step="int8 + 12 float ops"}': "1.0",
        "edge_run_model_fidelity_ok": "0.0",
        'edge_run_model_fidelity_cosine{output="y"}': "0.995",
        'edge_run_model_fidelity_cosine{output="z\\"q"}': "NaN",  # a NaN output is reported, not hidden
    }
    promtool_check(text)


def test_model_fidelity_gauges_of_a_bundle_from_before_the_ladder():
    text = Metrics({"model": "det-rpi4"}, model_fidelity(hand_manifest())).render()
    # int8 (all there was then); no bar was recorded, so no claim either way
    assert model_gauges(text) == {
        'edge_run_model_info{model="det-rpi4"}': "1.0",
        'edge_run_model_precision_info{precision="int8"}': "1.0",
        'edge_run_model_fidelity_cosine{output="y"}': "0.995",
    }
    promtool_check(text)


@pytest.mark.slow
def test_metrics_of_a_bundle_shipped_below_the_bar(digits_bundle, tmp_path):
    srv = Server(reseal_below_the_bar(digits_bundle, tmp_path / "low"))
    try:
        gauges = model_gauges(srv.metrics())
    finally:
        assert srv.stop() == 0
    assert gauges["edge_run_model_fidelity_ok"] == "0.0"
    assert gauges['edge_run_model_precision_info{precision="int8",step="int8, min/max"}'] == "1.0"
    assert gauges['edge_run_model_fidelity_cosine{output="scores"}'] == "0.9125"


X = np.zeros((1, 1, 8, 8), np.float32)


@pytest.mark.slow
@pytest.mark.parametrize(
    "path, body, code, words",
    [
        ("/v2/models/digits-rpi4/infer", "{not json", 400, "not valid JSON"),
        ("/v2/models/nope/infer", infer_body(X), 404, "unknown model 'nope'"),
        ("/v2/models/digits-rpi4/infer", infer_body(X, name="pixels"), 400, "unknown input 'pixels'"),
        ("/v2/models/digits-rpi4/infer", infer_body(X, datatype="INT64"), 400, "datatype INT64"),
        ("/v2/models/digits-rpi4/infer", infer_body(np.zeros((1, 8, 8, 1), np.float32)), 400,
         "takes shape (1, 1, 8, 8)"),
        ("/v2/models/digits-rpi4/infer", infer_body(X, data=[0.0] * 10), 400, "has 10 elements"),
        ("/v2/models/digits-rpi4/infer", infer_body(X, data=[float("nan")] * 64), 400, "NaN or Inf"),
        ("/v2/models/digits-rpi4/infer", infer_body(X, data=[float("inf")] * 64), 400, "NaN or Inf"),
        ("/v2/models/digits-rpi4/infer", "x" * (MAX_BODY + 1), 413, "over the limit"),
    ],
    ids=["malformed-json", "unknown-model", "unknown-input", "datatype", "shape", "element-count", "nan", "inf",
         "too-large"],
)
def test_bad_request_gets_json_error_and_server_keeps_serving(server, samples, path, body, code, words):
    before = count(server.metrics(), str(code))
    status, payload, _ = server.request("POST", path, body, {"Content-Type": "application/json"})
    assert status == code
    assert words in json.loads(payload)["error"]
    assert count(server.metrics(), str(code)) == before + 1
    valid(server, samples)


@pytest.mark.slow
def test_lying_content_length_and_silent_client(server, samples):
    before = count(server.metrics(), "400")
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"POST /v2/models/digits-rpi4/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n\r\n{\"inputs\"")
        reply = read_all(s)
    assert reply.startswith("HTTP/1.1 400") and "Content-Length promised" in reply and "2 s deadline" in reply
    assert '{"error": "body ended after' in reply
    assert count(server.metrics(), "400") == before + 1
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.settimeout(10)
        start = time.monotonic()
        assert s.recv(1) == b""  # dropped after --timeout, nothing sent
        assert time.monotonic() - start < 8
    valid(server, samples)


@pytest.mark.slow
@pytest.mark.serial  # deadlines measured in seconds: run alone (make test)
def test_sigterm_finishes_in_flight_request_and_exits_zero(digits_bundle, samples):
    srv = Server(digits_bundle, "--timeout", "15")  # the request below is slow on purpose
    body = infer_body(samples[:1]).encode()
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(b"POST /v2/models/digits-rpi4/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % len(body)
              + body[:20])
    # Wait until the server is handling it (the /metrics request itself is the other one in flight).
    deadline = time.monotonic() + 10
    while "edge_run_in_flight_requests 2.0" not in srv.metrics():
        assert time.monotonic() < deadline, "the partial request never reached the server"
        time.sleep(0.05)
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert srv.proc.poll() is None  # still finishing the request in flight
    s.sendall(body[20:])
    reply = read_all(s)  # the server closes the connection: it is draining
    s.close()
    assert reply.startswith("HTTP/1.1 200") and '"scores"' in reply
    # It exits on its own after draining (a second SIGTERM here raced with the interpreter's own exit, when
    # Python has put back the default handler: -15 on a loaded machine).
    srv.proc.communicate(timeout=30)
    assert srv.proc.returncode == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()


@pytest.mark.slow
def test_not_ready_until_warm_up(digits_bundle):
    from edge_runtime import load
    from edge_runtime.metrics import Metrics
    from edge_runtime.server import Limits, Service

    service = Service(lambda: [load(digits_bundle)], Limits(), "digits-rpi4", Metrics({}))
    assert not service.ready.is_set()
    service.warm_up()
    assert service.ready.is_set() and service.spec["inputs"][0]["name"] == "image"


@pytest.mark.slow
@pytest.mark.serial  # deadlines measured in seconds: run alone (make test)
def test_sigterm_drains_with_stalled_and_idle_clients(digits_bundle):
    """A client that sent half a request head and one idle keep-alive connection never hold up the exit."""
    srv = Server(digits_bundle, "--timeout", "3")
    idle = socket.create_connection(("127.0.0.1", srv.port))
    idle.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert idle.recv(65536).startswith(b"HTTP/1.1 200")
    stalled = socket.create_connection(("127.0.0.1", srv.port))
    stalled.sendall(b"POST /v2/models/digits-rpi4/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
    start = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    srv.proc.communicate(timeout=30)
    took = time.monotonic() - start
    assert srv.proc.returncode == 0 and took < 3 + 2, f"exit {srv.proc.returncode} after {took:.1f} s"
    for s in (idle, stalled):
        s.settimeout(2)
        assert s.recv(65536) == b""  # closed by the server
        s.close()


@pytest.mark.slow
def test_fuzzed_requests_never_get_a_5xx(server, samples, tmp_path):
    """schemathesis drives the server's own OpenAPI description (modelled on the OIP v2 REST spec):
    schema-valid and schema-violating requests, bounded; no 5xx, and the server still answers after."""
    st = shutil.which("schemathesis", path=os.path.dirname(sys.executable))
    assert st, "schemathesis missing: it is in requirements/dev.txt"
    proc = subprocess.run(
        [st, "run", f"http://127.0.0.1:{server.port}/v2/openapi.json", "--checks", "not_a_server_error",
         "--mode", "all", "--max-examples", "25", "--seed", "12", "--generation-database", "none",
         "--request-timeout", "10", "--no-color"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)  # its cache goes there, not in the repo
    assert proc.returncode == 0, proc.stdout[-4000:]
    generated = int(re.search(r"(\d+) generated", proc.stdout).group(1))
    assert generated >= 100, proc.stdout[-2000:]
    print(f"schemathesis: {generated} cases")
    assert count(server.metrics(), "500") == 0
    valid(server, samples)


@pytest.mark.slow
@pytest.mark.parametrize("when, sig", [
    ("unpacking", signal.SIGTERM), ("unpacking", signal.SIGHUP), ("unpacking", signal.SIGINT),
    ("verifying", signal.SIGTERM), ("verifying", signal.SIGHUP), ("serving", signal.SIGHUP),
    ("serving", signal.SIGTERM)], ids=lambda v: getattr(v, "name", v))
def test_signal_safe_cleanup(digits_bundle, tmp_path, when, sig):
    """`edge-run serve BUNDLE.tar.gz` signalled while it unpacks, verifies or serves: no temp folder survives.

    SIGTERM while the archive was unpacked, or SIGHUP at any time, left the unpacked bundle behind (the
    default action killed the process before its cleanup). Each run has a TMPDIR of its own to look in.
    """
    archive = digits_bundle.parent / f"{digits_bundle.name}.tar.gz"
    with tarfile.open(archive) as tar:
        files = sum(member.isfile() for member in tar)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime", "serve", str(archive), "--port", str(port),
                             "--timeout", "2"], cwd=ROOT, env={**os.environ, "TMPDIR": str(tmp)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not reached(when, tmp, port, files):
            assert proc.poll() is None and time.monotonic() < deadline, f"never reached {when}"
            time.sleep(0.001)
        proc.send_signal(sig)
        err = proc.communicate(timeout=30)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode >= 0, f"killed by {signal.Signals(-proc.returncode).name}: {err[-2000:]}"
    assert "Traceback" not in err, err[-3000:]
    if when == "serving":
        assert proc.returncode == 0 and "edge-run serve: stopped" in err, err[-2000:]
    assert list(tmp.iterdir()) == [], f"left behind after {sig.name} while {when}: {list(tmp.rglob('*'))[:5]}"


def reached(when: str, tmp, port: int, files: int) -> bool:
    """Whether a serving process has got that far: its temp folder made, every file unpacked, or ready."""
    if when == "unpacking":
        return any(tmp.iterdir())
    if when == "verifying":
        return sum(path.is_file() for path in tmp.rglob("*")) >= files
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/v2/health/ready")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()
