"""The fleet in one view: Prometheus finds every board's edge-run serve through file_sd targets that the
edgepack.fleet collection writes from the Ansible inventory (playbook prometheus_targets), each labelled with
its board; the dashboard's board variable and its Fleet table (board, model, version, delegate, p50 latency,
drift, temperature) are then checked against that real Prometheus, as tests/edge_runtime/test_dashboard.py
checks every other panel.

Two boards here are two `edge-run serve` on the host, each on a loopback address of its own with the bundle of
its target and a sysfs tree giving its SoC temperature (the emulated boards would take minutes to serve under
QEMU; what is under test is the inventory -> targets -> Prometheus -> dashboard path).
"""

import json
import math
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

from tests.conftest import ROOT, run_cli
from tests.helpers.ansible import Ansible, install_collection
from tests.helpers.bundles import version
from tests.helpers.net import free_port
from tests.helpers.prometheus import DASHBOARD, JOB, Prometheus, panel_queries, wait_for

pytestmark = pytest.mark.slow
# board: (target, address, SoC temperature in millidegrees)
BOARDS = {"pi-01": ("rpi4", "127.0.0.21", "51250"), "zero-01": ("zero2w", "127.0.0.22", "62000")}



def _request(url: str, body: bytes | None = None) -> int:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except OSError:
        return 0


class Board:
    """One board's `edge-run serve` on its own address, with its own sysfs (thermal_zone0; no vcgencmd here)."""

    def __init__(self, name: str, bundle, address: str, temp: str, folder):
        zone = folder / name / "sys" / "class" / "thermal" / "thermal_zone0"
        zone.mkdir(parents=True)
        (zone / "temp").write_text(temp + "\n")
        self.name, self.address, self.port = name, address, free_port(address)
        self.url = f"http://{address}:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_runtime", "serve", str(bundle), "--host", address, "--port", str(self.port),
             "--sysfs", str(folder / name / "sys")],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def stop(self) -> int:
        self.proc.terminate()
        self.proc.communicate(timeout=30)
        return self.proc.returncode


def test_file_sd_targets_from_the_inventory_feed_the_board_variable_and_fleet_table(fleet_build, digits, tmp_path):
    dist, _ = fleet_build
    inventory = tmp_path / "inventory.yml"
    run_cli("packager", "fleet", "inventory", "--model", "digits", "--dist", dist, "-o", inventory,
            *(arg for name, (target, address, _) in BOARDS.items() for arg in ("--board", f"{name}={target}@{address}")))
    boards = {name: Board(name, dist / f"digits-{target}", address, temp, tmp_path)
              for name, (target, address, temp) in BOARDS.items()}
    stop = threading.Event()
    try:
        (tmp_path / "host_vars").mkdir()
        for board in boards.values():  # where each board's service listens: the role's variables
            (tmp_path / "host_vars" / f"{board.name}.yml").write_text(
                f"edgepack_service: true\nedgepack_service_host: {board.address}\nedgepack_service_port: {board.port}\n")
        ansible = Ansible(tmp_path / "ansible", install_collection(tmp_path), [])
        targets_file = tmp_path / "edge-run.json"
        run = ansible.playbook("prometheus_targets", inventory, "-e", f"edgepack_file_sd={targets_file}")
        assert run.returncode == 0, run
        assert json.loads(targets_file.read_text()) == [
            {"targets": [f"{b.address}:{b.port}"], "labels": {"board": b.name}} for b in boards.values()]

        for board in boards.values():
            wait_for(f"{board.name} to serve", lambda b=board: _request(f"{b.url}/v2/health/ready") == 200)
        x = np.load(digits / "test_x.npy")[:1]
        body = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": list(x.shape),
                                       "data": x.ravel().tolist()}]}).encode()

        def traffic():  # inferences keep coming while Prometheus scrapes: the p50 latency has samples
            while not stop.is_set():
                for name, b in boards.items():
                    _request(f"{b.url}/v2/models/digits-{BOARDS[name][0]}/infer", body)
                time.sleep(0.1)

        threading.Thread(target=traffic, daemon=True).start()
        prometheus = Prometheus(tmp_path, f"  - job_name: {JOB}\n    file_sd_configs:\n      - files: ['{targets_file}']\n")
        try:
            wait_for("Prometheus to scrape both boards five times", lambda: prometheus.scraped(5, targets=2))
            _check_fleet_view(prometheus, dist)
        finally:
            prometheus.stop()
    finally:
        stop.set()
        for board in boards.values():
            assert board.stop() == 0


def _check_fleet_view(prometheus: Prometheus, dist) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names == ["job", "board", "instance"]
    # The board variable: Grafana's label_values(edge_run_model_info{job="$job"}, board).
    found = prometheus.query(f'group by (board) (edge_run_model_info{{job="{JOB}"}})')
    assert sorted(r["metric"]["board"] for r in found) == sorted(BOARDS)
    fleet = next(p for p in dashboard["panels"] if p["title"] == "Fleet")
    assert fleet["gridPos"]["y"] == 0 and fleet["type"] == "table"
    rate = {"$__rate_interval": "15s", "$job": JOB, "$instance": ".*"}
    for chosen in (".*", "zero-01"):
        shown = sorted(BOARDS) if chosen == ".*" else [chosen]
        queries = panel_queries({"panels": [fleet]}, {**rate, "$board": chosen})
        assert len(queries) == 5  # model and version, delegate, p50 latency, drift, temperature
        rows = [prometheus.query(expr) for _, expr in queries]
        for (_, expr), result in zip(queries, rows):
            assert sorted(r["metric"]["board"] for r in result) == shown, f"{expr} -> {result}"
            assert all(math.isfinite(float(r["value"][1])) for r in result), f"{expr} -> {result}"
        model, delegate, latency, _, temperature = ({r["metric"]["board"]: r for r in result} for result in rows)
        for board in shown:
            target = BOARDS[board][0]
            assert model[board]["metric"]["model"] == f"digits-{target}"
            assert model[board]["metric"]["version"] == version(dist / f"digits-{target}")
            assert delegate[board]["metric"]["delegate"] == "xnnpack"
            assert 0 < float(latency[board]["value"][1]) < 1
            assert float(temperature[board]["value"][1]) == int(BOARDS[board][2]) / 1000
