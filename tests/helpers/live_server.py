"""The server's HTTP stack on loopback in this process, over a stand-in model (no converter run).

The real uvicorn + h11 + ASGI app + handlers, on an ephemeral 127.0.0.1 port,
serving a Model whose interpreter is a stand-in of chosen speed; and the raw
socket helpers the network tests read replies with.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import numpy as np

from edge_runtime.interpreter import Engine
from edge_runtime.metrics import DeviceSources, Metrics
from edge_runtime.model import Model
from edge_runtime.server import Access, Limits, Service, listen, make_server

NAME = "digits-rpi4"
INFER = f"/v2/models/{NAME}/infer"
MANIFEST = {
    "name": NAME, "target": {"name": "rpi4"}, "source": {"sha256": "0" * 64},
    "inputs": [{"name": "image", "shape": [1, 1, 8, 8], "dtype": "float32", "tflite_shape": [1, 8, 8, 1],
                "tflite_dtype": "int8", "permutation": [0, 2, 3, 1], "scale": 0.1, "zero_point": 0,
                "tflite_index": 0}],
    "outputs": [{"name": "scores", "shape": [1, 10], "dtype": "float32", "tflite_shape": [1, 10],
                 "tflite_dtype": "int8", "permutation": [0, 1], "scale": 0.1, "zero_point": 0, "tflite_index": 1}],
}


class StandInInterpreter:
    """Scores = the input's quantized sum, clipped: outputs depend on inputs, at a chosen speed."""

    def __init__(self, delay: float):
        self.delay = delay
        self.buffers = {0: np.zeros((1, 8, 8, 1), np.int8), 1: np.zeros((1, 10), np.int8)}

    def set_tensor(self, index, tensor):
        self.buffers[index][...] = tensor

    def tensor(self, index):
        return lambda: self.buffers[index]

    def invoke(self):
        time.sleep(self.delay)
        self.buffers[1][...] = np.clip(int(self.buffers[0].astype(np.int64).sum()), -128, 127)

    def get_tensor(self, index):
        return self.buffers[index].copy()


def stand_in_models(workers: int, delay: float) -> list[Model]:
    return [Model(Path("."), MANIFEST, Engine(StandInInterpreter(delay), "stand-in", "0", "xnnpack", 1))
            for _ in range(workers)]


class LiveServer:
    """The server's HTTP stack on an ephemeral loopback port, run on a thread of this process."""

    def __init__(self, limits: Limits | None = None, access: Access | None = None, delay: float = 0.0,
                 device: DeviceSources | None = None):
        self.limits = limits or Limits(max_body=65536, workers=1, queue=1, timeout=2.0, connections=32)
        self.service = Service(lambda: stand_in_models(self.limits.workers, delay), self.limits, NAME,
                               Metrics({"model": NAME}, device=device))
        self.service.warm_up()
        sock = listen("127.0.0.1", 0)
        self.port = sock.getsockname()[1]
        self.server = make_server(self.service, access or Access())
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "server never started"
            time.sleep(0.01)

    def connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def request(self, method, path, body=b"", headers=None, host="127.0.0.1"):
        """One request on its own connection -> (status, JSON or text body, headers)."""
        if isinstance(body, str):
            body = body.encode()
        head = {"Host": host, "Content-Length": str(len(body)), **(headers or {})}
        with self.connect() as s:
            s.sendall(f"{method} {path} HTTP/1.1\r\n".encode()
                      + b"".join(f"{k}: {v}\r\n".encode() for k, v in head.items() if v is not None)
                      + b"\r\n" + body)
            return parse_reply(read_reply(s))

    def infer(self, x=None, **headers):
        x = np.zeros((1, 1, 8, 8), np.float32) if x is None else x
        return self.request("POST", INFER, infer_body(x), {"Content-Type": "application/json", **headers})

    def open_connections(self) -> int:
        """Connections the server holds now (uvicorn's own count)."""
        return len(self.server.server_state.connections)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.service.draining.set()


def infer_body(x, **extra) -> str:
    return json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": list(x.shape),
                                   "data": x.ravel().tolist()}], **extra})


def read_reply(s: socket.socket) -> bytes:
    """One reply with a Content-Length body (the connection may stay open)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def split_replies(data: bytes) -> tuple[list[bytes], bytes]:
    """Pipelined replies in a stream (each framed by its Content-Length) -> (whole replies, the rest)."""
    found = []
    while b"\r\n\r\n" in data:
        head, _, rest = data.partition(b"\r\n\r\n")
        fields = (line.split(b":", 1) for line in head.split(b"\r\n")[1:])
        length = next(int(v) for k, v in fields if k.strip().lower() == b"content-length")
        if len(rest) < length:
            break
        found.append(head + b"\r\n\r\n" + rest[:length])
        data = rest[length:]
    return found, data


def read_replies(s: socket.socket, count: int) -> list[bytes]:
    """``count`` pipelined replies from one connection (fewer if it closes first)."""
    found, data = [], b""
    while len(found) < count:
        chunk = s.recv(65536)
        if not chunk:
            break
        more, data = split_replies(data + chunk)
        found += more
    return found


def parse_reply(raw: bytes):
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), raw[:200]
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    payload = json.loads(body) if headers.get("content-type") == "application/json" else body
    return int(lines[0].split()[1]), payload, headers


def closed_by_server(s: socket.socket, within: float) -> bool:
    """Whether the server closes the connection within ``within`` seconds (whatever it sent first)."""
    s.settimeout(within)
    try:
        while s.recv(65536):
            pass
        return True
    except (socket.timeout, TimeoutError):
        return False
    except ConnectionResetError:
        return True


def assert_still_serving(live):
    status, payload, _ = live.infer(np.full((1, 1, 8, 8), 0.5, np.float32))
    assert status == 200
    np.testing.assert_allclose(payload["outputs"][0]["data"], [12.7] * 10, rtol=1e-6)  # 64 * 0.5 / 0.1 -> 127
