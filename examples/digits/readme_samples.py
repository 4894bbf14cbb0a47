"""The README's sample outputs, from a real run of its commands on the digits example.

    python examples/digits/readme_samples.py [--digits DIR] [--check]   # or: make readme

Runs the Quick start's commands (edgepack build, edge-run info, run and
bench, edgepack evaluate without labels) and the Serving section's
(edge-run serve, curl) in a fresh folder, each as the README writes it,
through the shell, with `edgepack`, `edge-run` and `python` this checkout's.
Each sample's commands and what they printed (stdout and stderr, as a
terminal shows them) go into README.md between its markers:

    <!-- sample: NAME -->
        $ command
        what it printed
    <!-- /sample -->

Nothing else in the README changes. ``--check`` writes nothing and exits 1
when a sample has drifted; tests/test_readme.py does the same on the test
suite's digits fixtures. Comparing, :func:`normalise` replaces on both sides
only what differs from run to run: times and timings, thread counts (the
default follows the cores), the temp folder, digests. The README keeps the
run's own text. The server takes a free port; the README says 8080, in the
commands and in what the server prints.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
README = ROOT / "README.md"
WORK_PREFIX = "edgepack-readme-"
PORT = 8080  # what the README says
SERVE = "edge-run serve dist/digits-rpi4 --port 8080 &"
REQUEST = ("python -c \"import json, numpy as np; x = np.load('x.npy'); print(json.dumps({'inputs': [{'name': "
           "'image', 'shape': list(x.shape), 'datatype': 'FP32', 'data': x.ravel().tolist()}]}))\" > request.json")
SAMPLES = {  # name: the commands, in order (SERVE starts the server; "kill %1" stops it)
    "build": ["edgepack build digits.onnx --target rpi4 --calibration calibration.npy"],
    "info": ["edge-run info dist/digits-rpi4"],
    "run": ["edge-run run dist/digits-rpi4 --input x.npy --output y.npz",
            "edge-run bench dist/digits-rpi4 --threads 2"],
    "evaluate": ["edgepack evaluate dist/digits-rpi4 --data test_x.npy"],
    "serve": [SERVE,
              "curl -s localhost:8080/v2/health/ready",
              "curl -s localhost:8080/v2/models/digits-rpi4",
              REQUEST,
              "curl -s localhost:8080/v2/models/digits-rpi4/infer -H 'Content-Type: application/json' -d @request.json",
              "kill %1"],
}
MARKER = re.compile(r"(<!-- sample: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /sample -->)", re.S)
# What differs from run to run, on both sides of a comparison.
VARYING = (
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)"), "<time>"),
    (re.compile(r"/\S*?" + WORK_PREFIX + r"[^/\s]*"), "<work>"),
    (re.compile(r"\b[0-9a-f]{12,64}\b"), "<digest>"),
    (re.compile(r"\d+(\.\d+)? ms\b"), "<t> ms"),
    (re.compile(r"\d+(\.\d+)? s\b"), "<t> s"),
    (re.compile(r"\d+\.\d+x\b"), "<ratio>"),
    (re.compile(r"[\d.]+ inferences/s"), "<n> inferences/s"),
    (re.compile(r"(peak RSS\s+)[\d.]+ MB"), r"\1<n> MB"),
    (re.compile(r"\d+ threads?( \([^)]*\))?"), "<n> threads"),
)
# The ladder table's timing columns (host ms, board ms): numbers of three decimals in its rows.
LADDER_ROW = re.compile(r"^\s+\*?\s.*(the bar|passed over|crashed)")
LADDER_TIME = re.compile(r"(?<=\s)\d+\.\d{3}(?=\s)")


def normalise(text: str) -> str:
    """The sample with what varies from run to run replaced by placeholders."""
    lines = []
    for line in text.splitlines():
        for pattern, placeholder in VARYING:
            line = pattern.sub(placeholder, line)
        if LADDER_ROW.match(line):
            line = LADDER_TIME.sub("<t>", line)
        lines.append(line.rstrip())
    return "\n".join(lines).strip("\n")


def readme_samples(text: str) -> dict[str, str]:
    """The samples in a README's text: name -> the block, unindented."""
    return {m["name"]: "\n".join(line[4:] for line in m["body"].strip("\n").splitlines()) for m in MARKER.finditer(text)}


def with_samples(text: str, samples: dict[str, str]) -> str:
    """The README's text with these samples between their markers (every one must be there)."""
    missing = set(samples) - set(readme_samples(text))
    if missing:
        raise SystemExit(f"README.md has no markers for {', '.join(sorted(missing))}: "
                         "add <!-- sample: NAME --> and <!-- /sample --> where each goes")

    def block(m: re.Match) -> str:
        if m["name"] not in samples:
            return m[0]
        body = "\n".join(f"    {line}".rstrip() for line in samples[m["name"]].splitlines())
        return f"{m[1]}\n{body}\n\n{m[4]}"

    return MARKER.sub(block, text)


