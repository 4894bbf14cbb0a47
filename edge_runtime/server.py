"""`edge-run serve`: the Open Inference Protocol (KServe v2) over HTTP.

Standard library only. Endpoints:

    GET  /v2/health/live            GET /v2/health/ready          GET /v2
    GET  /v2/models/NAME            GET /v2/models/NAME/ready
    POST /v2/models/NAME/infer      (JSON tensors, the binary tensor
                                     extension, or a .npy/.npz body)
    GET  /metrics                   (Prometheus text format)

Tensors are in the ONNX contract (names, shapes, float datatypes). Bad
requests get a 4xx with a JSON ``{"error": ...}`` body and never take the
server down; load beyond the queue gets 503 with Retry-After; SIGTERM stops
accepting, lets in-flight requests finish, and exits 0.
"""

from __future__ import annotations

import dataclasses
import io
import json
import queue
import re
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from .errors import UserError
from .metrics import Metrics, model_fidelity
from .tensors import feeds_from_numpy

DATATYPES = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64",
}
TO_DATATYPE = {v: k for k, v in DATATYPES.items()}
MODEL_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?$")


class HttpError(Exception):
    def __init__(self, code: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.code, self.message, self.headers = code, message, headers or {}


@dataclasses.dataclass
class Limits:
    max_body: int = 16 * 1024 * 1024
    workers: int = 1  # interpreters running at once
    queue: int = 8  # requests waiting for one beyond those
    timeout: float = 10.0  # seconds to read a request and to wait in the queue


class Service:
    """The model pool, readiness and metrics behind the HTTP handler."""

    def __init__(self, load_models, limits: Limits, name: str, metrics: Metrics):
        self.limits = limits
        self.name = name
        self.metrics = metrics
        self.pool: queue.Queue = queue.Queue()
        self.slots = threading.BoundedSemaphore(limits.workers + limits.queue)
        self.ready = threading.Event()
        self.draining = threading.Event()
        self.failed: str | None = None
        self.spec: dict | None = None
        self._load_models = load_models

    def warm_up(self) -> None:
        """Load every interpreter and run one inference each; then ready."""
        try:
            models = self._load_models()
            for model in models:
                model.invoke([np.zeros(s["tflite_shape"], s["tflite_dtype"]) for s in model.inputs])
                self.pool.put(model)
            first = models[0]
            self.spec = {"inputs": first.inputs, "outputs": first.outputs}
            engine = first.engine
            self.metrics.delegate = {"delegate": engine.delegate, "fallback": str(bool(engine.fallback)).lower()}
            self.ready.set()
        except Exception as exc:  # reported on /ready and in the log; the server stays up
            self.failed = str(exc)
            print(f"edge-run serve: model failed to load: {exc}", file=sys.stderr, flush=True)

    def infer(self, feeds: dict[str, np.ndarray], deadline: float) -> dict[str, np.ndarray]:
        try:
            model = self.pool.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise HttpError(503, "timed out waiting for a free interpreter", {"Retry-After": "1"}) from None
        try:
            start = time.perf_counter()
            outputs = model.predict(feeds)
            self.metrics.inference_done(time.perf_counter() - start)
            return outputs
        finally:
            self.pool.put(model)


def _tensor_json(spec: dict) -> dict:
    return {"name": spec["name"], "datatype": TO_DATATYPE[spec["dtype"]], "shape": spec["shape"]}


def parse_json_request(body: bytes, header_length: int | None, spec: dict) -> tuple[dict, list, bool, object]:
    """A v2 infer request -> (feeds, requested outputs, binary outputs wanted, request id)."""
    head, blobs = (body, b"") if header_length is None else (body[:header_length], body[header_length:])
    try:
        request = json.loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HttpError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise HttpError(400, "request must be a JSON object with an 'inputs' list")
    expected = {s["name"]: s for s in spec["inputs"]}
    feeds, offset = {}, 0
    for item in request["inputs"]:
        if not isinstance(item, dict) or not {"name", "shape", "datatype"} <= set(item):
            raise HttpError(400, "each input needs 'name', 'shape' and 'datatype'")
        name = item["name"]
        if name not in expected:
            raise HttpError(400, f"unknown input '{name}'; the model's inputs are {', '.join(expected)}")
        want = TO_DATATYPE[expected[name]["dtype"]]
        if item["datatype"] != want:
            raise HttpError(400, f"input '{name}' has datatype {item['datatype']}, the model takes {want}")
        shape = item["shape"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise HttpError(400, f"input '{name}' shape must be a list of non-negative integers")
        count = int(np.prod(shape)) if shape else 1
        dtype = np.dtype(DATATYPES[want])
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if size != count * dtype.itemsize or offset + size > len(blobs):
                raise HttpError(400, f"input '{name}': binary data of {size} bytes does not fit shape {shape} {want}")
            array = np.frombuffer(blobs[offset:offset + size], dtype=dtype)
            offset += size
        else:
            try:
                array = np.array(item.get("data"), dtype=dtype).ravel()
            except (TypeError, ValueError) as exc:
                raise HttpError(400, f"input '{name}' data is not {want}: {exc}") from None
        if array.size != count:
            raise HttpError(400, f"input '{name}' has {array.size} elements, shape {shape} needs {count}")
        feeds[name] = array.reshape(shape)
    params = request.get("parameters") or {}
    wanted = request.get("outputs") or []
    binary = bool(params.get("binary_data_output")) or any(
        (o.get("parameters") or {}).get("binary_data") for o in wanted if isinstance(o, dict))
    names = [o.get("name") for o in wanted if isinstance(o, dict)]
    known = [s["name"] for s in spec["outputs"]]
    for n in names:
        if n not in known:
            raise HttpError(400, f"unknown output '{n}'; the model's outputs are {', '.join(known)}")
    return feeds, names or known, binary, request.get("id")


def encode_response(model: str, outputs: dict, names: list, binary: bool, request_id) -> tuple[bytes, dict]:
    parts, blobs = [], []
    for name in names:
        value = np.ascontiguousarray(outputs[name])
        entry = {"name": name, "datatype": TO_DATATYPE[value.dtype.name], "shape": list(value.shape)}
        if binary:
            data = value.tobytes()
            entry["parameters"] = {"binary_data_size": len(data)}
            blobs.append(data)
        else:
            entry["data"] = value.ravel().tolist()
        parts.append(entry)
    head = {"model_name": model, "outputs": parts}
    if request_id is not None:
        head["id"] = request_id
    text = json.dumps(head).encode()
    if not binary:
        return text, {"Content-Type": "application/json"}
    return text + b"".join(blobs), {"Content-Type": "application/octet-stream",
                                    "Inference-Header-Content-Length": str(len(text))}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "edge-run"
    service: Service  # set on the subclass made per server
    verbose = False

    def setup(self):
        self.timeout = self.service.limits.timeout  # a silent client is dropped after this
        super().setup()

    def log_message(self, fmt, *args):
        if self.verbose:
            super().log_message(fmt, *args)

    def _send(self, code: int, body: bytes, headers: dict) -> None:
        # Counted before the reply leaves: a client that reads /metrics next sees its request.
        self.service.metrics.request_done(self.endpoint, code, time.perf_counter() - self.started)
        self.recorded = True
        if self.service.draining.is_set():
            self.close_connection = True
        self.send_response(code)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, obj, headers: dict | None = None) -> None:
        self._send(code, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _handle(self, method: str) -> None:
        service = self.service
        self.started = time.perf_counter()
        self.endpoint, self.recorded, code = "other", False, 500
        with service.metrics.lock:
            service.metrics.in_flight += 1
        try:
            code = self._route(method)
        except HttpError as exc:
            code = exc.code
            if code in (408, 411, 413) or exc.code >= 500 and service.draining.is_set():
                self.close_connection = True
            self._json(code, {"error": exc.message}, exc.headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            with service.metrics.lock:
                service.metrics.in_flight -= 1
            if not self.recorded:  # the client went away before an answer
                service.metrics.request_done(self.endpoint, code, time.perf_counter() - self.started)

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def _ok(self, endpoint: str, code: int, obj) -> int:
        self.endpoint = endpoint
        self._json(code, obj)
        return code

    def _route(self, method: str) -> int:
        """Answer the request; returns the status code sent (errors raise HttpError)."""
        service = self.service
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        ready = service.ready.is_set() and not service.draining.is_set()
        if path == "/metrics" and method == "GET":
            self.endpoint = "metrics"
            self._send(200, service.metrics.render().encode(), {"Content-Type": "text/plain; version=0.0.4"})
            return 200
        if path == "/v2/health/live" and method == "GET":
            return self._ok("live", 200, {"live": True})
        if path == "/v2/health/ready" and method == "GET":
            return self._ok("ready", 200 if ready else 503, {"ready": ready})
        if path == "/v2" and method == "GET":
            from . import __version__

            return self._ok("server_metadata", 200,
                            {"name": "edge-run", "version": __version__, "extensions": ["binary_tensor_data"]})
        match = MODEL_PATH.match(path)
        if not match:
            raise HttpError(404, f"no such endpoint: {method} {path}")
        name, _version, action = match.groups()
        self.endpoint = {None: "model_metadata", "/ready": "model_ready", "/infer": "infer"}[action]
        if name != service.name:
            raise HttpError(404, f"unknown model '{name}'; this server serves '{service.name}'")
        if action == "/ready" and method == "GET":
            return self._ok("model_ready", 200 if ready else 503, {"name": name, "ready": ready})
        if not service.ready.is_set():
            raise HttpError(503, service.failed or "model is loading", {"Retry-After": "1"})
        if action is None and method == "GET":
            return self._ok("model_metadata", 200, {
                "name": name, "versions": ["1"], "platform": "tflite",
                "inputs": [_tensor_json(s) for s in service.spec["inputs"]],
                "outputs": [_tensor_json(s) for s in service.spec["outputs"]]})
        if action == "/infer" and method == "POST":
            return self._infer()
        raise HttpError(405, f"{method} is not allowed on {path}")

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            raise HttpError(411, "Content-Length is required")
        try:
            length = int(length)
        except ValueError:
            raise HttpError(400, f"bad Content-Length {length!r}") from None
        if length < 0:
            raise HttpError(400, f"bad Content-Length {length}")
        if length > self.service.limits.max_body:
            raise HttpError(413, f"body of {length} bytes is over the limit of {self.service.limits.max_body}")
        try:
            body = self.rfile.read(length)
        except (socket.timeout, TimeoutError):
            body = b""
        if len(body) != length:
            self.close_connection = True
            raise HttpError(400, f"body ended after {len(body)} of the {length} bytes Content-Length promised")
        return body

    def _header_length(self, body_length: int) -> int | None:
        """The binary tensor extension's JSON header length, if the request uses it."""
        value = self.headers.get("Inference-Header-Content-Length")
        if value is None:
            return None
        if not value.isdigit() or int(value) > body_length:
            raise HttpError(400, f"bad Inference-Header-Content-Length {value!r} for a {body_length}-byte body")
        return int(value)

    def _infer(self) -> int:
        service = self.service
        if service.draining.is_set():
            self.close_connection = True
            raise HttpError(503, "server is shutting down", {"Retry-After": "5"})
        if not service.slots.acquire(blocking=False):
            self.close_connection = True
            raise HttpError(503, "server is busy: all workers and queue places are taken", {"Retry-After": "1"})
        try:
            deadline = time.monotonic() + service.limits.timeout
            body = self._read_body()
            ctype = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()
            try:
                if ctype in ("application/x-npy", "application/x-npz"):
                    feeds = feeds_from_numpy(io.BytesIO(body), service.spec["inputs"], f"the {ctype[14:]} body")
                    outputs = service.infer(feeds, deadline)
                    buf = io.BytesIO()
                    np.savez(buf, **outputs)
                    self._send(200, buf.getvalue(), {"Content-Type": "application/x-npz"})
                    return 200
                feeds, names, binary, request_id = parse_json_request(
                    body, self._header_length(len(body)), service.spec)
                outputs = service.infer(feeds, deadline)
            except UserError as exc:
                raise HttpError(400, str(exc)) from None
            payload, headers = encode_response(service.name, outputs, names, binary, request_id)
            self._send(200, payload, headers)
            return 200
        finally:
            service.slots.release()


def serve(bundle: str, host: str, port: int, limits: Limits, threads: int | None = None,
          delegate: str | None = None, verbose: bool = False) -> int:
    """Serve a bundle until SIGTERM/SIGINT; returns the exit code (0)."""
    from . import load
    from .bundle import open_bundle
    from .interpreter import make_engine
    from .model import Model

    folder, manifest = open_bundle(bundle)  # verify before opening a port

    def load_models():
        first = load(folder, threads=threads, delegate=delegate)
        rest = [Model(folder, manifest, make_engine(first.engine.model_path, first.engine.threads,
                                                    first.engine.delegate)) for _ in range(limits.workers - 1)]
        return [first, *rest]

    target = manifest.get("target", {})
    metrics = Metrics({"model": manifest["name"], "target": target.get("name", ""),
                       "source_sha256": manifest["source"]["sha256"][:16]}, model_fidelity(manifest))
    service = Service(load_models, limits, manifest["name"], metrics)
    handler = type("BoundHandler", (Handler,), {"service": service, "verbose": verbose})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}", "pick another --port or --host") from None
    server.daemon_threads = False  # server_close() waits for in-flight requests
    stop = threading.Event()

    def on_signal(signum, frame):
        service.draining.set()
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    loop = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    loop.start()
    print(f"edge-run serve: {manifest['name']} on http://{server.server_address[0]}:{server.server_address[1]} "
          f"(workers {limits.workers}, queue {limits.queue})", file=sys.stderr, flush=True)
    threading.Thread(target=service.warm_up, daemon=True).start()
    while not stop.wait(0.5):
        pass
    print("edge-run serve: stopping; finishing in-flight requests", file=sys.stderr, flush=True)
    server.shutdown()
    server.server_close()
    return 0
