"""Starting `edge-run serve`: the port bound first, the uvicorn server, signals, the bundle's models."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import signal
import socket
import sys
import threading

from ..drift import Drift
from ..errors import UserError
from ..metrics import DeviceSources, Metrics, model_fidelity
from ..signals import STOP
from .access import Access
from .app import App
from .connection import make_protocol
from .pool import Limits, Service


def listen(host: str, port: int) -> socket.socket:
    """Bind before anything else, so a busy port is a one-line error and port 0 works."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", "pick another --port or --host") \
            from None
    sock.setblocking(False)
    return sock


def make_server(service: Service, access: Access, on_exit=None, verbose: bool = False):
    """A uvicorn Server running our App over h11; SIGTERM/SIGINT/SIGHUP drain and return (no re-raised signal)."""
    import uvicorn

    from ..openapi import openapi_document

    limits = service.limits
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.ERROR)  # bugs, not bad clients
    config = uvicorn.Config(
        App(service, access, openapi_document), http=make_protocol(service), interface="asgi3", lifespan="off",
        log_config=None, access_log=verbose, proxy_headers=False, server_header=False,
        headers=[("server", "edge-run")], timeout_keep_alive=max(1, int(min(5.0, limits.timeout))),
        # Our requests finish on their own deadline (head/body + queue wait share --timeout): this only bounds a
        # stuck inference. Then uvicorn cancels what is left.
        timeout_graceful_shutdown=int(math.ceil(limits.timeout)) + 1,
        h11_max_incomplete_event_size=16 * 1024)

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            # uvicorn re-raises the signal after its shutdown (exit -15); a drained server exits 0.
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            original = {sig: signal.signal(sig, self.handle_exit) for sig in STOP}  # SIGHUP too: drain, exit 0
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

        def handle_exit(self, sig, frame):
            service.draining.set()
            if on_exit is not None:
                on_exit()
            super().handle_exit(sig, frame)

    return Server(config)


def serve(bundle: str, host: str, port: int, limits: Limits, threads: int | None = None,
          delegate: str | None = None, verbose: bool = False, access: Access | None = None,
          delegate_options: list[str] | None = None, device: DeviceSources | None = None) -> int:
    """Serve a bundle until SIGTERM, SIGINT or SIGHUP; returns the exit code (0).

    device: where /metrics reads device health (default: /sys, vcgencmd on PATH).
    """
    from .. import load
    from ..bundle import open_bundle, sha256_file
    from ..interpreter import make_engine
    from ..model import Model
    from ..signals import checkpoint

    folder, manifest = open_bundle(bundle)  # verify before opening a port

    def load_models():
        first = load(folder, threads=threads, delegate=delegate, delegate_options=delegate_options)
        plain, used = str(folder / "model.tflite"), first.engine.model_path
        # the delegate the first one ended up with; the Edge TPU model again only if its delegate loads again
        rest = [Model(folder, manifest, make_engine(plain, first.engine.threads, first.engine.choice,
                                                    used if used != plain else None))
                for _ in range(limits.workers - 1)]
        return [first, *rest]

    target = manifest.get("target", {})
    # version: install.sh --prefix's name for this bundle (<name>-<12 hex of manifest.json's sha256>), so a fleet's
    # dashboard says which version each board serves.
    version = f"{manifest['name']}-{sha256_file(folder / 'manifest.json')[:12]}"
    metrics = Metrics({"model": manifest["name"], "target": target.get("name", ""), "version": version,
                       "source_sha256": manifest["source"]["sha256"][:16]}, model_fidelity(manifest), Drift(manifest),
                      device)
    service = Service(load_models, limits, manifest["name"], metrics)
    access = access or Access()
    access = dataclasses.replace(access, hosts=access.hosts | {host.lower().strip("[]")})
    checkpoint()  # a stop signal lost before the port opens (see signals.checkpoint)
    sock = listen(host, port)
    server = make_server(service, access, verbose=verbose)
    bound = sock.getsockname()
    print(f"edge-run serve: {manifest['name']} on http://{bound[0]}:{bound[1]} "
          f"(workers {limits.workers}, queue {limits.queue})", file=sys.stderr, flush=True)
    threading.Thread(target=service.warm_up, daemon=True).start()
    server.run(sockets=[sock])
    print("edge-run serve: stopped", file=sys.stderr, flush=True)
    return 0
