"""`edge-run serve`: the Open Inference Protocol (KServe v2) over HTTP.

Endpoints:

    GET  /v2/health/live            GET /v2/health/ready          GET /v2
    GET  /v2/models/NAME            GET /v2/models/NAME/ready
    POST /v2/models/NAME/infer      (JSON tensors, the binary tensor
                                     extension, or a .npy/.npz body)
    GET  /metrics                   (Prometheus text format)
    GET  /v2/openapi.json           (an OpenAPI 3 description of the above)

Tensors are in the ONNX contract (names, shapes, float datatypes). Bad
requests get a 4xx with a JSON ``{"error": ...}`` body and never take the
server down; load beyond the queue gets 503 with Retry-After; SIGTERM stops
accepting, lets in-flight requests finish (within --timeout), and exits 0.

Why uvicorn + h11 (the HTTP layer is not ours to write)
-------------------------------------------------------
The first server was ``http.server.ThreadingHTTPServer``: a thread per
connection, a socket timeout that restarted with every byte, our own
Content-Length handling. Attacked, it fell over (issue 12): slow-body
clients held every inference slot, ``Content-Length`` with
``Transfer-Encoding`` was accepted, SIGTERM waited forever on a silent
client, and the reply went out in two writes that met Nagle's algorithm and
the client's delayed ACK (~44 ms per keep-alive request). HTTP/1.1 parsing
and framing now come from h11 (pure Python, strict RFC 9112 parser) driven by
uvicorn's asyncio protocol, as KServe's own Python server does; both are
pure-Python wheels (py3-none-any) that ride in the bundle like numpy. No
framework on top (starlette/fastapi): the app below is plain ASGI.

Measured on the PP-OCR classifier bundle (input 1x3x48x192), one keep-alive
connection, in-process predict p50 beside it, interleaved (2-core x86-64
host, shared; benchmarks/serve_load.py --keepalive 10):

    tensors  old server (serve / predict p50)   uvicorn+h11 (serve / predict p50)
    binary   47.99 / 3.24 ms  (+44.8 ms)        6.27 / 2.96 ms  (+3.3 ms)
    JSON     55.98 / 4.25 ms  (+51.7 ms)        15.44 / 4.04 ms (+11.4 ms)

and again with the host quiet (load average 1): binary 1.89 / 0.61 ms
(+1.28 ms), JSON 11.92 / 0.54 ms (+11.39 ms, of which json.loads of the
560 KB body is 7.5 ms).

The old server's ~44 ms is Nagle meeting the delayed ACK (the reply went out
in two writes); now a reply leaves in one write (OneWrite) with TCP_NODELAY.
What is left over predict is our own work: JSON decoding alone is ~7 ms for
27648 floats (a Python float per value), and on the digits bundle (64 values)
serve costs +0.7 ms over predict. Nine clients each trickling a 1000-byte
body at 5 bytes/s, a tenth sending 20 normal requests (workers 1, queue 1):
old server, 20 of 20 got 503 (the slow bodies held every slot, with a
timeout restarted by each byte); now 20 of 20 answered, p50 1.2 ms, max 7 ms
(bodies are read on the event loop before a slot is taken, and each slow
body is refused at its one total deadline).

What this module adds on top of uvicorn, and why:

- a total deadline (``--timeout``) on reading the request head (the
  connection protocol below) and, separately, on the whole body (the app):
  uvicorn resets its keep-alive timer on every byte and has no head timeout;
- a bound on open connections (``--max-connections``: one more gets 503 and
  is closed) and on body bytes buffered at once across requests;
- refusal of ambiguous framing (Content-Length with Transfer-Encoding,
  duplicated Content-Length) with the connection closed (RFC 9112 §6.1, §6.3;
  h11 alone lets Transfer-Encoding win and merges equal duplicates);
- request size checks against what the model's inputs can need, before any
  array is allocated (413);
- LAN safety: Host allow-list (DNS rebinding), cross-origin refusal, no
  browser-form content types (415), optional bearer token (``--token-file``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import hmac
import io
import ipaddress
import json
import logging
import math
import queue
import re
import signal
import socket
import sys
import threading
import time

import numpy as np

from .arrays import TooLarge
from .drift import Drift
from .errors import UserError
from .metrics import CONTENT_TYPE as METRICS_TYPE, DeviceSources, Metrics, model_fidelity
from .protocol import (DEFAULT_MAX_BATCH, HttpError, encode_response, max_elements, parse_json_request,
                       tensor_json)
from .tensors import feeds_from_numpy

MODEL_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?$")
BODY_TYPES = {"application/json", "application/octet-stream", "application/x-npy", "application/x-npz"}
FORM_TYPES = {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"}
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


@dataclasses.dataclass
class Limits:
    max_body: int = 16 * 1024 * 1024
    workers: int = 1  # interpreters running at once
    queue: int = 8  # requests waiting for one beyond those
    timeout: float = 10.0  # seconds to read a request head, its body, and to wait in the queue
    max_batch: int = DEFAULT_MAX_BATCH  # samples one request may carry
    connections: int = 64  # open connections; one more is refused with 503

    @property
    def slots(self) -> int:
        return self.workers + self.queue

    @property
    def buffered(self) -> int:
        """Body bytes held at once across all requests (each body is also under max_body)."""
        return self.max_body * (self.slots + 1)


@dataclasses.dataclass
class Access:
    """Who may talk to the server: Host names it answers to, and the shared secret."""

    hosts: frozenset = frozenset(LOOPBACK_NAMES)
    token: str | None = None


class Service:
    """The model pool, readiness and metrics behind the HTTP app."""

    def __init__(self, load_models, limits: Limits, name: str, metrics: Metrics):
        self.limits = limits
        self.name = name
        self.metrics = metrics
        self.pool: queue.Queue = queue.Queue()
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
            self.metrics.engine = engine.report()
            print(f"edge-run serve: {engine.summary()}", file=sys.stderr, flush=True)
            if engine.fallback:
                print(f"edge-run serve: fallback: {engine.fallback}", file=sys.stderr, flush=True)
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
        finally:
            self.pool.put(model)
        self.metrics.inputs_seen(feeds)  # inputs the model accepted (shapes checked), with the interpreter free
        return outputs


def run_inference(service: Service, body: bytes, ctype: str, header_length: int | None,
                  deadline: float) -> tuple[bytes, dict]:
    """Parse, wait for an interpreter, predict, encode: the blocking part, on a worker thread."""
    limits = service.limits
    try:
        if ctype in ("application/x-npy", "application/x-npz"):
            # Sizes come from the .npy headers and the zip directory, checked before anything is
            # allocated or inflated (edge_runtime.arrays): a small .npz may inflate to gigabytes.
            budget = sum(max_elements(s, limits.max_batch) for s in service.spec["inputs"]) * 8  # 8: widest type
            feeds = feeds_from_numpy(io.BytesIO(body), service.spec["inputs"], f"the {ctype[14:]} body", budget)
            outputs = service.infer(feeds, deadline)
            buf = io.BytesIO()
            np.savez(buf, **outputs)
            return buf.getvalue(), {"Content-Type": "application/x-npz"}
        feeds, names, binary, request_id = parse_json_request(body, header_length, service.spec, limits.max_batch)
        outputs = service.infer(feeds, deadline)
    except TooLarge as exc:
        raise HttpError(413, str(exc), close=True) from None
    except UserError as exc:
        raise HttpError(400, str(exc)) from None
    return encode_response(service.name, outputs, names, binary, request_id)


# ---------------------------------------------------------------- who may ask


def host_name(value: str) -> str | None:
    """The host part of a Host header or Origin authority, lower-case, without port; None if malformed."""
    value = value.strip().lower()
    if value.startswith("["):  # [v6 address]:port
        end = value.find("]")
        rest = value[end + 1:]
        return value[1:end] if end > 1 and (not rest or rest.startswith(":")) else None
    name = value.rsplit(":", 1)[0] if value.count(":") == 1 else value
    return name.rstrip(".") or None


def host_allowed(name: str | None, access: Access) -> bool:
    """A Host the server answers to: an allowed name, or an IP address.

    DNS rebinding needs a name the attacker controls that resolves to us; a
    request addressed to an IP literal cannot be one, so LAN clients reach a
    server on --host 0.0.0.0 by its address without listing every interface.
    """
    if name is None:
        return False
    if name in access.hosts:
        return True
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(name)
        return True
    return False


def check_access(method: str, headers: dict, access: Access) -> None:
    """Host must name us; a browser's cross-origin request is refused."""
    hosts = headers.get("host", [])
    if len(hosts) != 1:
        raise HttpError(400, "exactly one Host header is required")
    if not host_allowed(host_name(hosts[0]), access):
        raise HttpError(421, f"this server does not answer to Host {hosts[0][:100]!r}; "
                             "start it with --allow-host NAME to allow that name")
    origin = headers.get("origin", [None])[0]
    if origin is not None:
        name = host_name(origin.split("://", 1)[-1]) if "://" in origin else None
        if name is None or name not in access.hosts:
            raise HttpError(403, f"cross-origin requests are refused (Origin {origin[:100]!r})")


