"""edge-run: run, benchmark and describe a bundle on the device.

Standard library, numpy and a TFLite runtime only: this runs on the Pi.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
import re
import resource
import sys
import time
from pathlib import Path

import numpy as np

from .errors import UserError
from .images import FORMATS_TEXT, IMAGE_SUFFIXES, open_image
from .model import fixed_inputs, precision_report
from .tensors import feeds_from_numpy


def _read_input(path: str, model) -> dict[str, np.ndarray]:
    if not Path(path).is_file():
        raise UserError(f"input file {path} does not exist", "pass a .npy (one-input model) or .npz")
    if Path(path).suffix.lower() in IMAGE_SUFFIXES:
        return _read_image(Path(path), model)
    return feeds_from_numpy(path, model.inputs, path)


def _read_image(path: Path, model) -> dict[str, np.ndarray]:
    """An image file for a bundle that takes camera frames: decoded as it is, never resized or converted.

    A frame of another size, or with another number of channels (greyscale
    for an RGB model, RGBA), is refused with what the bundle takes: the
    camera pipeline on the device should deliver that, and a silent resize
    here would hide that it does not.

    The size the file declares is compared before a pixel is decoded: a PNG
    of 180 KB can declare 7900x7900 pixels and took 660 MB to decode, more
    than a 512 MB board has, only to be refused for its size afterwards.
    """
    from .tensors import IMAGE_FORMAT, frame_shape, frames

    images = [s for s in model.inputs if s.get("format") == IMAGE_FORMAT]
    if len(model.inputs) != 1 or not images:
        raise UserError(f"{path} is an image file; {model.name} takes "
                        + ", ".join(f"{s['name']} {s['dtype']} {s['shape']}" for s in model.inputs)
                        + ("" if images else " (tensors, not camera frames)"),
                        "pass a .npy or .npz, or build the bundle with --input-format image-uint8")
    spec = images[0]
    _, height, width, channels = spec["shape"]

    def check(img):
        if (img.height, img.width) != (height, width):
            bands = "" if img.mode == "P" else f"x{len(img.getbands())}"
            raise UserError(f"{path}: input '{spec['name']}' takes frames of {frame_shape(spec)}, found "
                            f"{img.height}x{img.width}{bands} ({path.stat().st_size:,}-byte {img.format} file; "
                            "not decoded)",
                            f"resize the frames to {width}x{height} (width x height) before, e.g. PIL's "
                            "Image.resize, or ask the camera for that size")

    with open_image(path, str(path), f"pass a {FORMATS_TEXT} file", check) as img:
        mode = img.mode
        if mode == "P":  # a palette indexes colours: decoding it gives the RGB(A) pixels
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        elif mode == "1":
            img = img.convert("L")
        pixels = np.asarray(img)
    if pixels.dtype != np.uint8:
        raise UserError(f"{path} holds {mode} pixels ({pixels.dtype}), not 8-bit",
                        "save it as an 8-bit RGB or greyscale image")
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    if pixels.shape[2] != channels:
        raise UserError(f"{path} is a {img.mode} image ({pixels.shape[2]} channel(s)); {model.name} takes "
                        f"{channels} ({'RGB' if channels == 3 else 'greyscale'})",
                        f"convert it first, e.g. Image.open(f).convert('{'RGB' if channels == 3 else 'L'}')")
    frames(pixels, spec, str(path))  # the size, said with the file's name
    return {spec["name"]: pixels}


MAX_THREADS = 256


def _check_threads(threads: int | None) -> None:
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise UserError(f"--threads must be 1..{MAX_THREADS}, found {threads}", "omit it to use the target's default")


def _check_output(path: str) -> Path:
    """--output names a file we can write: checked before the model runs, so a run never ends in a traceback."""
    out = Path(path)
    parent = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise UserError(f"--output {out} is a folder", "name the .npz file to write, e.g. --output y.npz")
    if not parent.is_dir():
        raise UserError(f"--output {out}: the folder {parent} does not exist", "create it, or write elsewhere")
    if not os.access(parent, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UserError(f"--output {out} cannot be written here (permission denied)", "write elsewhere")
    return out


def _write_npz(out: Path, outputs: dict[str, np.ndarray]) -> None:
    """Written whole or not at all: a temp file beside it, renamed into place."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.npz")  # savez appends .npz otherwise
    try:
        np.savez(tmp, **outputs)
        os.replace(tmp, out)
    except OSError as exc:
        raise UserError(f"could not write --output {out} ({exc.strerror or exc})", "free space or write elsewhere") from None
    finally:
        tmp.unlink(missing_ok=True)


