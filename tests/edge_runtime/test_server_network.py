"""edge-run serve survives the network (issue 12, class 2), fast: the real HTTP stack
(uvicorn + h11 + our ASGI app and protocol) on loopback, in this process, over a
Model whose interpreter is a stand-in (so no converter run).

One test per class of attack: slow clients, memory amplification, malformed
requests (examples and fuzzing), ambiguous framing, draining with stalled
clients, LAN safety, option validation, metrics escaping.
"""

from __future__ import annotations

import io
import json
import math
import signal
import socket
import threading
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

from edge_runtime.cli import build_parser, serve_settings
from edge_runtime.errors import UserError
from edge_runtime.metrics import Metrics
from edge_runtime.protocol import HttpError, parse_json_request
from edge_runtime.server import Access, Limits, Request, Service, handle
from tests.helpers.device_health import fake_board
from tests.helpers.live_server import (INFER, MANIFEST, NAME, LiveServer, assert_still_serving, closed_by_server,
                                       infer_body, parse_reply, read_replies, read_reply, stand_in_models)


@pytest.fixture
def live():
    srv = LiveServer()
    yield srv
    srv.stop()


# ------------------------------------------------------------------ slow and idle clients


@pytest.mark.serial  # deadlines measured in seconds: run alone (make test)
def test_slow_body_clients_never_delay_inference(live):
    """Nine clients trickling their body (the attack that blocked every inference) and a normal client."""
    stop = threading.Event()
    replies = []

    def trickle():
        with live.connect() as s:
            s.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n")
            while not stop.is_set():
                try:
                    s.sendall(b" ")
                except OSError:
                    break
                time.sleep(0.2)  # five bytes a second: the old per-byte timeout never fired
            replies.append(read_reply(s))

    slow = [threading.Thread(target=trickle) for _ in range(9)]
    for t in slow:
        t.start()
    time.sleep(0.5)
    seconds = []
    for _ in range(20):  # workers 1 + queue 1: the slow clients would have held both slots
        start = time.monotonic()
        assert live.infer()[0] == 200
        seconds.append(time.monotonic() - start)
    assert max(seconds) < 1.0, seconds  # a stand-in inference takes no time: anything near the deadline is a stall
    stop.set()
    for t in slow:
        t.join(timeout=10)
    # Each slow body had one total deadline (2 s), not a per-byte one: refused, not served.
    assert len(replies) == 9
    for raw in replies:
        status, payload, headers = parse_reply(raw)
        assert status == 400 and "not complete within the 2 s deadline" in payload["error"]
        assert headers["connection"] == "close"


@pytest.mark.serial  # deadlines measured in seconds: run alone (make test)
def test_slow_request_head_dropped_at_its_total_deadline(live):
    """A head sent a byte at a time: each byte would restart a per-byte (or keep-alive) timer."""
    stop = threading.Event()
    with live.connect() as s:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")

        def trickle():
            while not stop.is_set():
                try:
                    s.sendall(b"x")
                except OSError:
                    return
                time.sleep(0.1)

        sender = threading.Thread(target=trickle)
        start = time.monotonic()
        sender.start()
        try:
            assert closed_by_server(s, within=6)
            assert time.monotonic() - start < 2.0 + 1.5  # --timeout 2, one total deadline
        finally:
            stop.set()
            sender.join()
    assert_still_serving(live)


@pytest.mark.serial  # deadlines measured in seconds: run alone (make test)
def test_idle_connections_are_bounded_in_number_and_time():
    srv = LiveServer(Limits(max_body=65536, workers=1, queue=1, timeout=2.0, connections=4))
    try:
        idle = [srv.connect() for _ in range(4)]
        time.sleep(0.2)
        status, payload, headers = srv.request("GET", "/v2/health/live")  # the fifth connection
        assert status == 503 and "connections are open" in payload["error"] and headers["connection"] == "close"
        start = time.monotonic()
        assert all(closed_by_server(s, within=5) for s in idle)  # a silent client is dropped after --timeout
        assert time.monotonic() - start < 3.5
        for s in idle:
            s.close()
        time.sleep(0.1)
        assert_still_serving(srv)
    finally:
        srv.stop()