def check_token(headers: dict, access: Access) -> None:
    if access.token is None:
        return
    given = (headers.get("authorization") or [""])[0]
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), access.token.encode()):
        raise HttpError(401, "a valid 'Authorization: Bearer TOKEN' header is required (the server's --token-file)",
                        {"WWW-Authenticate": "Bearer"})


# ---------------------------------------------------------------- the ASGI app


class App:
    """The plain ASGI application: routing, limits and replies for one Service."""

    def __init__(self, service: Service, access: Access, openapi=None):
        self.service = service
        self.access = access
        self.openapi = openapi  # callable(spec, name) -> dict, or None
        self.busy = 0  # requests holding an inference slot (touched on the event loop only)
        self.buffered = 0  # body bytes held by requests still reading or waiting
        self.executor = concurrent.futures.ThreadPoolExecutor(service.limits.slots, thread_name_prefix="infer")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":  # lifespan is off; websockets are not installed
            return
        metrics = self.service.metrics
        state = {"endpoint": "other", "code": 500, "started": time.perf_counter()}
        metrics.in_flight.inc()
        try:
            try:
                code, body, headers, close = await self._route(scope, receive, state)
            except HttpError as exc:
                code, close = exc.code, exc.close
                body = json.dumps({"error": exc.message}).encode()
                headers = {"Content-Type": "application/json", **exc.headers}
            state["code"] = code
            # Counted before the reply leaves: a client that reads /metrics next sees its request.
            metrics.request_done(state["endpoint"], code, time.perf_counter() - state["started"])
            state["recorded"] = True
            close = close or self.service.draining.is_set()
            await send({"type": "http.response.start", "status": code, "headers": [
                (b"Content-Length", str(len(body)).encode()),
                *((k.encode(), str(v).encode()) for k, v in headers.items()),
                *([(b"Connection", b"close")] if close else [])]})
            await send({"type": "http.response.body", "body": body})
        finally:
            metrics.in_flight.dec()
            if not state.get("recorded"):  # the client went away, or the task was cancelled at shutdown
                metrics.request_done(state["endpoint"], state["code"], time.perf_counter() - state["started"])

    @staticmethod
    def _json(code: int, obj) -> tuple[int, bytes, dict, bool]:
        return code, json.dumps(obj).encode(), {"Content-Type": "application/json"}, False

    async def _route(self, scope, receive, state) -> tuple[int, bytes, dict, bool]:
        service = self.service
        method = scope["method"]
        headers: dict[str, list[str]] = {}
        for key, value in scope["headers"]:
            headers.setdefault(key.decode("latin-1"), []).append(value.decode("latin-1"))
        check_access(method, headers, self.access)
        path = scope["path"].rstrip("/") or "/"
        get = method in ("GET", "HEAD")
        ready = service.ready.is_set() and not service.draining.is_set()
        simple = {"/metrics": "metrics", "/v2/health/live": "live", "/v2/health/ready": "ready",
                  "/v2": "server_metadata", "/v2/openapi.json": "openapi"}
        if path in simple:
            state["endpoint"] = simple[path]
            if not get:
                raise HttpError(405, f"{method} is not allowed on {path}", {"Allow": "GET, HEAD"})
            if path == "/metrics":
                return 200, service.metrics.render().encode(), {"Content-Type": METRICS_TYPE}, False
            if path == "/v2/health/live":
                return self._json(200, {"live": True})
            if path == "/v2/health/ready":
                return self._json(200 if ready else 503, {"ready": ready})
            if path == "/v2":
                from . import __version__

                return self._json(200, {"name": "edge-run", "version": __version__,
                                        "extensions": ["binary_tensor_data"]})
            if self.openapi is None or service.spec is None:
                raise HttpError(503, service.failed or "model is loading", {"Retry-After": "1"})
            return self._json(200, self.openapi(service.spec, service.name))
        match = MODEL_PATH.match(path)
        if not match:
            raise HttpError(404, f"no such endpoint: {method} {path[:100]}")
        name, _version, action = match.groups()
        state["endpoint"] = {None: "model_metadata", "/ready": "model_ready", "/infer": "infer"}[action]
        check_token(headers, self.access)
        if name != service.name:
            raise HttpError(404, f"unknown model '{name[:100]}'; this server serves '{service.name}'")
        allowed = "POST" if action == "/infer" else "GET, HEAD"
        if method not in allowed.split(", "):
            raise HttpError(405, f"{method} is not allowed on {path[:100]}", {"Allow": allowed})
        if action == "/ready":
            return self._json(200 if ready else 503, {"name": name, "ready": ready})
        if not service.ready.is_set():
            raise HttpError(503, service.failed or "model is loading", {"Retry-After": "1"})
        if action is None:
            return self._json(200, {
                "name": name, "versions": ["1"], "platform": "tflite",
                "inputs": [tensor_json(s) for s in service.spec["inputs"]],
                "outputs": [tensor_json(s) for s in service.spec["outputs"]]})
        return await self._infer(receive, headers)

    def _body_length(self, headers: dict) -> int | None:
        """Content-Length (None when chunked); framing problems were refused by the protocol already."""
        length = headers.get("content-length")
        if length is None:
            if "transfer-encoding" not in headers:
                raise HttpError(411, "Content-Length is required")
            return None
        if int(length[0]) > self.service.limits.max_body:
            raise HttpError(413, f"body of {length[0]} bytes is over the limit of {self.service.limits.max_body}",
                            close=True)
        return int(length[0])

    async def _read_body(self, receive, length: int | None, deadline: float) -> bytes:
        """The whole body within one total deadline (not per chunk), within the size limits."""
        limits, chunks, size = self.service.limits, [], 0
        try:
            async with asyncio.timeout(deadline - time.monotonic()):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise HttpError(400, "the client went away before sending the whole body", close=True)
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    self.buffered += len(chunk)
                    chunks.append(chunk)
                    if size > limits.max_body:
                        raise HttpError(413, f"body is over the limit of {limits.max_body} bytes", close=True)
                    if self.buffered > limits.buffered:
                        raise HttpError(503, "server is busy: too many request bodies in memory",
                                        {"Retry-After": "1"}, close=True)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            promised = "" if length is None else f" of the {length} bytes Content-Length promised"
            raise HttpError(400, f"body ended after {size}{promised}: not complete within the "
                                 f"{limits.timeout:g} s deadline", close=True) from None
        finally:
            self.buffered -= size

    def _header_length(self, headers: dict, body_length: int) -> int | None:
        """The binary tensor extension's JSON header length, if the request uses it."""
        value = headers.get("inference-header-content-length")
        if value is None:
            return None
        value = value[0].strip()
        if not value.isdigit() or len(value) > 12 or int(value) > body_length:
            raise HttpError(400, f"bad Inference-Header-Content-Length {value[:20]!r} for a {body_length}-byte body")
        return int(value)

    async def _infer(self, receive, headers: dict) -> tuple[int, bytes, dict, bool]:
        service, limits = self.service, self.service.limits
        if service.draining.is_set():
            raise HttpError(503, "server is shutting down", {"Retry-After": "5"}, close=True)
        ctype = (headers.get("content-type") or [""])[0].split(";")[0].strip().lower()
        if ctype in FORM_TYPES or (ctype and ctype not in BODY_TYPES):
            raise HttpError(415, f"Content-Type {ctype[:60]!r} is not taken; use application/json, "
                                 "application/octet-stream (binary tensors), application/x-npy or application/x-npz",
                            close=True)
        length = self._body_length(headers)
        deadline = time.monotonic() + limits.timeout
        body = await self._read_body(receive, length, deadline)
        if self.busy >= limits.slots:
            raise HttpError(503, "server is busy: all workers and queue places are taken", {"Retry-After": "1"},
                            close=True)
        header_length = self._header_length(headers, len(body))
        self.busy += 1
        try:
            payload, reply = await asyncio.get_running_loop().run_in_executor(
                self.executor, run_inference, service, body, ctype, header_length, deadline)
        finally:
            self.busy -= 1
        return 200, payload, reply, False


