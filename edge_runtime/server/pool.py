"""The model pool behind `edge-run serve`: its limits, its interpreters, readiness.

Interpreters are not thread-safe: each worker owns one, taken from a queue
for one inference and put back after it. A request waits for one at most
until its deadline (503 then), so a flood queues up to ``Limits.queue``
requests and no further.
"""

from __future__ import annotations

import dataclasses
import queue
import sys
import threading
import time

import numpy as np

from ..metrics import Metrics
from ..protocol import DEFAULT_MAX_BATCH, HttpError


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
