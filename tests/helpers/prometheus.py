"""A real Prometheus (Debian's /usr/bin/prometheus) for tests: start it on a scrape configuration, query it,
and turn the Grafana dashboard's panels into the PromQL Grafana would send."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.helpers.net import free_port

DASHBOARD = ROOT / "dashboards" / "edge-run.json"
JOB = "edge-run"


def panel_queries(dashboard: dict, variables: dict[str, str]) -> list[tuple[str, str]]:
    """(panel title, PromQL with the template variables filled in) for every target of every panel."""
    out = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for name in sorted(variables, key=len, reverse=True):  # $__rate_interval before any shorter name
                expr = expr.replace(name, variables[name])
            assert "$" not in expr, f"{panel['title']}: a template variable the test does not know: {expr}"
            out.append((panel["title"], expr))
    return out


class Prometheus:
    """One Prometheus server on loopback, scraping every second with ``scrape_configs`` (YAML text)."""

    def __init__(self, workdir: Path, scrape_configs: str):
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("the prometheus server is missing: `make promtool` installs Debian's prometheus package, "
                        "which provides both /usr/bin/prometheus and promtool")
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"
                          + scrape_configs)
        self._log = open(workdir / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=self._log)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self._log.close()

    def query(self, expr: str) -> list:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as resp:
            reply = json.load(resp)
        assert reply["status"] == "success", reply
        return reply["data"]["result"]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def scraped(self, scrapes: int, targets: int = 1) -> bool:
        """At least ``scrapes`` successful scrapes of each of ``targets`` edge-run targets in the last 15 s:
        every rate() window has samples."""
        if not self.ready():
            return False
        counts = self.query(f'count_over_time(up{{job="{JOB}"}}[15s])')
        up = self.query(f'up{{job="{JOB}"}} == 1')
        return (len(counts) >= targets and all(float(r["value"][1]) >= scrapes for r in counts)
                and len(up) >= targets)


def wait_for(what: str, check, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
