"""edge-run: run, benchmark, serve and describe a bundle on the device.

The argument parser and one thin command per verb; the work is in files
(input and output files), bench, describe, and server. Standard library,
numpy and a TFLite runtime only: this runs on the Pi.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
import re
import sys
from pathlib import Path

import numpy as np

from .bench import benchmark
from .describe import describe, engine_lines, engine_report
from .errors import UserError
from .files import check_output, read_input, write_npz
from .health import check_sample
from .native_logs import quiet_process
from .signals import exit_cleanly


MAX_THREADS = 256


def _check_threads(threads: int | None) -> None:
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise UserError(f"--threads must be 1..{MAX_THREADS}, found {threads}", "omit it to use the target's default")


def cmd_run(args) -> int:
    from . import load

    _check_threads(args.threads)
    out = check_output(args.output) if args.output else None
    model = load(args.bundle, threads=args.threads, delegate=args.delegate, delegate_options=args.delegate_option)
    outputs = model.predict(read_input(args.input, model), raw=args.raw)
    if out:
        write_npz(out, outputs)
        print(f"wrote {out}: " + ", ".join(f"{k} {v.shape} {v.dtype}" for k, v in outputs.items()))
    else:
        for key, value in outputs.items():
            print(f"{key} {value.shape} {value.dtype}")
            print(np.array2string(value, threshold=50, precision=5))
    return 0


def cmd_health(args) -> int:
    """The install-time health check: the bundle's stored sample gives the outputs the build got for it."""
    from . import load

    model = load(args.bundle, threads=args.threads, delegate=args.delegate, delegate_options=args.delegate_option)
    check_sample(model)
    print(f"health: ok: {model.name} reproduces its build's outputs for its stored sample")
    return 0


def cmd_bench(args) -> int:
    from . import load

    if not (1 <= args.runs <= 1_000_000 and 0 <= args.warmup <= 1_000_000):
        raise UserError(f"--runs must be 1..1000000 and --warmup 0..1000000, found {args.runs} and {args.warmup}")
    _check_threads(args.threads)
    model = load(args.bundle, threads=args.threads, delegate=args.delegate, delegate_options=args.delegate_option)
    result = benchmark(model, args.runs, args.warmup)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    lat = result["latency_ms"]
    print(f"model      {result['model']}")
    print(f"runtime    {result['runtime']}, {threads_text(result['threads'], args.threads, model.manifest)}")
    print(f"engine     {model.engine.summary()}")
    if result["fallback"]:
        print(f"fallback   {result['fallback']}")
    print(f"runs       {result['runs']} (+{result['warmup']} warm-up)")
    print(
        f"latency    min {lat['min']:.3f} ms  median {lat['median']:.3f} ms  "
        f"p90 {lat['p90']:.3f} ms  max {lat['max']:.3f} ms"
    )
    print(f"throughput {result['throughput_per_s']:.1f} inferences/s")
    print(f"peak RSS   {result['peak_rss_mb']:.1f} MB")
    return 0


def threads_text(used: int, asked: int | None, manifest: dict) -> str:
    """"N threads", and why when the target's default was more than this machine's cores."""
    default = manifest.get("target", {}).get("default_threads")
    threads = f"{used} thread{'s' * (used != 1)}"
    if asked is None and default and used < default:
        return f"{threads} (the target's default {default}, capped at the {used} core{'s' * (used != 1)} here)"
    return threads


def cmd_info(args) -> int:
    from .bundle import open_bundle

    _, manifest = open_bundle(args.bundle)
    _check_threads(args.threads)
    engine = engine_report(args.bundle, args.threads, args.delegate, args.delegate_option)
    if args.json:
        print(json.dumps({**manifest, "engine": engine}, indent=2))
    else:
        print("\n".join([describe(manifest), *engine_lines(engine)]))
    return 0


HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?$", re.I)
SERVE_RANGES = {  # flag: (lowest, highest) -- sane for a small board, and no overflow anywhere
    "port": (0, 65535), "workers": (1, 64), "queue": (0, 4096), "threads": (1, 256),
    "max_body": (1, 1 << 30), "max_batch": (1, 4096), "max_connections": (1, 10000),
}


