"""Bounded load tests of `edge-run serve` (loopback only, fixed duration).

- load: N concurrent clients send valid infer requests for a fixed time over
  keep-alive connections. Reports failed requests, p50/p99 latency, and the
  server's RSS at start and end (growth target: under 10%).
- keep-alive: serve p50 over one keep-alive connection beside in-process
  predict p50 on the same bundle and input, interleaved (goal: serve within
  2 ms of predict; reported, never asserted).
- soak: a long mixed load of good and hostile requests (malformed JSON,
  oversized declarations, .npz bombs, ambiguous framing, slow and abandoned
  bodies); reports status counts, 5xx (should be 0) and RSS growth.

    python benchmarks/serve_load.py BUNDLE [--clients 8] [--seconds 30] [--keepalive N] [--soak SECONDS]
"""

from __future__ import annotations

import argparse
import collections
import http.client
import io
import json
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(bundle: Path, *extra, root: Path = ROOT) -> tuple[subprocess.Popen, int]:
    """`edge-run serve` from ``root``'s edge_runtime on a free loopback port, once ready."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "edge_runtime", "serve", str(bundle), "--port", str(port), *extra],
                              cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/v2/health/ready")
            if conn.getresponse().status == 200:
                return server, port
        except OSError:
            pass
        time.sleep(0.1)
    server.kill()
    raise RuntimeError("server never became ready")


def infer_request(bundle: Path) -> tuple[str, bytes, dict]:
    """(path, JSON body, feeds) for one random sample of the bundle's inputs."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    rng = np.random.default_rng(0)
    feeds = {s["name"]: rng.random(s["shape"], dtype=np.float32) for s in manifest["inputs"]}
    body = json.dumps({"inputs": [{"name": s["name"], "shape": s["shape"], "datatype": "FP32",
                                   "data": feeds[s["name"]].ravel().tolist()} for s in manifest["inputs"]]})
    return f"/v2/models/{manifest['name']}/infer", body.encode(), feeds


