"""Input drift and saturation for `edge-run serve`'s /metrics.

The build keeps the calibration set's per-channel mean and std in the
manifest (``input_statistics``, packager.input_stats). The server keeps an
exponential moving average of the same means over live requests, and
exports how far they have moved, in calibration standard deviations:

    drift = mean over channels of |live mean - calibration mean| / calibration std

Near 0 for inputs like the calibration set; 1 means inputs moved by a
whole standard deviation, where an int8 model calibrated on the old range
starts clipping and losing accuracy without any error. It costs one mean per
channel and one range count per request: 0.08 ms for a 1x3x224x224 image,
8 us for the digits input (x86-64 host, loaded; a Pi's cores are slower).

Saturation counts input values outside what the int8 input quantization can
represent, (qmin - zero_point) * scale to (qmax - zero_point) * scale: those
are clipped on the way into the model, whatever their size.
"""

from __future__ import annotations

import threading

import numpy as np

ALPHA = 0.05  # weight of each request in the moving average: ~the last 20 requests count
# A request's channel means are clipped to this many calibration std of the calibration means (NaN means count
# as no change), and the average starts at the calibration means: one request moves the score by at most
# ALPHA * CLIP = 0.4, and a flood of hostile ones keeps it at most CLIP. (One request of 3e38-valued inputs
# set the score to 5e37, still 3e35 a hundred normal requests later.)
CLIP = 8.0


def representable(spec: dict) -> tuple[float, float] | None:
    """The float range an integer-quantized input carries without clipping; None for a float input."""
    scale = spec.get("scale", 0.0)
    tflite = np.dtype(spec["tflite_dtype"])
    if not scale or tflite.kind not in "iu":
        return None
    info, zero = np.iinfo(tflite), spec.get("zero_point", 0)
    return (int(info.min) - zero) * scale, (int(info.max) - zero) * scale


class InputWatch:
    """Live statistics of one input against its calibration statistics (None when the bundle has none)."""

    def __init__(self, spec: dict, stats: dict | None):
        self.name = spec["name"]
        self.stats = stats
        if stats is not None:
            self.axis = stats["channel_axis"]
            if self.axis is not None and spec.get("format") == "image-uint8":
                self.axis = -1  # camera frames come as (H, W, C) or (N, H, W, C): channels are last either way
            # One sample, N along the batch axis or N stacked in front (edge_runtime.tensors): as samples
            # of shape[1:], the channel axis is where the statistics found it, whatever the form.
            self.tail = tuple(spec["shape"][1:]) if self.axis is not None and self.axis >= 0 else None
            self.calib_mean = np.asarray(stats["mean"], np.float64)
            std = np.asarray(stats["std"], np.float64)
            # A channel constant in calibration (std 0) would make any change infinite drift: measure it against
            # the input's typical spread instead.
            self.calib_std = np.maximum(std, max(float(std.mean()) * 1e-3, 1e-12))
        self.range = representable(spec)
        self.live_mean: np.ndarray | None = None
        self.values = 0
        self.saturated = 0

    def observe(self, x: np.ndarray) -> None:
        """Fold one request's batch in (called with the lock held; the model has accepted its shape)."""
        if x.size == 0:  # nothing to average; an empty mean would poison the moving average with NaN
            return
        if self.stats is not None:
            if self.tail is not None:
                x = x.reshape(-1, *self.tail)
            with np.errstate(over="ignore", invalid="ignore"):  # inf - inf in a sum: NaN, dealt with below
                if self.axis is None:
                    mean = np.array([x.mean(dtype=np.float64)])
                else:
                    mean = x.mean(axis=tuple(a for a in range(x.ndim) if a != self.axis), dtype=np.float64)
            previous = self.calib_mean if self.live_mean is None else self.live_mean
            reach = CLIP * self.calib_std
            mean = np.clip(np.where(np.isnan(mean), previous, mean), self.calib_mean - reach, self.calib_mean + reach)
            self.live_mean = (1 - ALPHA) * previous + ALPHA * mean
        if self.range is not None:
            low, high = self.range
            self.values += x.size
            self.saturated += int(np.count_nonzero((x < low) | (x > high)))

    def score(self) -> float | None:
        if self.stats is None or self.live_mean is None:
            return None
        return float(np.mean(np.abs(self.live_mean - self.calib_mean) / self.calib_std))


class Drift:
    """Every input's watch, shared by the request threads of one server."""

    def __init__(self, manifest: dict):
        stats = manifest.get("input_statistics") or {}
        self.inputs = {spec["name"]: InputWatch(spec, stats.get(spec["name"])) for spec in manifest["inputs"]}
        self.lock = threading.Lock()

    def observe(self, feeds: dict[str, np.ndarray]) -> None:
        with self.lock:
            for name, x in feeds.items():
                watch = self.inputs.get(name)
                if watch is not None:
                    watch.observe(x)

    def families(self) -> list:
        """Gauges and counters for the metrics registry, read at scrape time."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        score = GaugeMetricFamily("edge_run_input_drift_score", "Mean over channels of |live mean - calibration "
                                  "mean| / calibration std; live means are a moving average over recent requests.",
                                  labels=["input"])
        values = CounterMetricFamily("edge_run_input_values", "Input values received (int8-quantized inputs).",
                                     labels=["input"])
        saturated = CounterMetricFamily("edge_run_input_saturated_values", "Input values outside the range the "
                                        "int8 input quantization represents (clipped).", labels=["input"])
        with self.lock:
            for name, watch in self.inputs.items():
                if (value := watch.score()) is not None:
                    score.add_metric([name], value)
                if watch.range is not None:
                    values.add_metric([name], watch.values)
                    saturated.add_metric([name], watch.saturated)
        return [family for family in (score, values, saturated) if family.samples]
