"""Prometheus metrics for `edge-run serve`, in the text exposition format.

Standard library only. Device health (SoC temperature, throttling) is read
when the board exposes it and simply absent otherwise.
"""

from __future__ import annotations

import bisect
import glob
import math
import shutil
import subprocess
import threading

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def escape_label(value) -> str:
    """A label value as the text format spells it: backslash, double quote and newline escaped.

    Unescaped, a newline in a value (a model or output name) ends the sample
    line and corrupts the whole exposition.
    """
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in sorted(labels.items())) + "}"


def _number(value: float) -> str:
    """A sample value as the exposition format spells it (NaN, +Inf, -Inf)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def model_fidelity(manifest: dict) -> list[str]:
    """What the build measured and decided about the model's fidelity, as gauges.

    Fixed for the life of the server (they come from the verified manifest),
    so a dashboard can alert on a model shipped below the bar. Bundles built
    before the precision ladder are full int8 with no recorded bar: no
    edge_run_model_fidelity_ok then, rather than a guess.
    """
    from .model import precision_report

    prec = precision_report(manifest)
    info = {"precision": prec.get("chosen", "int8"), "step": prec.get("step", "")} if prec else {"precision": "int8"}
    lines = [
        "# HELP edge_run_model_precision_info The precision the build chose, and its precision-ladder step.",
        "# TYPE edge_run_model_precision_info gauge",
        f"edge_run_model_precision_info{_labels(info)} 1",
    ]
    if prec:
        lines += [
            "# HELP edge_run_model_fidelity_ok 1 when the model holds the fidelity bar on held-out samples, "
            "0 when it was shipped below it (--accept-low-fidelity).",
            "# TYPE edge_run_model_fidelity_ok gauge",
            f"edge_run_model_fidelity_ok {int(bool(prec.get('meets_bar')))}",
        ]
    outputs = {name: m["cosine"] for name, m in ((manifest.get("fidelity") or {}).get("outputs") or {}).items()
               if isinstance(m.get("cosine"), (int, float))}
    if outputs:
        lines += [
            "# HELP edge_run_model_fidelity_cosine Mean cosine of each output against float ONNX on held-out "
            "samples, measured by the build.",
            "# TYPE edge_run_model_fidelity_cosine gauge",
        ]
        lines += [f"edge_run_model_fidelity_cosine{_labels({'output': name})} {_number(cosine)}"
                  for name, cosine in outputs.items()]
    return lines


class Histogram:
    def __init__(self):
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str, labels: dict) -> list[str]:
        out, running = [], 0
        for bound, count in zip(BUCKETS, self.counts):
            running += count
            out.append(f"{name}_bucket{_labels({**labels, 'le': repr(bound)})} {running}")
        out.append(f"{name}_bucket{_labels({**labels, 'le': '+Inf'})} {self.n}")
        out.append(f"{name}_sum{_labels(labels)} {self.total}")
        out.append(f"{name}_count{_labels(labels)} {self.n}")
        return out


class Metrics:
    """Thread-safe counters, gauges and histograms of one server."""

    def __init__(self, model_info: dict, model_lines: list[str] | None = None):
        self.lock = threading.Lock()
        self.model_info = model_info
        self.model_lines = list(model_lines or [])  # model_fidelity(manifest): fixed at start
        self.engine: dict = {}  # Engine.report() once the model is loaded
        self.requests: dict[tuple, int] = {}
        self.request_seconds: dict[str, Histogram] = {}
        self.inference = Histogram()
        self.in_flight = 0
        self.rejected = 0

    def request_done(self, endpoint: str, code: int, seconds: float) -> None:
        with self.lock:
            key = (endpoint, str(code))
            self.requests[key] = self.requests.get(key, 0) + 1
            self.request_seconds.setdefault(endpoint, Histogram()).observe(seconds)

    def inference_done(self, seconds: float) -> None:
        with self.lock:
            self.inference.observe(seconds)

    def render(self) -> str:
        with self.lock:
            lines = [
                "# HELP edge_run_requests_total HTTP requests by endpoint and status code.",
                "# TYPE edge_run_requests_total counter",
            ]
            for (endpoint, code), n in sorted(self.requests.items()):
                lines.append(f"edge_run_requests_total{_labels({'endpoint': endpoint, 'code': code})} {n}")
            lines += [
                "# HELP edge_run_request_duration_seconds Time to answer an HTTP request.",
                "# TYPE edge_run_request_duration_seconds histogram",
            ]
            for endpoint, hist in sorted(self.request_seconds.items()):
                lines += hist.lines("edge_run_request_duration_seconds", {"endpoint": endpoint})
            lines += [
                "# HELP edge_run_inference_duration_seconds Time in the interpreter per inference.",
                "# TYPE edge_run_inference_duration_seconds histogram",
                *self.inference.lines("edge_run_inference_duration_seconds", {}),
                "# HELP edge_run_in_flight_requests Requests being handled now.",
                "# TYPE edge_run_in_flight_requests gauge",
                f"edge_run_in_flight_requests {self.in_flight}",
                "# HELP edge_run_model_info The model being served.",
                "# TYPE edge_run_model_info gauge",
                f"edge_run_model_info{_labels(self.model_info)} 1",
                *self.model_lines,
            ]
            lines += delegate_lines(self.engine)
        lines += device_health()
        return "\n".join(lines) + "\n"


def _gauge(name: str, text: str, labels: dict, value) -> list[str]:
    return [f"# HELP {name} {text}", f"# TYPE {name} gauge", f"{name}{_labels(labels)} {value}"]


def delegate_lines(engine: dict) -> list[str]:
    """Which delegate runs the model and on which model file, why not the wanted one, and its share of the graph."""
    if not engine:
        return []
    info = {"delegate": engine["delegate"], "fallback": str(bool(engine["fallback"])).lower(),
            "library": engine.get("delegate_library") or "", "model_file": engine.get("model_file", ""),
            "reason": engine["fallback"] or ""}
    lines = _gauge("edge_run_delegate_info", "The delegate in use; fallback=\"true\" when the wanted one failed, "
                   "and why.", info, 1)
    labels = {"delegate": engine["delegate"]}
    if engine.get("delegate_nodes") is not None:
        lines += _gauge("edge_run_delegate_nodes", "Nodes of the model's graph the delegate took.",
                        labels, engine["delegate_nodes"])
        lines += _gauge("edge_run_delegate_partitions", "Delegate kernels the graph was split into.",
                        labels, engine["partitions"])
    if engine.get("total_nodes") is not None:
        lines += _gauge("edge_run_model_nodes", "Nodes of the model's graph.", {}, engine["total_nodes"])
    return lines


def device_health() -> list[str]:
    """SoC temperature and throttling, where the board tells (else nothing)."""
    lines = []
    temps = []
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*/temp")):
        try:
            with open(zone, encoding="ascii") as f:
                temps.append((zone.split("/")[-2], int(f.read().strip()) / 1000.0))
        except (OSError, ValueError):
            continue
    if temps:
        lines += ["# HELP edge_run_soc_temperature_celsius SoC temperature per thermal zone.",
                  "# TYPE edge_run_soc_temperature_celsius gauge"]
        lines += [f"edge_run_soc_temperature_celsius{_labels({'zone': z})} {t}" for z, t in temps]
    vcgencmd = shutil.which("vcgencmd")
    if vcgencmd:
        try:
            out = subprocess.run([vcgencmd, "get_throttled"], capture_output=True, text=True, timeout=2).stdout
            value = int(out.strip().split("=")[1], 16)
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            return lines
        lines += [
            "# HELP edge_run_throttled_state Raspberry Pi throttling bits (vcgencmd get_throttled).",
            "# TYPE edge_run_throttled_state gauge",
            f"edge_run_throttled_state {value}",
            "# HELP edge_run_throttled_now Whether the SoC is throttled right now (bit 2).",
            "# TYPE edge_run_throttled_now gauge",
            f"edge_run_throttled_now {int(bool(value & 0x4))}",
        ]
    return lines