def binary_request(bundle: Path) -> tuple[bytes, dict]:
    """The same sample as infer_request, in the binary tensor extension (what tritonclient sends)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    _, _, feeds = infer_request(bundle)
    head = json.dumps({"inputs": [{"name": s["name"], "shape": s["shape"], "datatype": "FP32",
                                   "parameters": {"binary_data_size": feeds[s["name"]].nbytes}}
                                  for s in manifest["inputs"]]}).encode()
    body = head + b"".join(feeds[s["name"]].tobytes() for s in manifest["inputs"])
    return body, {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}


def keepalive_vs_predict(bundle: Path, rounds: int = 10, per_round: int = 20, root: Path = ROOT,
                         binary: bool = True) -> dict:
    """Serve p50 over one keep-alive connection beside in-process predict p50, interleaved rounds.

    binary: tensors in the binary extension (the protocol's own cost); else
    JSON, whose decoding alone (a Python float per value) can outweigh a small
    model.
    """
    import edge_runtime

    path, body, feeds = infer_request(bundle)
    headers = {"Content-Type": "application/json"}
    if binary:
        body, headers = binary_request(bundle)
    model = edge_runtime.load(bundle)
    server, port = start_server(bundle, "--workers", "1", "--queue", "1", root=root)
    serve_ms, predict_ms = [], []
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(5):
            conn.request("POST", path, body, headers)
            conn.getresponse().read()
            model.predict(feeds)
        for _ in range(rounds):  # interleaved: machine noise lands on both
            for _ in range(per_round):
                start = time.perf_counter()
                conn.request("POST", path, body, headers)
                resp = conn.getresponse()
                resp.read()
                serve_ms.append((time.perf_counter() - start) * 1e3)
                assert resp.status == 200, resp.status
            for _ in range(per_round):
                start = time.perf_counter()
                model.predict(feeds)
                predict_ms.append((time.perf_counter() - start) * 1e3)
        conn.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    serve_p50, predict_p50 = float(np.median(serve_ms)), float(np.median(predict_ms))
    return {"tensors": "binary" if binary else "JSON", "requests": len(serve_ms), "serve_p50_ms": serve_p50, "predict_p50_ms": predict_p50,
            "difference_ms": serve_p50 - predict_p50, "ratio": serve_p50 / predict_p50}


def keepalive_report(r: dict) -> str:
    verdict = "ok" if r["difference_ms"] <= 2.0 else "OVER GOAL"
    return (f"keep-alive ({r['tensors']} tensors): serve p50 {r['serve_p50_ms']:.2f} ms over one connection vs predict p50 "
            f"{r['predict_p50_ms']:.2f} ms in process: +{r['difference_ms']:.2f} ms ({r['ratio']:.2f}x; "
            f"goal <= +2 ms: {verdict}; {r['requests']} requests)")


def _npz_bomb() -> bytes:
    """~1 kB of .npz whose member declares 1 GiB (refused from its header)."""
    import zipfile

    header = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    header.update(shape=(1 << 27,))
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", buf.getvalue() + bytes(1 << 20))
    return out.getvalue()


def _hostile(body: bytes, name: str) -> tuple[list, list]:
    """(bad bodies with their content types, raw attacks written on a socket) the soak mixes in."""
    bad_bodies = [
        (b"{not json", "application/json"), (b"[" * 50000, "application/json"),
        (json.dumps({"inputs": [{"name": name, "datatype": "FP32", "shape": [1 << 40], "data": [0]}]}).encode(),
         "application/json"),
        (json.dumps({"inputs": "x", "parameters": "s"}).encode(), "application/json"),
        (_npz_bomb(), "application/x-npz"), (b"\x93NUMPY garbage", "application/x-npy"),
        (body, "text/plain"),
    ]
    raw_attacks = [
        b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n\r\n{\"inputs\"",  # abandoned body
        b"GET /v2/health/live HTTP/1.1\r\nHost: attacker.example\r\n\r\n",
        b"GARBAGE\r\n\r\n",
    ]
    return bad_bodies, raw_attacks


def _post(port: int, path: str, payloads: list) -> None:
    """Each (body, content type) once, a connection each: every kind of request before the first reading."""
    for payload, ctype in payloads:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", path, payload, {"Content-Type": ctype})
        conn.getresponse().read()
        conn.close()


def _raw(port: int, path: str, attack: bytes) -> str:
    """One raw attack on its own socket: the status the server answered, or what happened instead."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(attack.replace(b"%s", path.encode()))
        reply = s.recv(65536) if b"5000" not in attack else b"abandoned"
    if reply.startswith(b"HTTP/1.1"):
        return reply.split(b" ")[1].decode()
    return "abandoned" if reply == b"abandoned" else "closed"


def _soak_client(seed: int, port: int, path: str, body: bytes, hostile: tuple, stop_at: float, counts, lock) -> None:
    """Half good requests, a third bad bodies, the rest raw attacks, on one keep-alive connection."""
    bad_bodies, raw_attacks = hostile
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while time.monotonic() < stop_at:
        pick = rng.random()
        try:
            if pick >= 0.85:
                status = _raw(port, path, rng.choice(raw_attacks))
            else:
                payload, ctype = (body, "application/json") if pick < 0.5 else rng.choice(bad_bodies)
                conn.request("POST", path, payload, {"Content-Type": ctype})
                resp = conn.getresponse()
                resp.read()
                status = str(resp.status)
                if resp.getheader("Connection") == "close":
                    conn.close()
        except OSError as exc:
            status = type(exc).__name__
            conn.close()
        with lock:
            counts[status] += 1
    conn.close()


def _sample_rss(pid: int, stop_at: float, seconds: float, samples: list) -> None:
    """(seconds in, RSS MB) until the end: a leak keeps climbing, allocator warm-up levels off."""
    start = time.monotonic()
    while time.monotonic() < stop_at:
        samples.append((time.monotonic() - start, rss_mb(pid)))
        time.sleep(min(5.0, seconds / 20))


def _run_threads(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def soak(bundle: Path, seconds: float, clients: int = 4) -> dict:
    """A long mixed good/bad load; status counts and the server's RSS growth after warm-up."""
    path, body, _ = infer_request(bundle)
    hostile = _hostile(body, json.loads(body)["inputs"][0]["name"])
    server, port = start_server(bundle, "--workers", "1", "--queue", str(clients), "--timeout", "2")
    counts: collections.Counter = collections.Counter()
    lock, samples = threading.Lock(), []
    try:
        for _ in range(3):  # every kind of request once before the first reading: the allocator's pools fill
            _post(port, path, [(body, "application/json")] * 20 + hostile[0])
        rss_start = rss_mb(server.pid)
        stop_at = time.monotonic() + seconds
        _run_threads([threading.Thread(target=_soak_client, args=(i, port, path, body, hostile, stop_at, counts,
                                                                  lock)) for i in range(clients)]
                     + [threading.Thread(target=_sample_rss, args=(server.pid, stop_at, seconds, samples))])
        time.sleep(2.5)  # abandoned bodies reach their deadline
        rss_end = rss_mb(server.pid)
        # Steady state: from a tenth of the way in. The first seconds of concurrent load fill one malloc
        # arena per worker thread (measured: +7 MB in the first 5 s, then flat for 295 s).
        steady = [mb for t, mb in samples if t >= seconds / 10] or [rss_end]
        alive = server.poll() is None
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"seconds": seconds, "clients": clients, "counts": dict(sorted(counts.items())),
            "requests": sum(counts.values()), "server_errors": sum(n for k, n in counts.items() if k.startswith("5")
                                                                   and k != "503"),
            "rss_start_mb": rss_start, "rss_end_mb": rss_end, "rss_samples": samples,
            "rss_steady_mb": steady[0], "rss_steady_growth_pct": (rss_end - steady[0]) / steady[0] * 100,
            "rss_growth_pct": (rss_end - rss_start) / rss_start * 100, "alive": alive, "exit_code": server.returncode}


def soak_report(r: dict) -> str:
    verdict = "ok" if r["rss_steady_growth_pct"] < 10 and r["server_errors"] == 0 and r["alive"] else "OVER TARGET"
    return (f"soak: {r['clients']} clients x {r['seconds']:.0f} s of mixed good/hostile requests: {r['requests']} "
            f"({', '.join(f'{k}: {n}' for k, n in r['counts'].items())}), 5xx other than 503: {r['server_errors']}, "
            f"RSS {r['rss_start_mb']:.1f} MB before the load, {r['rss_steady_mb']:.1f} MB a tenth of the way in, "
            f"{r['rss_end_mb']:.1f} MB at the end: {r['rss_steady_growth_pct']:+.1f}% in the steady state (target "
            f"< 10%: {verdict}; {r['rss_growth_pct']:+.1f}% from before the load), SIGTERM exit {r['exit_code']}")


def _load_client(port: int, path: str, body: bytes, stop_at: float, latencies: list, failures: list) -> None:
    """Good requests back to back on one keep-alive connection (a new one after a failure)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while time.monotonic() < stop_at:
        start = time.perf_counter()
        try:
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            ok = resp.status == 200
        except OSError:
            ok = False
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        latencies.append(time.perf_counter() - start)
        failures.append(0 if ok else 1)
    conn.close()


def load_test(bundle: Path, clients: int, seconds: float) -> dict:
    path, body, _ = infer_request(bundle)
    server, port = start_server(bundle, "--workers", "1", "--queue", str(clients))
    try:
        _post(port, path, [(body, "application/json")] * 50)  # warm up a little before the first RSS reading
        rss_start = rss_mb(server.pid)
        latencies: list[list[float]] = [[] for _ in range(clients)]
        failures: list[list[int]] = [[] for _ in range(clients)]
        stop_at = time.monotonic() + seconds
        _run_threads([threading.Thread(target=_load_client, args=(port, path, body, stop_at, latencies[i],
                                                                  failures[i])) for i in range(clients)])
        rss_end = rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    all_lat = np.array([v for lat in latencies for v in lat]) * 1000
    return {
        "clients": clients, "seconds": seconds, "requests": int(all_lat.size), "failed": int(sum(map(sum, failures))),
        "p50_ms": float(np.percentile(all_lat, 50)), "p99_ms": float(np.percentile(all_lat, 99)),
        "rss_start_mb": rss_start, "rss_end_mb": rss_end,
        "rss_growth_pct": (rss_end - rss_start) / rss_start * 100, "exit_code": server.returncode,
    }


def report(r: dict) -> str:
    verdict = "ok" if r["rss_growth_pct"] < 10 and r["failed"] == 0 else "OVER TARGET"
    return (f"serve load: {r['clients']} clients x {r['seconds']:.0f} s on loopback: {r['requests']} requests, "
            f"{r['failed']} failed, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
            f"RSS {r['rss_start_mb']:.1f} -> {r['rss_end_mb']:.1f} MB ({r['rss_growth_pct']:+.1f}%, target < 10%: "
            f"{verdict}), SIGTERM exit {r['exit_code']}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("bundle")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--keepalive", type=int, default=0, metavar="ROUNDS",
                        help="instead: serve p50 over one keep-alive connection vs predict p50")
    parser.add_argument("--soak", type=float, default=0, metavar="SECONDS", help="instead: the mixed good/bad soak")
    parser.add_argument("--server-root", default=str(ROOT), help="checkout whose edge_runtime serves (to compare)")
    args = parser.parse_args()
    bundle = Path(args.bundle)
    if args.keepalive:
        for binary in (True, False):
            print(keepalive_report(keepalive_vs_predict(bundle, rounds=args.keepalive, root=Path(args.server_root),
                                                        binary=binary)))
    elif args.soak:
        print(soak_report(soak(bundle, args.soak, clients=args.clients)))
    else:
        print(report(load_test(bundle, args.clients, args.seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