# ---------------------------------------------------------------- the connection


def framing_problem(data: bytes) -> str | None:
    """Ambiguous body framing in a request head at the start of ``data`` (None when fine or incomplete).

    RFC 9112 §6.1/§6.3: Content-Length beside Transfer-Encoding, or more
    than one Content-Length, is how requests get smuggled; refused, and the
    connection closed. (h11 alone lets Transfer-Encoding win, and merges
    equal duplicates.)
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = data.find(b"\n\n")
        if end < 0:
            return None
    lengths, encodings = [], 0
    for line in data[:end].splitlines()[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            lengths += value.split(b",")
        elif name == b"transfer-encoding":
            encodings += 1
    if len(lengths) > 1:
        return "more than one Content-Length"
    if lengths and encodings:
        return "both Content-Length and Transfer-Encoding"
    return None


class OneWrite:
    """A transport that sends what is written in one event-loop step as one write.

    uvicorn writes the status line and headers, then the body: two segments
    per reply. Joined, a reply leaves in one send() (and TCP_NODELAY, which
    asyncio sets, sends it at once): no Nagle / delayed-ACK stall on a
    keep-alive connection, and a client's first read holds the whole reply.
    """

    def __init__(self, transport, loop):
        self._transport, self._loop, self._pending = transport, loop, []

    def write(self, data: bytes) -> None:
        if data:
            self._pending.append(bytes(data))
            if len(self._pending) == 1:
                self._loop.call_soon(self.flush)

    def flush(self) -> None:
        if self._pending:
            data, self._pending = b"".join(self._pending), []
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name):  # pause/resume_reading, is_closing, get_extra_info, ...
        return getattr(self._transport, name)


def make_protocol(service: Service):
    """uvicorn's h11 protocol with a total head deadline, a connection cap and JSON protocol errors."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    limits = service.limits

    class EdgeProtocol(H11Protocol):
        _head_timer = None
        _refused = False

        def connection_made(self, transport):
            if len(self.connections) >= limits.connections:
                self._refused = True
                self.transport = transport
                body = json.dumps({"error": f"server is busy: {limits.connections} connections are open"}).encode()
                transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                                % (len(body), body))
                transport.close()
                service.metrics.request_done("other", 503, 0.0)
                return
            super().connection_made(OneWrite(transport, self.loop))
            self._arm_head_timer()

        def connection_lost(self, exc):
            self._cancel_head_timer()
            if not self._refused:
                super().connection_lost(exc)

        def data_received(self, data):
            if not self._refused:
                super().data_received(data)

        def _arm_head_timer(self):
            self._cancel_head_timer()
            self._head_timer = self.loop.call_later(limits.timeout, self._head_timed_out)

        def _cancel_head_timer(self):
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self):
            """No complete request head within --timeout (however slowly bytes trickle in): drop it."""
            self._head_timer = None
            if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
                self.transport.close()

        def handle_events(self):
            if self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE:
                problem = framing_problem(self.conn.trailing_data[0])
                if problem:
                    self._refuse(f"ambiguous request framing ({problem}); the connection is closed")
                    return
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle:  # a request head arrived: the app's body deadline takes over
                self._cancel_head_timer()

        def send_400_response(self, msg: str):
            self._refuse("malformed HTTP request (request line, header or chunk framing; RFC 9112)")

        def _refuse(self, message: str):
            service.metrics.request_done("other", 400, 0.0)
            body = json.dumps({"error": message}).encode()
            with contextlib.suppress(h11.LocalProtocolError):
                headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                           (b"connection", b"close")]
                self.transport.write(self.conn.send(h11.Response(status_code=400, headers=headers,
                                                                 reason=b"Bad Request"))
                                     + self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage()))
            self.transport.close()

        def on_response_complete(self):
            super().on_response_complete()
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self._arm_head_timer()

    return EdgeProtocol


