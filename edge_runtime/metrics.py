"""Prometheus metrics for `edge-run serve`, through prometheus_client.

prometheus_client (pure Python, no dependencies; its wheel rides in the
bundle like uvicorn's) writes the text exposition, escapes label values,
locks each instrument, and adds the process collector's RSS, CPU seconds
and open file descriptors: the figures an operator asks for first on a
board with 1 GB of RAM. Each server has its own CollectorRegistry rather
than the library's global one, so tests and several servers in one process
never see each other's samples or clash on a name.

Device health (SoC temperature, throttling) is present when the board
exposes it and simply absent otherwise. Where it is read from is
DeviceSources: a sysfs root other than /sys (a container that mounts the
host's /sys elsewhere, as node_exporter's --path.sysfs), and which vcgencmd.
It is never read by a scrape: a scrape runs on the server's event loop, and
a vcgencmd that took 1.5 s held every request for as long. A thread of its
own (DeviceHealth) takes a reading when the last one is REFRESH seconds old,
one at a time, each program run under a deadline; a scrape shows the last
reading, or nothing once it is STALE.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import re
import shutil
import signal
import subprocess
import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily

from .fields import ascii_int

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _gauge(name: str, text: str, labels: dict, value) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, text, labels=list(labels))
    family.add_metric([str(v) for v in labels.values()], value)
    return family


def model_fidelity(manifest: dict) -> list[GaugeMetricFamily]:
    """What the build measured and decided about the model's fidelity, as gauges.

    Fixed for the life of the server (they come from the verified manifest),
    so a dashboard can alert on a model shipped below the bar. Bundles built
    before the precision ladder are full int8 with no recorded bar: no
    edge_run_model_fidelity_ok then, rather than a guess.
    """
    from .model import precision_report

    prec = precision_report(manifest)
    info = {"precision": prec.get("chosen", "int8"), "step": prec.get("step", "")} if prec else {"precision": "int8"}
    families = [_gauge("edge_run_model_precision_info", "The precision the build chose, and its precision-ladder step.",
                       info, 1)]
    if prec:
        families.append(_gauge("edge_run_model_fidelity_ok", "1 when the model holds the fidelity bar on held-out "
                               "samples, 0 when it was shipped below it (--accept-low-fidelity).", {},
                               int(bool(prec.get("meets_bar")))))
    outputs = {name: m["cosine"] for name, m in ((manifest.get("fidelity") or {}).get("outputs") or {}).items()
               if isinstance(m.get("cosine"), (int, float))}
    if outputs:
        cosine = GaugeMetricFamily("edge_run_model_fidelity_cosine", "Mean cosine of each output against float ONNX "
                                   "on held-out samples, measured by the build.", labels=["output"])
        for name, value in outputs.items():
            cosine.add_metric([name], value)
        families.append(cosine)
    return families


class Metrics:
    """The instruments of one server, in a registry of its own.

    prometheus_client's instruments take their own locks, so request
    handlers on the event loop and inference threads update them directly.
    """

    def __init__(self, model_info: dict, model_families: list | None = None, drift=None,
                 device: DeviceSources | None = None):
        self.registry = CollectorRegistry(auto_describe=True)
        self.engine: dict = {}  # Engine.report() once the model is loaded
        self.requests = Counter("edge_run_requests", "HTTP requests by endpoint and status code.",
                                ["endpoint", "code"], registry=self.registry)
        self.request_seconds = Histogram("edge_run_request_duration_seconds", "Time to answer an HTTP request.",
                                         ["endpoint"], buckets=BUCKETS, registry=self.registry)
        self.inference = Histogram("edge_run_inference_duration_seconds", "Time in the interpreter per inference.",
                                   buckets=BUCKETS, registry=self.registry)
        self.in_flight = Gauge("edge_run_in_flight_requests", "Requests being handled now.", registry=self.registry)
        info = Gauge("edge_run_model_info", "The model being served.", list(model_info), registry=self.registry)
        (info.labels(*(str(v) for v in model_info.values())) if model_info else info).set(1)
        fixed = list(model_families or [])  # model_fidelity(manifest): fixed at start
        self.drift = drift  # edge_runtime.drift.Drift, or None
        self.device = DeviceHealth(device or DeviceSources())
        self.device.families()  # the first reading starts now, on its own thread
        self.registry.register(_Collect(lambda: [*fixed, *delegate_families(self.engine), *self.device.families(),
                                                 *(drift.families() if drift else [])]))
        ProcessCollector(registry=self.registry)

    def request_done(self, endpoint: str, code: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(code)).inc()
        self.request_seconds.labels(endpoint).observe(seconds)

    def inference_done(self, seconds: float) -> None:
        self.inference.observe(seconds)

    def inputs_seen(self, feeds: dict) -> None:
        """Live inputs, for the drift and saturation figures (nothing when the server keeps none)."""
        if self.drift is not None:
            self.drift.observe(feeds)

    def render(self) -> str:
        return generate_latest(self.registry).decode()


class _Collect:
    """A collector whose families a function gives at each scrape."""

    def __init__(self, families):
        self.collect = families

    def describe(self):  # families vary (device health, the engine once loaded): nothing to check up front
        return []


def delegate_families(engine: dict) -> list[GaugeMetricFamily]:
    """Which delegate runs the model and on which model file, why not the wanted one, and its share of the graph."""
    if not engine:
        return []
    info = {"delegate": engine["delegate"], "fallback": str(bool(engine["fallback"])).lower(),
            "library": engine.get("delegate_library") or "", "model_file": engine.get("model_file", ""),
            "reason": engine["fallback"] or ""}
    families = [_gauge("edge_run_delegate_info", "The delegate in use; fallback=\"true\" when the wanted one failed, "
                       "and why.", info, 1)]
    labels = {"delegate": engine["delegate"]}
    if engine.get("delegate_nodes") is not None:
        families.append(_gauge("edge_run_delegate_nodes", "Nodes of the model's graph the delegate took.",
                               labels, engine["delegate_nodes"]))
        families.append(_gauge("edge_run_delegate_partitions", "Delegate kernels the graph was split into.",
                               labels, engine["partitions"]))
    if engine.get("total_nodes") is not None:
        families.append(_gauge("edge_run_model_nodes", "Nodes of the model's graph.", {}, engine["total_nodes"]))
    return families


@dataclasses.dataclass(frozen=True)
class DeviceSources:
    """Where device health is read from.

    sysfs: the root of a sysfs tree (thermal zones under class/thermal).
    vcgencmd: the Raspberry Pi firmware tool's path; None looks it up on PATH at each scrape.
    """

    sysfs: str = "/sys"
    vcgencmd: str | None = None


class DeviceHealth:
    """Device health read on a thread of its own, never by a scrape: the last reading, while it is fresh."""

    REFRESH = 5.0  # seconds: a scrape after this starts a new reading (Prometheus scrapes every 15 s or so)
    STALE = 30.0  # seconds: an older reading (a sysfs read or vcgencmd stuck) is not shown

    def __init__(self, sources: DeviceSources):
        self.sources = sources
        self._lock = threading.Lock()
        self._reading: list = []
        self._taken = self._started = -float("inf")  # time.monotonic() of the last reading, and of its start
        self._busy = False

    def families(self) -> list[GaugeMetricFamily]:
        """The last reading (nothing before the first or once stale); starts the next one when it is due."""
        now = time.monotonic()
        with self._lock:
            due = not self._busy and now - self._started >= self.REFRESH
            if due:
                self._busy, self._started = True, now
            reading = self._reading if now - self._taken <= self.STALE else []
        if due:
            threading.Thread(target=self.refresh, name="device-health", daemon=True).start()
        return reading

    def refresh(self) -> list[GaugeMetricFamily]:
        """Take a reading now, on this thread (the background one, or a test's)."""
        reading = []
        try:
            reading = device_health(self.sources)
        finally:
            with self._lock:
                self._reading, self._taken, self._busy = reading, time.monotonic(), False
        return reading


# What `vcgencmd get_throttled` prints on a Raspberry Pi, e.g. "throttled=0x50005".
THROTTLED = re.compile(r"throttled=(0x[0-9a-f]+)", re.I)


def device_health(sources: DeviceSources = DeviceSources()) -> list[GaugeMetricFamily]:
    """SoC temperature (sysfs thermal zones) and throttling (vcgencmd), where the board tells; else nothing.

    A zone whose temp cannot be read or is not an integer (millidegrees), and a
    vcgencmd that fails, hangs or prints something else, give no sample: never
    a guess, never a failed scrape.
    """
    families = []
    temps = GaugeMetricFamily("edge_run_soc_temperature_celsius", "SoC temperature per thermal zone.",
                              labels=["zone"])
    pattern = os.path.join(glob.escape(sources.sysfs), "class", "thermal", "thermal_zone*", "temp")
    for zone in sorted(glob.glob(pattern)):
        try:
            with open(zone, encoding="ascii") as f:
                millidegrees = ascii_int(f.read(32).strip(), signed=True)
        except (OSError, ValueError):
            continue
        if millidegrees is not None:
            temps.add_metric([os.path.basename(os.path.dirname(zone))], millidegrees / 1000.0)
    if temps.samples:
        families.append(temps)
    vcgencmd = sources.vcgencmd or shutil.which("vcgencmd")
    if vcgencmd:
        code, stdout = run_briefly([vcgencmd, "get_throttled"], VCGENCMD_SECONDS)
        match = THROTTLED.fullmatch(stdout.strip())
        if code != 0 or not match:
            return families
        value = int(match.group(1), 16)
        families.append(_gauge("edge_run_throttled_state", "Raspberry Pi throttling bits (vcgencmd get_throttled).",
                               {}, value))
        families.append(_gauge("edge_run_throttled_now", "Whether the SoC is throttled right now (bit 2).", {},
                               int(bool(value & 0x4))))
    return families


VCGENCMD_SECONDS = 2.0


def run_briefly(argv: list[str], seconds: float) -> tuple[int | None, str]:
    """(exit code, stdout) of a program given ``seconds`` in all; (None, "") when it fails to start or overruns.

    It runs in a session of its own and the whole session is killed at the
    deadline: subprocess.run's timeout kills the program only, then waits
    for its output pipe, which a child it started may hold open for ever.
    """
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, errors="replace", start_new_session=True)
    except (OSError, ValueError):
        return None, ""
    try:
        stdout, _ = proc.communicate(timeout=seconds)
        return proc.returncode, stdout
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None, ""