def drift(readme: dict[str, str], fresh: dict[str, str]) -> str:
    """A diff of every fresh sample against the README's, both normalised ("" when none drifted)."""
    out = []
    for name, text in fresh.items():
        ours = normalise(readme.get(name, "")).splitlines()
        diff = list(difflib.unified_diff(ours, normalise(text).splitlines(), f"README.md ({name})",
                                         f"this run ({name})", lineterm=""))
        out.extend(diff)
    return "\n".join(out)


def prepare(work: Path, digits: Path) -> dict[str, str]:
    """The folder the commands run in (the example's files, x.npy: one held-out sample) and their environment:
    `edgepack`, `edge-run` and `python` on PATH are this checkout's, run by this Python."""
    for name in ("digits.onnx", "calibration.npy", "test_x.npy"):
        shutil.copy2(digits / name, work / name)
    np.save(work / "x.npy", np.load(work / "test_x.npy")[:1])
    bin_dir = work / ".bin"
    bin_dir.mkdir()
    for name, args in (("edgepack", "-m packager"), ("edge-run", "-m edge_runtime"), ("python", "")):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" {args} "$@"\n')
        script.chmod(0o755)
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": pythonpath}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Session:
    """Commands run one by one as a terminal would show them: "$ command", then what it printed."""

    def __init__(self, work: Path, env: dict[str, str]):
        self.work, self.env, self.port = work, env, free_port()
        self.server: subprocess.Popen | None = None
        self.server_log = work / ".serve.log"
        self.server_seen = 0

    def text(self, output: str) -> str:
        return output.replace(f":{self.port}", f":{PORT}")

    def run(self, command: str) -> str:
        if command == SERVE:
            return self._serve()
        if command == "kill %1":
            return self._stop()
        proc = subprocess.run(["bash", "-c", command.replace(f":{PORT}", f":{self.port}")], cwd=self.work,
                              env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=900)
        if proc.returncode != 0:
            raise SystemExit(f"`{command}` failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
        return self.text(proc.stdout)

    def _serve(self) -> str:
        """The server in the background (the `&`), its lines up to ready: what a terminal shows before the next
        prompt is used."""
        argv = SERVE.removesuffix(" &").replace(str(PORT), str(self.port))
        with open(self.server_log, "w") as log:
            self.server = subprocess.Popen(["bash", "-c", f"exec {argv}"], cwd=self.work, env=self.env,
                                           stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/health/ready", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"edge-run serve did not get ready:\n{self.server_log.read_text()}")
            time.sleep(0.2)
        return self._server_lines()

    def _server_lines(self) -> str:
        text = self.server_log.read_text()
        new, self.server_seen = text[self.server_seen:], len(text)
        return self.text(new)

    def _stop(self) -> str:
        """`kill %1`: SIGTERM to the background server, then the lines it printed since."""
        self.server.send_signal(signal.SIGTERM)
        self.server.wait(timeout=30)
        return self._server_lines()

    def close(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.kill()
            self.server.wait()


def run_samples(digits: Path, work: Path, names=None, bundle: Path | None = None) -> dict[str, str]:
    """Run the samples' commands in ``work`` (made empty first; its name must start with WORK_PREFIX).

    Args:
        digits: the folder train.py wrote (digits.onnx, calibration.npy, test_x.npy).
        names: the samples to run (default: all, in order; "build" makes dist/digits-rpi4 for the others).
        bundle: a digits-rpi4 bundle to copy to dist/ instead of building it (when "build" is not run).

    Returns:
        name -> "$ command" lines, each followed by what it printed.
    """
    if not work.name.startswith(WORK_PREFIX):
        raise ValueError(f"the work folder's name must start with {WORK_PREFIX} (normalise() finds it by it)")
    env = prepare(work, digits)
    if bundle is not None:
        shutil.copytree(bundle, work / "dist" / "digits-rpi4", symlinks=True)
    session = Session(work, env)
    samples = {}
    try:
        for name in names or SAMPLES:
            shown = []
            for command in SAMPLES[name]:
                output = session.run(command)
                shown.append(f"$ {command}\n{output}" if output.endswith("\n") or not output else
                             f"$ {command}\n{output}\n")
            samples[name] = "".join(shown).rstrip("\n")
    finally:
        session.close()
    return samples


def _trained(work: Path) -> Path:
    sys.path.insert(0, str(HERE))
    try:
        import train
    finally:
        sys.path.pop(0)
    return train.main(str(work / "digits"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits", type=Path, help="a folder train.py wrote (default: train the model now)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a sample drifted")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgepack-digits-") as scratch:
        digits = args.digits or _trained(Path(scratch))
        work = Path(tempfile.mkdtemp(prefix=WORK_PREFIX))
        try:
            fresh = run_samples(digits, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    text = README.read_text(encoding="utf-8")
    if args.check:
        found = drift(readme_samples(text), fresh)
        print(found or "README.md samples: as this run prints them")
        return 1 if found else 0
    README.write_text(with_samples(text, fresh), encoding="utf-8")
    print(f"README.md: wrote {', '.join(fresh)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