# ---------------------------------------------------------------- running it


def listen(host: str, port: int) -> socket.socket:
    """Bind before anything else, so a busy port is a one-line error and port 0 works."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", "pick another --port or --host") \
            from None
    sock.setblocking(False)
    return sock


def make_server(service: Service, access: Access, on_exit=None, verbose: bool = False):
    """A uvicorn Server running our App over h11; SIGTERM/SIGINT drain and return (no re-raised signal)."""
    import uvicorn

    from .openapi import openapi_document

    limits = service.limits
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.ERROR)  # bugs, not bad clients
    config = uvicorn.Config(
        App(service, access, openapi_document), http=make_protocol(service), interface="asgi3", lifespan="off",
        log_config=None, access_log=verbose, proxy_headers=False, server_header=False,
        headers=[("server", "edge-run")], timeout_keep_alive=max(1, int(min(5.0, limits.timeout))),
        # Our requests finish on their own deadline (head/body + queue wait share --timeout): this only bounds a
        # stuck inference. Then uvicorn cancels what is left.
        timeout_graceful_shutdown=int(math.ceil(limits.timeout)) + 1,
        h11_max_incomplete_event_size=16 * 1024)

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            # uvicorn re-raises the signal after its shutdown (exit -15); a drained server exits 0.
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGTERM, signal.SIGINT)}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

        def handle_exit(self, sig, frame):
            service.draining.set()
            if on_exit is not None:
                on_exit()
            super().handle_exit(sig, frame)

    return Server(config)


def serve(bundle: str, host: str, port: int, limits: Limits, threads: int | None = None,
          delegate: str | None = None, verbose: bool = False, access: Access | None = None,
          delegate_options: list[str] | None = None, device: DeviceSources | None = None) -> int:
    """Serve a bundle until SIGTERM/SIGINT; returns the exit code (0).

    device: where /metrics reads device health (default: /sys, vcgencmd on PATH).
    """
    from . import load
    from .bundle import open_bundle, sha256_file
    from .interpreter import make_engine
    from .model import Model

    folder, manifest = open_bundle(bundle)  # verify before opening a port

    def load_models():
        first = load(folder, threads=threads, delegate=delegate, delegate_options=delegate_options)
        plain, used = str(folder / "model.tflite"), first.engine.model_path
        # the delegate the first one ended up with; the Edge TPU model again only if its delegate loads again
        rest = [Model(folder, manifest, make_engine(plain, first.engine.threads, first.engine.choice,
                                                    used if used != plain else None))
                for _ in range(limits.workers - 1)]
        return [first, *rest]

    target = manifest.get("target", {})
    # version: install.sh --prefix's name for this bundle (<name>-<12 hex of manifest.json's sha256>), so a fleet's
    # dashboard says which version each board serves.
    version = f"{manifest['name']}-{sha256_file(folder / 'manifest.json')[:12]}"
    metrics = Metrics({"model": manifest["name"], "target": target.get("name", ""), "version": version,
                       "source_sha256": manifest["source"]["sha256"][:16]}, model_fidelity(manifest), Drift(manifest),
                      device)
    service = Service(load_models, limits, manifest["name"], metrics)
    access = access or Access()
    access = dataclasses.replace(access, hosts=access.hosts | {host.lower().strip("[]")})
    sock = listen(host, port)
    server = make_server(service, access, verbose=verbose)
    bound = sock.getsockname()
    print(f"edge-run serve: {manifest['name']} on http://{bound[0]}:{bound[1]} "
          f"(workers {limits.workers}, queue {limits.queue})", file=sys.stderr, flush=True)
    threading.Thread(target=service.warm_up, daemon=True).start()
    server.run(sockets=[sock])
    print("edge-run serve: stopped", file=sys.stderr, flush=True)
    return 0