def cmd_run(args) -> int:
    from . import load

    _check_threads(args.threads)
    out = _check_output(args.output) if args.output else None
    model = load(args.bundle, threads=args.threads, delegate=args.delegate, delegate_options=args.delegate_option)
    outputs = model.predict(_read_input(args.input, model), raw=args.raw)
    if out:
        _write_npz(out, outputs)
        print(f"wrote {out}: " + ", ".join(f"{k} {v.shape} {v.dtype}" for k, v in outputs.items()))
    else:
        for key, value in outputs.items():
            print(f"{key} {value.shape} {value.dtype}")
            print(np.array2string(value, threshold=50, precision=5))
    return 0


def cmd_health(args) -> int:
    """The install-time health check: the bundle's stored sample gives the outputs the build got for it."""
    from . import load
    from .arrays import load_arrays

    model = load(args.bundle, threads=args.threads, delegate=args.delegate, delegate_options=args.delegate_option)
    health, files = model.manifest.get("health"), model.manifest["files"]
    if not (isinstance(health, dict) and health.get("sample") in files and health.get("expected") in files
            and isinstance(health.get("tolerance"), dict)):
        raise UserError(f"{model.name} holds no health sample (its build predates them)",
                        "rebuild it with this edgepack, or install it without --prefix")
    outputs = model.predict(_read_input(str(model.folder / health["sample"]), model))
    expected = load_arrays(str(model.folder / health["expected"]), 1 << 26, "health sample", "rebuild the bundle")
    for spec in model.outputs:
        name = spec["name"]
        tolerance = health["tolerance"].get(name)
        want = np.asarray(expected[name]) if name in expected else None
        if want is None or not isinstance(tolerance, (int, float)):
            raise UserError(f"health check: no expected value or tolerance for output '{name}'", "rebuild the bundle")
        got = outputs[name]
        if got.shape != want.shape:
            raise UserError(f"health check: output '{name}' has shape {list(got.shape)}, expected {list(want.shape)}",
                            "this version does not work on this device: keep the running one")
        diff = float(np.nan_to_num(np.abs(got.astype(np.float64) - want), nan=np.inf).max()) if got.size else 0.0
        if not diff <= tolerance:
            raise UserError(f"health check: output '{name}' differs from the build's by {diff:.6g} "
                            f"(tolerance {tolerance:.6g})",
                            "this version does not work on this device: keep the running one")
    print(f"health: ok: {model.name} reproduces its build's outputs for its stored sample")
    return 0