@pytest.mark.serial  # deadlines measured in seconds: run alone (make test)
def test_beyond_workers_and_queue_gets_503_then_recovers():
    srv = LiveServer(delay=1.0)  # workers 1 + queue 1, each inference takes a second
    try:
        results = []
        busy = [threading.Thread(target=lambda: results.append(srv.infer()[0])) for _ in range(2)]
        for t in busy:
            t.start()
        time.sleep(0.3)
        status, payload, headers = srv.infer()
        assert status == 503 and "busy" in payload["error"] and headers["retry-after"] == "1"
        for t in busy:
            t.join(timeout=10)
        assert sorted(results) == [200, 200]
        assert srv.infer()[0] == 200
    finally:
        srv.stop()


# ------------------------------------------------------------------ memory bounded before allocation


def test_content_length_over_max_body_refused_before_reading(live):
    with live.connect() as s:
        s.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 999999999999\r\n\r\n")
        status, payload, headers = parse_reply(read_reply(s))
    assert status == 413 and "over the limit" in payload["error"] and headers["connection"] == "close"
    with live.connect() as s:  # chunked: counted as it arrives
        s.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(5):
            s.sendall(b"4000\r\n" + b"0" * 0x4000 + b"\r\n")
        status, payload, _ = parse_reply(read_reply(s))
    assert status == 413
    assert_still_serving(live)


