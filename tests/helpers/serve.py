"""`edge-run serve` as a subprocess on a loopback port, for the tests that talk to it over HTTP."""

import http.client
import json
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

MAX_BODY = 65536


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, bundle, *extra):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_runtime", "serve", str(bundle), "--port", str(self.port),
             "--workers", "1", "--queue", "1", "--timeout", "2", "--max-body", str(MAX_BODY), *extra],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self.request("GET", "/v2/health/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.proc.kill()
        raise AssertionError("server never became ready: " + self.proc.communicate()[1])

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read(), dict(resp.getheaders())
        finally:
            conn.close()

    def metrics(self) -> str:
        return self.request("GET", "/metrics")[1].decode()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=30)
        return self.proc.returncode


def infer_body(x, name="image", datatype="FP32", shape=None, data=None):
    return json.dumps({"inputs": [{"name": name, "datatype": datatype, "shape": list(shape or x.shape),
                                   "data": x.ravel().tolist() if data is None else data}]})


def promtool_check(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool missing: `make test` installs Debian's prometheus package")
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