def _peak_rss_mb() -> float:
    """Peak resident memory of this process, in MB.

    VmHWM belongs to this process image; ru_maxrss survives exec and would
    report a bigger parent's peak (e.g. a Python with TensorFlow that
    started us).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def benchmark(model, runs: int, warmup: int) -> dict:
    """Latency of the interpreter on quantized zero-point-ish random inputs."""
    rng = np.random.default_rng(0)
    tensors = []
    for spec in model.inputs:
        dtype = np.dtype(spec["tflite_dtype"])
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            lo, hi = (max(info.min, -128), min(info.max, 127)) if np.dtype(spec["dtype"]).kind == "f" else (0, 1)
            tensors.append(rng.integers(lo, hi + 1, spec["tflite_shape"]).astype(dtype))
        else:
            tensors.append(rng.standard_normal(spec["tflite_shape"]).astype(dtype))
    for _ in range(warmup):
        model.invoke(tensors)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.invoke(tensors)
        times.append((time.perf_counter() - start) * 1000.0)
    arr = np.array(times)
    engine = model.engine
    return {
        "model": model.name,
        "runtime": f"{engine.runtime} {engine.runtime_version}",
        **engine.report(),
        "threads": engine.threads,
        "runs": runs,
        "warmup": warmup,
        "latency_ms": {
            "min": float(arr.min()),
            "median": float(np.median(arr)),
            "p90": float(np.percentile(arr, 90)),
            "max": float(arr.max()),
        },
        "throughput_per_s": float(1000.0 / np.median(arr)),
        "peak_rss_mb": _peak_rss_mb(),
    }


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
    print(f"runtime    {result['runtime']}, {result['threads']} threads")
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


BAR_TERMS = (("min_cosine", "cosine"), ("min_top1", "top-1"), ("min_f1", "F1"), ("min_channel_cosine", "worst channel"))


def _bar_text(bar: dict | None) -> str:
    """The fidelity bar in words; None criteria were switched off at build time."""
    if not bar:
        return "bar not recorded"
    terms = [f"{word} >= {bar[key]:g}" for key, word in BAR_TERMS if bar.get(key) is not None]
    return ", ".join(terms) if terms else "every criterion switched off"


def _precision_lines(manifest: dict) -> list[str]:
    """The chosen precision and whether it holds the bar; loud when it was shipped below it.

    Bundles built before the precision ladder have no such section: they are
    full int8 (the only thing edgepack built then) with no recorded bar.
    """
    prec = precision_report(manifest)
    if not prec:
        return ["precision  int8 (built before the precision ladder; fidelity bar not recorded)"]
    verdict = "holds the bar" if prec.get("meets_bar") else "BELOW the bar"
    lines = [f"precision  {prec.get('chosen')} (step '{prec.get('step')}'; requested {prec.get('requested')}): "
             f"{verdict} ({_bar_text(prec.get('bar'))})"]
    if prec.get("why"):
        lines.append(f"           why: {prec['why']}")
    if not prec.get("meets_bar"):
        how = ", shipped with --accept-low-fidelity" if prec.get("accepted_low_fidelity") else ""
        lines.append(f"WARNING    below the fidelity bar{how}: {'; '.join(prec.get('shortfalls') or []) or '?'}")
    lines += _ladder_table(prec.get("steps") or [], prec.get("step"))
    return lines


def _figure(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _ladder_table(steps: list[dict], chosen: str | None) -> list[str]:
    """Every precision step the build tried, one row each; '*' marks the one shipped."""
    if not steps:
        return []
    width = max(4, *(len(str(s.get("step"))) for s in steps))
    lines = [f"ladder     {'  step':<{width + 2}} {'precision':<10} {'cosine':>7} {'worst ch':>8} {'top-1':>6} "
             f"{'F1':>5} {'float ops':>9} {'size KB':>8} {'ms':>8} {'partitions':>10}  verdict"]
    for s in steps:
        mark = "* " if s.get("step") == chosen else "  "
        verdict = "holds the bar" if s.get("meets_bar") else "below the bar"
        if s.get("meets_bar") and "slower than float32" in (s.get("note") or ""):
            verdict += ", slower than float32"  # the ladder's note: why a step that held was passed over
        size = None if s.get("size") is None else s["size"] / 1024
        lines.append(
            f"           {mark}{str(s.get('step')):<{width}} {str(s.get('precision')):<10} "
            f"{_figure(s.get('cosine'), '.4f'):>7} {_figure(s.get('channel_cosine'), '.3f'):>8} "
            f"{_figure(s.get('top1'), '.1%'):>6} {_figure(s.get('f1'), '.3f'):>5} "
            f"{_figure(s.get('float_ops'), 'd'):>9} {_figure(size, '.0f'):>8} "
            f"{_figure(s.get('latency_ms'), '.3f'):>8} {_figure(s.get('xnnpack_partitions'), 'd'):>10}  {verdict}"
        )
    return lines


def _fidelity_lines(manifest: dict) -> list[str]:
    """Held-out fidelity per output: float ONNX against the model in the bundle (whatever its precision)."""
    fid = manifest.get("fidelity", {})
    if not fid:
        return []
    chosen = (manifest.get("precision") or {}).get("chosen", "int8")
    lines = [f"fidelity   on {fid.get('samples')} held-out samples, float ONNX vs bundle ({chosen}):"]
    for name, m in fid.get("outputs", {}).items():
        extra = ""
        if m.get("worst_channel"):
            ch = m["worst_channel"]
            extra += f"  worst ch {ch['cosine']:.4f} [{ch['index']}, axis {ch['axis']}]"
        if m.get("top1_agreement") is not None:
            extra += f"  top1 {m['top1_agreement'] * 100:.1f}%"
        f1 = (m.get("score_map") or {}).get("f1")
        if f1 is not None:
            extra += f"  F1 {f1:.3f}"
        lines.append(
            f"           {name}: cosine {m['cosine']:.5f}  max|err| {m['max_abs_error']:.5g}  "
            f"mean|err| {m['mean_abs_error']:.5g}{extra}"
        )
    return lines


def describe(manifest: dict) -> str:
    """A human summary of a manifest (shared with `edgepack inspect`)."""
    precision_report(manifest)  # checked by type first: every section below reads it
    lines = [
        f"bundle     {manifest['name']} (edgepack {manifest.get('edgepack_version')}, {manifest.get('created_at')})",
        f"target     {manifest['target']['name']}: {manifest['target']['human_name']}",
        f"source     {manifest['source']['file']} sha256 {manifest['source']['sha256'][:16]}...",
    ]
    for kind in ("inputs", "outputs"):
        for s in manifest[kind]:
            q = f" scale {s['scale']:.6g} zp {s['zero_point']}" if s.get("scale") else ""
            lines.append(
                f"{kind[:-1]:<10} {s['name']} {s['shape']} {s['dtype']} -> tflite {s['tflite_shape']} "
                f"{s['tflite_dtype']} perm {s['permutation']}{q}"
            )
            if s.get("format"):
                from .tensors import pixel_mode

                norm = s.get("normalisation", {})
                how = {"copy": "copied as they are", "flip": "copied, top bit flipped",
                       "quantize": "quantized on the way in"}[pixel_mode(s)]
                lines.append(f"           camera frames: uint8 HxWxC {s['shape'][1]}x{s['shape'][2]}x{s['shape'][3]} "
                             f"({how}); (x/255 - {norm.get('mean')}) / {norm.get('std')} runs in the model")
    for name, value in fixed_inputs(manifest).items():
        lines.append(f"fixed      {name} = {value.tolist()} (set when built; no other value)")
    if "conversion" in manifest:
        changes = manifest.get("preparation", {}).get("changes", [])
        lines.append(f"converted  by strategy {manifest['conversion']['strategy']} "
                     f"({len(manifest['conversion']['attempts'])} tried); graph preparation: {len(changes)} change(s)")
        lines.extend(f"           {c}" for c in changes)
    lines += _precision_lines(manifest)
    lines += _fidelity_lines(manifest)
    ops = manifest.get("ops", {})
    if ops:
        counts = ", ".join(f"{op}/{dt} {n}" for op, per in sorted(ops["counts"].items()) for dt, n in sorted(per.items()))
        lines.append(f"ops        {ops['total']} ops: {counts}")
        floats = ops.get("float_ops", [])
        lines.append(
            "float ops  none" if not floats else "float ops  " + "; ".join(f"{f['type']} ({f['output']})" for f in floats)
        )
    return "\n".join(lines)


def _engine_report(args) -> dict:
    """Load the model as run, bench and serve would: which delegate runs it, its share, why not the one wanted.

    A bundle is still described when its model cannot be loaded here (no
    runtime on a workstation, say): the report then says why.
    """
    from . import load

    _check_threads(args.threads)
    try:
        engine = load(args.bundle, threads=args.threads, delegate=args.delegate,
                      delegate_options=args.delegate_option).engine
    except UserError as exc:
        if "--delegate" in str(exc):  # a mistake on this command line, not a property of the device
            raise
        return {"loaded": False, "error": str(exc)}
    return {"loaded": True, "runtime": f"{engine.runtime} {engine.runtime_version}", "threads": engine.threads,
            **engine.report(), "summary": engine.summary()}


def engine_lines(report: dict) -> list[str]:
    if not report["loaded"]:
        return [f"engine     not loaded here: {report['error']}"]
    lines = [f"engine     {report['runtime']}, {report['threads']} threads, {report['summary']}"]
    if report["fallback"]:
        lines.append(f"fallback   {report['fallback']}")
    return lines


def cmd_info(args) -> int:
    from .bundle import open_bundle

    _, manifest = open_bundle(args.bundle)
    engine = _engine_report(args)
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
    return host, limits, Access(hosts=frozenset(LOOPBACK_NAMES | names), token=token)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-run", description="Run an edgepack bundle on this device.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("bundle", help="bundle folder or .tar.gz")
        p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the target's)")
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
    bench.add_argument("--runs", type=int, default=100)
    bench.add_argument("--warmup", type=int, default=10)
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=cmd_bench)

    srv = sub.add_parser("serve", help="serve the model over HTTP (Open Inference Protocol v2, /metrics)")
    common(srv)
    srv.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for the LAN)")
    srv.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    srv.add_argument("--workers", type=int, default=1, help="interpreters running requests at once")
    srv.add_argument("--queue", type=int, default=8, help="requests that may wait beyond those (then 503)")
    srv.add_argument("--timeout", type=float, default=10.0,
                     help="seconds to read a request (head, then body: each one total deadline) and to wait in the "
                          "queue; also how long SIGTERM waits for requests in flight")
    srv.add_argument("--max-body", type=int, default=16 * 1024 * 1024, help="largest request body in bytes (413)")
    srv.add_argument("--max-batch", type=int, default=16, help="most samples one request may carry (413)")
    srv.add_argument("--max-connections", type=int, default=64, help="open connections at once (then 503)")
    srv.add_argument("--token-file", help="require 'Authorization: Bearer TOKEN' (the file's one line) on "
                                          "/v2/models/...; health, /v2 and /metrics stay open")
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
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