def npz_declaring(shape, dtype="<f8", real_bytes=1 << 20) -> bytes:
    """A .npz whose member header declares ``shape`` while the archive stays small (a decompression bomb)."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    header.update(shape=tuple(shape), descr=dtype)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("image.npy", buf.getvalue() + bytes(real_bytes))
    return out.getvalue()


@pytest.mark.parametrize("kind", ["json-shape", "json-text", "npz-bomb", "npy-header"])
def test_amplification_refused_with_413_before_allocation(kind):
    """Small requests that would allocate without bound: refused from what they declare, under 8 MB traced."""
    if kind == "json-shape":  # a small body that declares a huge tensor
        body, ctype = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1 << 40, 1, 8, 8],
                                              "data": [0]}]}), "application/json"
    elif kind == "json-text":  # more numbers than any request of this model needs
        body, ctype = '{"inputs": [{"name": "image", "datatype": "FP32", "shape": [1], "data": [' + \
            "0," * 60000 + "0]}]}", "application/json"
    elif kind == "npz-bomb":  # 1 MB of zeros compresses to ~1 kB; the header says 1 GiB
        body, ctype = npz_declaring((1 << 27,)), "application/x-npz"
    else:
        buf = io.BytesIO()
        header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32))
        header.update(shape=(1 << 30, 8, 8))
        np.lib.format.write_array_header_1_0(buf, header)
        body, ctype = buf.getvalue() + bytes(256), "application/x-npy"
    live = LiveServer(Limits(max_body=1 << 20, workers=1, queue=1, timeout=2.0))
    try:
        tracemalloc.start()
        try:
            status, payload, _ = live.request("POST", INFER, body, {"Content-Type": ctype})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert status == 413 and "error" in payload, payload
        assert peak < 8 * 1024 * 1024, f"{peak / 1e6:.1f} MB allocated answering a {len(body)}-byte request"
        assert_still_serving(live)
    finally:
        live.stop()


# ------------------------------------------------------------------ malformed requests


X = np.zeros((1, 1, 8, 8), np.float32)
GOOD = {"name": "image", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [0.0] * 64}
MALFORMED = {
    "parameters-string": {"inputs": [GOOD], "parameters": "s"},
    "input-parameters-string": {"inputs": [{**GOOD, "parameters": "s"}]},
    "output-parameters-list": {"inputs": [GOOD], "outputs": [{"name": "scores", "parameters": [1]}]},
    "outputs-string": {"inputs": [GOOD], "outputs": "scores"},
    "output-name-number": {"inputs": [GOOD], "outputs": [{"name": 5}]},
    "inputs-object": {"inputs": {"image": 1}},
    "input-not-object": {"inputs": [5]},
    "missing-shape": {"inputs": [{"name": "image", "datatype": "FP32", "data": [0.0] * 64}]},
    "missing-data": {"inputs": [{k: v for k, v in GOOD.items() if k != "data"}]},
    "name-list": {"inputs": [{**GOOD, "name": ["image"]}]},
    "shape-strings": {"inputs": [{**GOOD, "shape": ["1", "1", "8", "8"]}]},
    "shape-bools": {"inputs": [{**GOOD, "shape": [True, True, 8, 8]}]},
    "shape-negative": {"inputs": [{**GOOD, "shape": [-1, 1, 8, 8]}]},
    "shape-float": {"inputs": [{**GOOD, "shape": [1.0, 1, 8, 8]}]},
    "shape-too-many-dims": {"inputs": [{**GOOD, "shape": [1] * 40}]},
    "datatype-bytes": {"inputs": [{**GOOD, "datatype": "BYTES"}]},
    "datatype-list": {"inputs": [{**GOOD, "datatype": ["FP32"]}]},
    "data-strings": {"inputs": [{**GOOD, "data": ["0"] * 64}]},
    "data-null": {"inputs": [{**GOOD, "data": None}]},
    "data-objects": {"inputs": [{**GOOD, "data": [{}] * 64}]},
    "data-huge-int": {"inputs": [{**GOOD, "data": [10 ** 400] * 64}]},
    "data-nested-deep": {"inputs": [{**GOOD, "data": json.loads("[" * 40 + "0" + "]" * 40)}]},
    "binary-size-string": {"inputs": [{**GOOD, "parameters": {"binary_data_size": "256"}}]},
    "binary-size-without-data": {"inputs": [{**GOOD, "parameters": {"binary_data_size": 256}}]},
    "duplicate-input": {"inputs": [GOOD, GOOD]},
    "id-object": {"inputs": [GOOD], "id": {"a": 1}},
    "unknown-output": {"inputs": [GOOD], "outputs": [{"name": "nope"}]},
    "no-samples": {"inputs": [{**GOOD, "shape": [0, 1, 8, 8], "data": []}]},
    "json-array": [GOOD],
}
RAW = {
    "deeply-nested-json": "[" * 100000,
    "deep-object": '{"a":' * 50000 + "1" + "}" * 50000,
    "not-utf8": b"\xff\xfe{}",
    "not-json": "{not json",
    "long-int-literal": '{"inputs": [], "id": ' + "1" * 5000 + "}",
}


@pytest.mark.parametrize("body", [*MALFORMED.values(), *RAW.values()], ids=[*MALFORMED, *RAW])
def test_malformed_request_gets_4xx_json_and_server_keeps_serving(live, body):
    raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
    status, payload, headers = live.request("POST", INFER, raw, {"Content-Type": "application/json"})
    assert 400 <= status < 500 and isinstance(payload, dict) and payload["error"], (status, payload)
    assert headers["content-type"] == "application/json"
    assert_still_serving(live)


@pytest.mark.parametrize("headers, words", [
    ({"Inference-Header-Content-Length": "x"}, "Inference-Header-Content-Length"),
    ({"Inference-Header-Content-Length": "999999"}, "Inference-Header-Content-Length"),
    ({"Content-Length": None}, "Content-Length is required"),
    ({"Content-Type": "application/xml"}, "is not taken"),
])
def test_malformed_headers_get_4xx_json(live, headers, words):
    status, payload, _ = live.request("POST", INFER, infer_body(X) if "Content-Length" not in headers else b"",
                                      {"Content-Type": "application/json", **headers})
    assert 400 <= status < 500 and words in payload["error"]
    assert_still_serving(live)


def test_wrong_methods_and_paths_get_4xx_json(live):
    for method, path, code in [("GET", INFER, 405), ("POST", "/v2/health/live", 405), ("DELETE", "/v2", 405),
                               ("GET", "/nope", 404), ("GET", "/v2/models/other", 404), ("PUT", INFER, 405)]:
        status, payload, _ = live.request(method, path)
        assert status == code and payload["error"], (method, path)
    assert_still_serving(live)


def test_handlers_answer_without_a_socket():
    """The protocol is plain functions: a Request in, a Reply out, no server, no event loop."""
    limits = Limits(max_body=65536, workers=1, queue=1, timeout=2.0)
    service = Service(lambda: stand_in_models(1, 0.0), limits, NAME, Metrics({"model": NAME}))
    service.warm_up()
    access = Access(token="s3cret-token-0123456789")
    host = {"host": ["localhost"]}

    def ask(method, path, body=b"", **headers):
        return handle(service, access, Request(method, path, {**host, **headers}, body))

    assert ask("GET", "/v2/health/live").body == b'{"live": true}'
    assert ask("GET", "/v2/health/live", host=["evil.example"]).code == 421
    assert ask("POST", INFER, infer_body(X).encode()).code == 401
    auth = {"authorization": ["Bearer s3cret-token-0123456789"]}
    reply = ask("POST", INFER, infer_body(np.full((1, 1, 8, 8), 0.5, np.float32)).encode(), **auth)
    assert reply.code == 200 and reply.headers["Content-Type"] == "application/json"
    np.testing.assert_allclose(json.loads(reply.body)["outputs"][0]["data"], [12.7] * 10, rtol=1e-6)
    bad = ask("POST", INFER, b"{not json", **auth)
    assert bad.code == 400 and "not valid JSON" in json.loads(bad.body)["error"]
    assert ask("DELETE", f"/v2/models/{NAME}", **auth).headers["Allow"] == "GET, HEAD"


def test_binary_tensor_request_and_reply(live):
    x = np.full((1, 1, 8, 8), 0.25, np.float32)
    head = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 1, 8, 8],
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "outputs": [{"name": "scores", "parameters": {"binary_data": True}}]}).encode()
    status, payload, headers = live.request("POST", INFER, head + x.tobytes(),
                                            {"Inference-Header-Content-Length": str(len(head))})
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    split = int(headers["inference-header-content-length"])
    meta = json.loads(payload[:split])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 40
    np.testing.assert_allclose(np.frombuffer(payload[split:], np.float32), [12.7] * 10, rtol=1e-6)


def test_request_parser_fuzzed_never_fails_other_than_4xx():
    """Hypothesis: any JSON value, or any mutation of a valid request, is a result or a 4xx HttpError."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    spec = {"inputs": MANIFEST["inputs"], "outputs": MANIFEST["outputs"]}
    leaves = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.sampled_from(["name", "shape", "datatype", "data", "parameters",
                                                             "inputs", "outputs", "id", "binary_data_size"]),
                                            inner, max_size=5), max_leaves=30)
    good = {"inputs": [dict(GOOD)], "outputs": [{"name": "scores"}]}
    mutated = st.tuples(st.sampled_from(["inputs", "outputs", "parameters", "id"]), values).map(
        lambda kv: {**good, kv[0]: kv[1]})
    inner_mutated = st.tuples(st.sampled_from(["name", "shape", "datatype", "data", "parameters"]), values).map(
        lambda kv: {"inputs": [{**GOOD, kv[0]: kv[1]}]})
    seen = {"cases": 0}

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.one_of(values, mutated, inner_mutated), st.sampled_from([None, 0, 10]))
    def check(request, header_length):
        seen["cases"] += 1
        try:
            body = json.dumps(request).encode()
        except ValueError:
            return
        try:
            parse_json_request(body, None if header_length is None else min(header_length, len(body)), spec)
        except HttpError as exc:
            assert 400 <= exc.code < 500

    check()
    assert seen["cases"] >= 400


