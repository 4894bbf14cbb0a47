"""The Grafana dashboard (dashboards/edge-run.json) against a real Prometheus.

Every panel's PromQL must return data from a live `edge-run serve`: a
renamed metric or label, or a query Prometheus rejects, fails here instead
of showing "No data" on someone's wall. Grafana's template variables are
substituted as Grafana would; nothing here needs Grafana itself. The
device-health panels read a board the test gives every host: a sysfs tree
(`--sysfs`) and a stand-in vcgencmd printing what a Raspberry Pi prints.
"""

import json
import math
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest

from tests.conftest import ROOT
from tests.helpers.serve import Server, free_port, infer_body
from tests.helpers.device_health import PI_UNDER_VOLTAGE, fake_board

DASHBOARD = ROOT / "dashboards" / "edge-run.json"
JOB = "edge-run"
# Grafana's $__rate_interval is at least four scrape intervals: 1 s scrapes here.
VARIABLES = {"$__rate_interval": "15s", "$job": JOB, "$instance": ".*"}


def panel_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL with the template variables filled in) for every target of every panel."""
    out = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for name in sorted(VARIABLES, key=len, reverse=True):  # $__rate_interval before any shorter name
                expr = expr.replace(name, VARIABLES[name])
            assert "$" not in expr, f"{panel['title']}: a template variable the test does not know: {expr}"
            out.append((panel["title"], expr))
    return out


def test_dashboard_is_grafana_importable_json():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}" and panel["targets"], panel["title"]
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Requests per second", "Errors per second", "Inference request latency", "Inference time", "In flight",
            "Delegate in use", "Process memory (RSS)", "Process CPU"} <= titles


def query(port: int, expr: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        reply = json.load(resp)
    assert reply["status"] == "success", reply
    return reply["data"]["result"]


@pytest.fixture(scope="module")
def samples(digits):
    return np.load(digits / "test_x.npy")[:2]


@pytest.fixture
def prometheus(tmp_path):
    """Start Prometheus; yields a function that points it at a target and returns its HTTP port."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("the prometheus server is missing: `make promtool` installs Debian's prometheus package, "
                    "which provides both /usr/bin/prometheus and promtool")
    procs, logs = [], []

    def start(target_port: int) -> int:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"
                          f"  - job_name: {JOB}\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n")
        logs.append(open(tmp_path / "prometheus.log", "w"))
        procs.append(subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=logs[-1]))
        return port

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=30)
    for log in logs:
        log.close()


def wait_for(what: str, check, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


@pytest.mark.slow
def test_every_panel_returns_data_from_a_real_prometheus(digits_bundle, samples, prometheus, tmp_path):
    queries = panel_queries(json.loads(DASHBOARD.read_text()))
    # A board on every host: sysfs thermal_zone0/temp in millidegrees, and a vcgencmd printing the Pi
    # firmware tool's output for under-voltage (throttled=0x50005).
    board = fake_board(tmp_path, temp="47250", throttled=PI_UNDER_VOLTAGE)
    srv = Server(digits_bundle, "--sysfs", board.sysfs, "--vcgencmd", board.vcgencmd)
    stop = threading.Event()

    def traffic():  # requests keep coming while Prometheus scrapes, so every rate is above zero
        while not stop.is_set():
            for x in (samples[:1], samples[1:2] + 3.0):  # the second drifted well off the calibration data
                assert srv.request("POST", "/v2/models/digits-rpi4/infer", infer_body(x))[0] == 200
            assert srv.request("POST", "/v2/models/digits-rpi4/infer", "{not json")[0] == 400
            time.sleep(0.1)

    worker = threading.Thread(target=traffic, daemon=True)
    try:
        worker.start()
        port = prometheus(srv.port)
        wait_for("Prometheus to scrape edge-run five times", lambda: _scraped(port, 5))
        empty, nan, values = [], [], {}
        for title, expr in queries:
            result = query(port, expr)
            values.setdefault(title, []).append([float(r["value"][1]) for r in result])
            if not result:
                empty.append(f"{title}: {expr}")
            elif not all(math.isfinite(float(r["value"][1])) for r in result):
                nan.append(f"{title}: {expr} -> {result}")
        assert not empty, "panels with no data:\n" + "\n".join(empty)
        assert not nan, "panels with NaN/Inf:\n" + "\n".join(nan)
        assert values["SoC temperature"] == [[47.25]]  # one zone, millidegrees to degrees
        assert values["Throttled"] == [[1.0]]  # 0x50005: bit 2, throttled now
        assert worker.is_alive(), "the traffic thread failed"
    finally:
        stop.set()
        worker.join(timeout=30)
        assert srv.stop() == 0


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _scraped(port: int, scrapes: int) -> bool:
    """At least ``scrapes`` successful scrapes of edge-run in the last 15 s: every rate() window has samples."""
    if not _ready(port):
        return False
    result = query(port, f'count_over_time(up{{job="{JOB}"}}[15s])')
    up = query(port, f'up{{job="{JOB}"}}')
    return bool(result) and float(result[0]["value"][1]) >= scrapes and up[0]["value"][1] == "1"
