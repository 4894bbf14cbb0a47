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
import threading
import time

import numpy as np
import pytest

from tests.helpers.device_health import PI_UNDER_VOLTAGE, fake_board
from tests.helpers.prometheus import DASHBOARD, JOB, Prometheus, panel_queries, wait_for
from tests.helpers.serve import Server, infer_body

# Grafana's $__rate_interval is at least four scrape intervals: 1 s scrapes here. One server: every board.
VARIABLES = {"$__rate_interval": "15s", "$job": JOB, "$board": ".*", "$instance": ".*"}


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


@pytest.fixture(scope="module")
def samples(digits):
    return np.load(digits / "test_x.npy")[:2]


@pytest.fixture
def prometheus(tmp_path):
    """Start Prometheus; yields a function that points it at a target and returns the running server."""
    servers = []

    def start(target_port: int) -> Prometheus:
        servers.append(Prometheus(tmp_path, f"  - job_name: {JOB}\n    static_configs:\n"
                                            f"      - targets: ['127.0.0.1:{target_port}']\n"))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.mark.slow
def test_every_panel_returns_data_from_a_real_prometheus(digits_bundle, samples, prometheus, tmp_path):
    queries = panel_queries(json.loads(DASHBOARD.read_text()), VARIABLES)
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
        prom = prometheus(srv.port)
        wait_for("Prometheus to scrape edge-run five times", lambda: prom.scraped(5))
        empty, nan, values = [], [], {}
        for title, expr in queries:
            result = prom.query(expr)
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