# ------------------------------------------------------------------ ambiguous framing


@pytest.mark.parametrize("framing", [
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    b"Content-Length: 5\r\nContent-Length: 5\r\n",
    b"Content-Length: 5\r\nContent-Length: 50\r\n",
    b"Content-Length: 5, 5\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Content-Length: -5\r\n",
    b"Content-Length: 5x\r\n",
], ids=["cl-te", "te-cl", "cl-cl-equal", "cl-cl-conflict", "cl-list", "te-gzip", "cl-negative", "cl-garbage"])
def test_ambiguous_framing_refused_and_connection_closed(live, framing):
    with live.connect() as s:
        s.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  + framing + b"\r\n0\r\n\r\nGET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        raw = read_reply(s)
        assert closed_by_server(s, within=5)  # and the smuggled second request is never answered
    status, payload, headers = parse_reply(raw)
    assert status == 400 and payload["error"] and headers["connection"] == "close"
    assert_still_serving(live)


# ------------------------------------------------------------------ draining


@pytest.mark.serial  # deadlines measured in seconds: run alone (make test)
def test_shutdown_drains_with_stalled_and_idle_clients():
    srv = LiveServer(Limits(max_body=65536, workers=1, queue=1, timeout=3.0, connections=32))
    idle = srv.connect()  # a keep-alive connection after one request
    idle.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert parse_reply(read_reply(idle))[0] == 200
    half_head = srv.connect()
    half_head.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
    half_body = srv.connect()
    half_body.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 500\r\n\r\n{")
    time.sleep(0.3)
    start = time.monotonic()
    srv.server.handle_exit(signal.SIGTERM, None)  # what the signal handler runs
    srv.thread.join(timeout=15)
    took = time.monotonic() - start
    assert not srv.thread.is_alive() and took < 3.0 + 2.0, f"drain took {took:.1f} s"
    assert srv.service.draining.is_set()
    for s in (idle, half_head, half_body):
        assert closed_by_server(s, within=1)
        s.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()


# ------------------------------------------------------------------ safe by default on a LAN


def test_host_header_must_name_the_server():
    srv = LiveServer(access=Access(hosts=frozenset({"localhost", "127.0.0.1", "::1", "pi.lan"})))
    try:
        assert srv.request("GET", "/v2/health/live", host="127.0.0.1:8080")[0] == 200
        assert srv.request("GET", "/v2/health/live", host="localhost")[0] == 200
        assert srv.request("GET", "/v2/health/live", host="pi.lan:8080")[0] == 200  # --allow-host pi.lan
        assert srv.request("GET", "/v2/health/live", host="192.168.1.20:8080")[0] == 200  # an address: no rebinding
        assert srv.request("GET", "/v2/health/live", host="[::1]:8080")[0] == 200
        for host in ("attacker.example", "attacker.example:8080", "pi.lan.attacker.example", "[::1]x", ""):
            status, payload, _ = srv.request("GET", "/metrics", host=host)
            assert status in (400, 421) and "error" in payload, host
    finally:
        srv.stop()


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", "TEXT/PLAIN;charset=utf-8"])
def test_browser_form_content_types_refused(live, ctype):
    status, payload, _ = live.request("POST", INFER, infer_body(X), {"Content-Type": ctype})
    assert status == 415 and "is not taken" in payload["error"]


def test_cross_origin_browser_requests_refused(live):
    for origin in ("http://attacker.example", "null", "http://192.168.1.9"):
        status, payload, _ = live.request("POST", INFER, infer_body(X), {"Origin": origin})
        assert status == 403 and "cross-origin" in payload["error"]
    assert live.request("POST", INFER, infer_body(X), {"Origin": "http://localhost:3000"})[0] == 200


def test_token_guards_model_endpoints_and_metrics_only():
    token = "s3cret-token-0123456789"
    srv = LiveServer(access=Access(token=token))
    try:
        for path in ("/v2/health/live", "/v2/health/ready", "/v2", "/v2/openapi.json"):
            assert srv.request("GET", path)[0] == 200, path
        assert srv.request("GET", "/metrics")[0] == 401
        for auth in (None, "Bearer wrong-token-0123456789", f"Basic {token}", "Bearer", f"Bearer {token}x"):
            status, payload, headers = srv.infer(Authorization=auth)
            assert status == 401 and headers["www-authenticate"] == "Bearer" and "Bearer" in payload["error"]
            assert srv.request("GET", f"/v2/models/{NAME}", headers={"Authorization": auth})[0] == 401
        assert srv.infer(Authorization=f"Bearer {token}")[0] == 200
        assert srv.request("GET", f"/v2/models/{NAME}", headers={"Authorization": f"Bearer {token}"})[0] == 200
    finally:
        srv.stop()


def parse_serve(*argv):
    return serve_settings(build_parser().parse_args(["serve", "b", *argv]))


def test_serve_listens_on_loopback_unless_told():
    host, _, access = parse_serve()
    assert host == "127.0.0.1" and access.token is None and "localhost" in access.hosts


@pytest.mark.parametrize("argv, words", [
    (["--port", "70000"], "--port must be between 0 and 65535"),
    (["--port", "-1"], "--port must be between 0 and 65535"),
    (["--timeout", "nan"], "--timeout must be"),
    (["--timeout", "inf"], "--timeout must be"),
    (["--timeout", "0"], "--timeout must be"),
    (["--timeout", "-3"], "--timeout must be"),
    (["--workers", "0"], "--workers must be between 1 and 64"),
    (["--workers", "100000"], "--workers must be between 1 and 64"),
    (["--queue", "-1"], "--queue must be between 0"),
    (["--threads", "0"], "--threads must be between 1"),
    (["--max-body", "0"], "--max-body must be between 1"),
    (["--max-batch", "0"], "--max-batch must be between 1"),
    (["--max-connections", "0"], "--max-connections must be between 1"),
    (["--host", "bad host!"], "--host must be an IP address or a host name"),
    (["--host", "a" * 300], "--host must be an IP address or a host name"),
    (["--allow-host", "x/y"], "--allow-host must be an IP address or a host name"),
    (["--token-file", "/nonexistent/token"], "cannot read --token-file"),
])
def test_every_serve_option_validated_in_one_line(argv, words):
    with pytest.raises(UserError) as err:
        parse_serve(*argv)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_token_file_must_hold_a_real_token(tmp_path):
    (tmp_path / "short").write_text("abc\n")
    with pytest.raises(UserError, match="at least 16 characters"):
        parse_serve("--token-file", str(tmp_path / "short"))
    (tmp_path / "good").write_text("0123456789abcdefXYZ\n")
    assert parse_serve("--token-file", str(tmp_path / "good"))[2].token == "0123456789abcdefXYZ"
    host, _, access = parse_serve("--host", "::", "--allow-host", "Pi.LAN.")
    assert host == "::" and "pi.lan" in access.hosts


# ------------------------------------------------------------------ metrics


def test_metrics_label_values_escaped():
    from tests.helpers.serve import promtool_check

    text = Metrics({"model": 'evil\nedge_run_fake 1\n"quoted"\\back'}).render()
    line = next(x for x in text.splitlines() if x.startswith("edge_run_model_info"))
    assert line == 'edge_run_model_info{model="evil\\nedge_run_fake 1\\n\\"quoted\\"\\\\back"} 1.0'
    assert "edge_run_fake 1\n" not in text
    promtool_check(text)


def test_openapi_document_served(live):
    status, doc, _ = live.request("GET", "/v2/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    infer = doc["paths"]["/v2/models/{model_name}/infer"]["post"]
    assert infer["parameters"][0]["schema"]["enum"] == [NAME]
    assert not [code for path in doc["paths"].values() for op in path.values() for code in op["responses"]
                if code.startswith("5") and code != "503"]
    assert math.isfinite(len(json.dumps(doc)))


# ------------------------------------------------------------------ hostile input, round 2 (issue 24)


def raw_request(live, data: bytes) -> tuple[int, dict, dict]:
    """Bytes as they are on one connection -> the one reply."""
    with live.connect() as s:
        s.sendall(data)
        return parse_reply(read_reply(s))


@pytest.mark.serial  # deadlines measured in seconds: run alone (make test)
def test_event_loop_never_blocks_on_device_health(tmp_path):
    """A vcgencmd that takes 1.5 s to answer (a busy firmware mailbox): scrapes and every request beside them
    are answered at once; the board's figures come from a reading taken in the background."""
    srv = LiveServer(device=fake_board(tmp_path, delay=1.5))
    try:
        scrapes = [threading.Thread(target=srv.request, args=("GET", "/metrics")) for _ in range(3)]
        for t in scrapes:
            t.start()
        time.sleep(0.1)
        took = []
        for _ in range(10):
            start = time.monotonic()
            assert srv.request("GET", "/v2/health/live")[0] == 200
            took.append(time.monotonic() - start)
        for t in scrapes:
            t.join(timeout=10)
        assert max(took) < 0.5, took
        deadline = time.monotonic() + 10
        while True:  # the reading arrives; no scrape ever waits for it
            start = time.monotonic()
            status, text, _ = srv.request("GET", "/metrics")
            assert status == 200 and time.monotonic() - start < 0.5
            if b"edge_run_throttled_state 327685.0" in text:
                break
            assert time.monotonic() < deadline, "the device reading never arrived"
            time.sleep(0.2)
        assert b'edge_run_soc_temperature_celsius{zone="thermal_zone0"} 47.25' in text
    finally:
        srv.stop()


def test_event_loop_never_blocks_and_metrics_need_the_token_unless_metrics_open(tmp_path):
    token = "s3cret-token-0123456789"
    guarded = LiveServer(access=Access(token=token))
    try:
        status, payload, _ = guarded.request("GET", "/metrics")
        assert status == 401 and "Bearer" in payload["error"]
        assert guarded.request("GET", "/metrics", headers={"Authorization": f"Bearer {token}"})[0] == 200
    finally:
        guarded.stop()
    opened = LiveServer(access=Access(token=token, metrics_open=True))  # edge-run serve --metrics-open
    try:
        assert opened.request("GET", "/metrics")[0] == 200
        assert opened.infer()[0] == 401
    finally:
        opened.stop()
    (tmp_path / "token").write_text(token + "\n")
    assert parse_serve("--token-file", str(tmp_path / "token"), "--metrics-open")[2].metrics_open
    assert not parse_serve("--token-file", str(tmp_path / "token"))[2].metrics_open


@pytest.mark.serial  # deadlines measured in seconds: run alone (make test)
def test_write_deadlines_and_fair_slots():
    """A client pipelining requests and never reading a reply: dropped within --timeout of its replies going
    unread, while every other client is answered at once; a client that reads gets every pipelined reply."""
    srv = LiveServer()  # --timeout 2
    try:
        with srv.connect() as reader:  # pipelining itself works
            reader.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 20)
            assert [parse_reply(raw)[0] for raw in read_replies(reader, 20)] == [200] * 20
        hog = socket.socket()
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.connect(("127.0.0.1", srv.port))
        hog.setblocking(False)
        request = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 100
        sent, start = 0, time.monotonic()
        while time.monotonic() - start < 1.0:  # as many as the server takes in a second
            try:
                sent += hog.send(request)
            except BlockingIOError:
                time.sleep(0.01)
        stopped = time.monotonic()
        seconds = []
        while srv.open_connections() and time.monotonic() - stopped < 8:
            begin = time.monotonic()
            assert srv.infer()[0] == 200
            seconds.append(time.monotonic() - begin)
            time.sleep(0.1)
        dropped = time.monotonic() - stopped
        hog.close()
        assert sent > 40_000, sent  # the server took requests until its replies went unread
        assert srv.open_connections() == 0 and dropped < 2.0 + 1.0, f"still open after {dropped:.1f} s"
        assert seconds and max(seconds) < 0.5, seconds
    finally:
        srv.stop()


def test_bounded_replies_no_amplification():
    """One output named 4000 times made a reply 8x the request (200k times, 147 MB on a bigger model)."""
    live = LiveServer(Limits(max_body=1 << 20, workers=1, queue=1, timeout=2.0, max_batch=16))
    try:
        body = infer_body(X, outputs=[{"name": "scores"}] * 4000)
        status, payload, _ = live.request("POST", INFER, body, {"Content-Type": "application/json"})
        assert status == 400 and "'scores' is asked for twice" in payload["error"], (status, len(json.dumps(payload)))
        from edge_runtime.protocol import reply_limit

        for binary in (False, True):  # the largest reply a request may get: max_batch samples, each output once
            x = np.full((16, 1, 8, 8), 0.5, np.float32)
            body = infer_body(x, parameters={"binary_data_output": binary})
            status, payload, _ = live.request("POST", INFER, body, {"Content-Type": "application/json"})
            assert status == 200 and len(payload if binary else json.dumps(payload)) <= reply_limit(
                MANIFEST["outputs"], 16)
    finally:
        live.stop()


@pytest.mark.parametrize("value", [b"\xb2", b"\xb9", b"1\xb3", b"\xef\xbc\x91", b"+5", b"5_0", b"0x10", b" "])
def test_strict_numbers_in_headers(live, value):
    """'\xb2' (superscript two in Latin-1) passed str.isdigit() and then crashed int(): a 500 with a traceback."""
    body = infer_body(X).encode()
    status, payload, _ = raw_request(live, b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                     b"Content-Type: application/json\r\nContent-Length: %d\r\n"
                                     b"Inference-Header-Content-Length: %s\r\n\r\n%s" % (len(body), value, body))
    assert status == 400 and "Inference-Header-Content-Length" in payload["error"]
    assert 'code="500"' not in live.service.metrics.render()
    assert_still_serving(live)


@pytest.mark.parametrize("argv", [["--port", "\u0661\u0662"], ["--workers", "\uff12"], ["--max-body", "1_000"],
                                  ["--timeout", "\u0665"], ["--timeout", "2_0"], ["--max-batch", " 4"]])
def test_strict_numbers_on_the_command_line(argv, capsys):
    """int() and float() take any script's digits ('\u0661\u0662' is 12) and underscores; a flag takes ASCII."""
    with pytest.raises(SystemExit) as exited:
        parse_serve(*argv)
    assert exited.value.code == 2 and "ASCII" in capsys.readouterr().err


@pytest.mark.serial  # deadlines measured in seconds: run alone (make test)
def test_a_half_closed_short_body_still_gets_its_400(live):
    """Content-Length 1000, 14 bytes, then the client shuts its sending side: answered at once, not lost."""
    with live.connect() as s:
        s.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n" + b'{"inputs": [1,')
        start = time.monotonic()
        s.shutdown(socket.SHUT_WR)
        raw = read_reply(s)
        took = time.monotonic() - start
    status, payload, headers = parse_reply(raw)
    assert status == 400 and headers["connection"] == "close" and took < 1.0, (status, took)
    assert "body ended after 14 of the 1000 bytes Content-Length promised: the client closed" in payload["error"]
    with live.connect() as s:  # a whole request, then the half-close: its reply is not lost either
        body = infer_body(np.full((1, 1, 8, 8), 0.5, np.float32)).encode()
        s.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        s.shutdown(socket.SHUT_WR)
        status, payload, _ = parse_reply(read_reply(s))
        assert status == 200 and payload["outputs"][0]["data"] == pytest.approx([12.7] * 10)
        assert closed_by_server(s, within=2)
    assert_still_serving(live)


@pytest.mark.serial  # deadlines measured in seconds: run alone (make test)
def test_a_body_in_tiny_chunks_is_refused_and_holds_no_one():
    """Found trying an attack of our own: h11 parses chunked framing in Python, an event per chunk, on the loop
    every request shares. Four clients streaming 1-byte chunks held a health check 10 s, then it timed out."""
    live = LiveServer(Limits(max_body=16 << 20, workers=1, queue=8, timeout=10.0, connections=64))
    head = (b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    stop = threading.Event()

    def attack():
        while not stop.is_set():  # a new connection each time one is refused
            try:
                with live.connect() as s:
                    s.sendall(head)
                    while not stop.is_set():
                        s.sendall(b"1\r\n \r\n" * 10000)
            except OSError:
                continue

    attackers = [threading.Thread(target=attack) for _ in range(4)]
    for t in attackers:
        t.start()
    try:
        took = []
        for _ in range(30):
            start = time.monotonic()
            assert live.request("GET", "/v2/health/live")[0] == 200
            took.append(time.monotonic() - start)
            time.sleep(0.05)
        assert max(took) < 0.5, took
    finally:
        stop.set()
        for t in attackers:
            t.join(timeout=30)
    try:
        status, payload, _ = raw_request(live, head + b"1\r\n \r\n" * 200 + b"0\r\n\r\n")
        assert status == 400 and "request body in pieces of 1 bytes on average" in payload["error"]
        body = infer_body(np.full((1, 1, 8, 8), 0.5, np.float32)).encode()  # chunks of a normal size still do
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:300], body[300:]))
        assert raw_request(live, head + chunks + b"0\r\n\r\n")[0] == 200
    finally:
        live.stop()