def _check_host(value: str, flag: str) -> str:
    """An IP address or a DNS name, else a one-line error."""
    try:
        ipaddress.ip_address(value.strip("[]"))
        return value.strip("[]")
    except ValueError:
        pass
    if not HOSTNAME.match(value):
        raise UserError(f"{flag} must be an IP address or a host name, found {value!r}")
    return value


def _read_token(path: str) -> str:
    """The shared secret from --token-file: one line, at least 16 characters."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read --token-file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if len(token) < 16 or any(c.isspace() for c in token):
        raise UserError(f"--token-file {path} must hold one token of at least 16 characters without spaces",
                        "e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > FILE")
    return token


def serve_settings(args):
    """Every serve option checked, one line per mistake -> (host, Limits, Access)."""
    from .server import LOOPBACK_NAMES, Access, Limits

    for flag, (low, high) in SERVE_RANGES.items():
        value = getattr(args, flag)
        if value is not None and not low <= value <= high:
            raise UserError(f"--{flag.replace('_', '-')} must be between {low} and {high}, found {value}")
    if not (math.isfinite(args.timeout) and 0 < args.timeout <= 3600):
        raise UserError(f"--timeout must be a number of seconds above 0 and at most 3600, found {args.timeout}")
    host = _check_host(args.host, "--host")
    names = {_check_host(name, "--allow-host").lower().rstrip(".") for name in args.allow_host}
    token = _read_token(args.token_file) if args.token_file else None
    limits = Limits(max_body=args.max_body, workers=args.workers, queue=args.queue, timeout=args.timeout,
                    max_batch=args.max_batch, connections=args.max_connections)
    return host, limits, Access(hosts=frozenset(LOOPBACK_NAMES | names), token=token, metrics_open=args.metrics_open)


def _found(path: Path) -> str:
    return "a folder" if path.is_dir() else "a file" if path.exists() else "nothing"


def device_settings(args):
    """--sysfs and --vcgencmd checked -> DeviceSources, where /metrics reads device health."""
    import shutil

    from .metrics import DeviceSources

    sysfs = Path(args.sysfs)
    if not sysfs.is_dir():
        raise UserError(f"--sysfs {sysfs}: expected the folder of a sysfs tree (thermal zones under "
                        f"class/thermal), found {_found(sysfs)} there",
                        "pass the folder where the host's /sys is mounted (e.g. --sysfs /host/sys), or omit it "
                        "for /sys")
    vcgencmd = None
    if args.vcgencmd is not None:
        vcgencmd = shutil.which(args.vcgencmd)
        if vcgencmd is None:
            where = _found(Path(args.vcgencmd)) if os.sep in args.vcgencmd else "no such program on PATH"
            where += " that is not executable" if where == "a file" else ""
            raise UserError(f"--vcgencmd {args.vcgencmd}: expected an executable program, found {where}",
                            "pass the path of the board's vcgencmd (e.g. /usr/bin/vcgencmd), or omit it to use "
                            "the one on PATH")
    return DeviceSources(sysfs=os.path.abspath(sysfs), vcgencmd=os.path.abspath(vcgencmd) if vcgencmd else None)


def cmd_serve(args) -> int:
    from .server import serve

    host, limits, access = serve_settings(args)
    device = device_settings(args)
    return serve(args.bundle, host, args.port, limits, threads=args.threads, delegate=args.delegate,
                 delegate_options=args.delegate_option, verbose=args.verbose, access=access, device=device)


def _ascii(kind):
    """An argparse type: ``kind`` (int or float) of ASCII text only.

    int() and float() also read other scripts' digits ('\u0661\u0662' is 12) and underscores: a flag is
    written in ASCII, and its range is checked where it is used (serve_settings, cmd_bench).
    """
    def parse(text: str):
        if not (text.isascii() and text.strip() == text and "_" not in text):
            raise argparse.ArgumentTypeError(f"expected a number in ASCII digits, found {text!r}")
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if kind is int else 'a number'}, "
                                             f"found {text!r}") from None

    parse.__name__ = kind.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-run", description="Run an edgepack bundle on this device.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("bundle", help="bundle folder or .tar.gz")
        p.add_argument("--threads", type=_ascii(int), default=None, help="CPU threads (default: the target's)")
        p.add_argument("--delegate", default=None, metavar="NAME|PATH",
                       help="xnnpack, cpu (reference kernels), edgetpu, or the path of an external delegate "
                            "library (.so, e.g. an NPU's); default: the target's. On failure: the CPU with XNNPACK")
        p.add_argument("--delegate-option", action="append", default=[], metavar="KEY=VALUE",
                       help="an option for the external delegate library (repeatable)")

    run = sub.add_parser("run", help="run the model on an input file")
    common(run)
    run.add_argument("--input", required=True, help=".npy (one-input model) or .npz keyed by input name")
    run.add_argument("--output", help="write outputs to this .npz (keyed by output name)")
    run.add_argument("--raw", action="store_true", help="feed and return the quantized TFLite tensors as they are")
    run.set_defaults(func=cmd_run)

    health = sub.add_parser("health", help="run the bundle's stored sample; fail unless it gives the build's outputs")
    common(health)
    health.set_defaults(func=cmd_health)

    bench = sub.add_parser("bench", help="measure latency, throughput and memory")
    common(bench)
    bench.add_argument("--runs", type=_ascii(int), default=100)
    bench.add_argument("--warmup", type=_ascii(int), default=10)
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=cmd_bench)

    srv = sub.add_parser("serve", help="serve the model over HTTP (Open Inference Protocol v2, /metrics)")
    common(srv)
    srv.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for the LAN)")
    srv.add_argument("--port", type=_ascii(int), default=8080, help="0 picks a free port")
    srv.add_argument("--workers", type=_ascii(int), default=1, help="interpreters running requests at once")
    srv.add_argument("--queue", type=_ascii(int), default=8, help="requests that may wait beyond those (then 503)")
    srv.add_argument("--timeout", type=_ascii(float), default=10.0,
                     help="seconds to read a request (head, then body: each one total deadline) and to wait in the "
                          "queue; also how long SIGTERM waits for requests in flight")
    srv.add_argument("--max-body", type=_ascii(int), default=16 * 1024 * 1024,
                     help="largest request body in bytes (413)")
    srv.add_argument("--max-batch", type=_ascii(int), default=16, help="most samples one request may carry (413)")
    srv.add_argument("--max-connections", type=_ascii(int), default=64, help="open connections at once (then 503)")
    srv.add_argument("--token-file", help="require 'Authorization: Bearer TOKEN' (the file's one line) on "
                                          "/v2/models/... and /metrics; health, /v2 and /v2/openapi.json stay open")
    srv.add_argument("--metrics-open", action="store_true",
                     help="with --token-file, leave /metrics open (a Prometheus that scrapes without the token)")
    srv.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                     help="a Host name clients use to reach this server (repeatable; localhost and IP addresses "
                          "are always accepted; others are refused against DNS rebinding)")
    srv.add_argument("--sysfs", default="/sys", metavar="PATH",
                     help="the sysfs tree /metrics reads the SoC temperature from (class/thermal/thermal_zone*/temp; "
                          "default /sys; e.g. /host/sys in a container that mounts the host's /sys there)")
    srv.add_argument("--vcgencmd", default=None, metavar="PATH",
                     help="the Raspberry Pi's vcgencmd, run as 'vcgencmd get_throttled' at each /metrics scrape "
                          "for the throttling metrics (default: vcgencmd on PATH, if any)")
    srv.set_defaults(func=cmd_serve)

    info = sub.add_parser("info", help="describe the bundle, and which delegate runs it here")
    common(info)
    info.add_argument("--json", action="store_true", help="the manifest, with an added \"engine\" report")
    info.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    quiet_process()  # before a runtime loads (tensorflow.lite's, on a workstation, logs through absl)
    args = build_parser().parse_args(argv)
    try:
        with exit_cleanly():  # before any bundle is unpacked: a signal never leaves its temp folder behind
            return args.func(args)
    except UserError as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
