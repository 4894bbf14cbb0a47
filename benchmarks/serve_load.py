"""Bounded load test of `edge-run serve` (loopback only, fixed duration).

N concurrent clients send valid infer requests for a fixed time over
keep-alive connections. Reports failed requests, p50/p99 latency, and the
server's RSS at start and end (growth target: under 10%).

    python benchmarks/serve_load.py BUNDLE [--clients 8] [--seconds 30]
"""

from __future__ import annotations

import argparse
import http.client
import json
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


def load_test(bundle: Path, clients: int, seconds: float) -> dict:
    manifest = json.loads((bundle / "manifest.json").read_text())
    spec = manifest["inputs"][0]
    x = np.random.default_rng(0).random(spec["shape"], dtype=np.float32)
    body = json.dumps({"inputs": [{"name": spec["name"], "shape": spec["shape"], "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()
    path = f"/v2/models/{manifest['name']}/infer"
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "edge_runtime", "serve", str(bundle), "--port", str(port),
         "--workers", "1", "--queue", str(clients)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/v2/health/ready")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        # Warm the server up a little before the first RSS reading.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(50):
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            conn.getresponse().read()
        conn.close()
        rss_start = rss_mb(server.pid)
        latencies: list[list[float]] = [[] for _ in range(clients)]
        failures = [0] * clients
        stop_at = time.monotonic() + seconds

        def client(i: int) -> None:
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
                latencies[i].append(time.perf_counter() - start)
                failures[i] += 0 if ok else 1
            conn.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rss_end = rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    all_lat = np.array([v for lat in latencies for v in lat]) * 1000
    return {
        "clients": clients, "seconds": seconds, "requests": int(all_lat.size), "failed": int(sum(failures)),
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
    args = parser.parse_args()
    print(report(load_test(Path(args.bundle), args.clients, args.seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
