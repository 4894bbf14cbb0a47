"""`--bench-on USER@HOST`: the ladder's candidates timed on the target board itself, over SSH.

The board's own runtime times each candidate model as it will run there:
the runtime it already has (``--bench-python``, default ``python3``, if it
imports ai_edge_litert), else a temporary venv made from the bundle's own
wheels (offline, hash-checked, as install.sh makes it). ``EDGEPACK_SSH_CONFIG``
names an ssh_config file to use instead of the user's own (``ssh -F``). Only the runner's timing entry point and the model
travel (OpenSSH's ``ssh``, key auth, BatchMode: no password prompt can hang
a build); everything lands in one ``mktemp -d`` folder on the board, removed
at the end of the build, whatever happens.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import subprocess
import tarfile
from pathlib import Path

from edge_runtime.errors import UserError

RUNNER_ROOT = Path(__file__).resolve().parent.parent  # the folder holding edge_runtime/
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=15")
TIMEOUT = 600  # seconds for any one remote step (a venv from wheels under pip takes the longest)
TIMER = '''
import json, statistics, sys, time
sys.path.insert(0, sys.argv[1])
from edge_runtime.interpreter import make_engine
engine = make_engine(sys.argv[2], threads=int(sys.argv[3]), delegate="xnnpack")
interp = engine.interpreter
interp.allocate_tensors()
for _ in range(int(sys.argv[5])):
    interp.invoke()
times = []
for _ in range(int(sys.argv[4])):
    start = time.perf_counter()
    interp.invoke()
    times.append((time.perf_counter() - start) * 1000)
parts = sum(op["op_name"] == "DELEGATE" for op in interp._get_ops_details())
print(json.dumps({"median_ms": statistics.median(times), "partitions": parts}))
'''


def parse_target(value: str) -> tuple[list[str], str]:
    """``USER@HOST`` or ``USER@HOST:PORT`` -> (ssh arguments naming it, the text to show)."""
    user, at, rest = value.partition("@")
    host, _, port = rest.partition(":")
    if not at or not user or not host or (port and not port.isdigit()) or any(c in value for c in " ;&|$`'\"\\"):
        raise UserError(f"--bench-on {value!r}: expected USER@HOST or USER@HOST:PORT",
                        "e.g. --bench-on pi@raspberrypi.local (key authentication: ssh-copy-id first)")
    return ([*(["-p", port] if port else []), f"{user}@{host}"], value)


def _ssh(address: list[str], command: str) -> list[str]:
    config = os.environ.get("EDGEPACK_SSH_CONFIG")
    return ["ssh", *(["-F", config] if config else []), *SSH_OPTIONS, *address, command]


def reach_board(target: str, profiles: list, python: str | None = None) -> "BoardBench":
    """The board of a one-target build, reached once over SSH before any work (seconds, not minutes later)."""
    if len(profiles) != 1:
        raise UserError(f"--bench-on times candidates on one board, and --target names {len(profiles)} targets",
                        "build the board's target alone with --bench-on, or drop --bench-on")
    board = BoardBench(target, profiles[0].default_threads, python=python)
    arch = board.ssh("uname -m", what="reaching the board").strip()
    if arch != profiles[0].arch:
        raise UserError(f"--bench-on {board.name} is a {arch} machine, target {profiles[0].name} is {profiles[0].arch}",
                        "name a board of the target's kind")
    return board


class BoardBench:
    """One board reached over SSH, with a work folder of its own for this build."""

    def __init__(self, target: str, threads: int, runs: int = 30, warmup: int = 5, python: str | None = None):
        self.address, self.name = parse_target(target)
        self.threads, self.runs, self.warmup = threads, runs, warmup
        self.folder: str | None = None
        self.given = python
        self.python = python or "python3"

    def ssh(self, command: str, data: bytes | None = None, what: str = "a command") -> str:
        try:
            proc = subprocess.run(_ssh(self.address, command), input=data,
                                  capture_output=True, timeout=TIMEOUT, stdin=None if data is not None else
                                  subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise UserError(f"--bench-on {self.name}: {what} did not finish within {TIMEOUT} s",
                            "check the board, or build without --bench-on") from None
        if proc.returncode != 0:
            tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
            raise UserError(f"--bench-on {self.name}: {what} failed (exit {proc.returncode}): {tail[0][:300]}",
                            "check that `ssh USER@HOST true` works without a password (ssh-copy-id)")
        return proc.stdout.decode(errors="replace")

    def prepare(self, runner_root: Path, wheels: list[Path]) -> str:
        """Make the board's work folder, copy the runner in, and find or make a runtime. Returns which."""
        self.folder = self.ssh("mktemp -d /tmp/edgepack-bench.XXXXXX", what="making a work folder").strip()
        folder = shlex.quote(self.folder)
        self.ssh(f"tar -x -C {folder}", _tar(runner_root / "edge_runtime", "edge_runtime", TIMER), "copying the runner")
        has = self.ssh(f"{shlex.quote(self.python)} -I -c 'import ai_edge_litert, numpy' >/dev/null 2>&1 && echo yes "
                       "|| echo no", what="looking for a runtime").strip()
        if has == "yes":
            return f"the board's installed runtime ({self.python})"
        if self.given:
            raise UserError(f"--bench-python {self.given} on {self.name} does not import ai_edge_litert and numpy",
                            "name the python of a venv install.sh made there, or leave --bench-python out")
        if not wheels:
            raise UserError(f"--bench-on {self.name}: the board has no TFLite runtime and the build has no wheels",
                            "install the bundle there once, or build without --no-wheels")
        from .wheels import requirements_text

        files = [(f"wheels/{w.name}", w.read_bytes()) for w in wheels] + [
            ("wheels/requirements.txt", requirements_text(wheels).encode())]
        self.ssh(f"tar -x -C {folder}", _tar_files(files), "copying the wheels")
        self.ssh(f"cd {folder} && python3 -I -m venv venv && venv/bin/python -I -m pip --isolated install --quiet "
                 "--no-index --no-cache-dir --disable-pip-version-check --require-hashes --only-binary=:all: "
                 "--find-links wheels -r wheels/requirements.txt", what="making a venv from the bundle's wheels")
        self.python = f"{self.folder}/venv/bin/python"
        return "a temporary venv from the bundle's wheels"

    def time(self, q) -> float:
        """The candidate's median invoke time on the board, in ms."""
        folder = shlex.quote(self.folder)
        command = (f"cat > {folder}/candidate.tflite && {shlex.quote(self.python)} -I {folder}/timer.py {folder} "
                   f"{folder}/candidate.tflite {self.threads} {self.runs} {self.warmup}")
        out = self.ssh(command, q.tflite, f"timing the {q.precision} candidate")
        try:
            return float(json.loads(out.strip().splitlines()[-1])["median_ms"])
        except (ValueError, KeyError, IndexError):
            raise UserError(f"--bench-on {self.name}: the board's timer printed {out[-200:]!r}",
                            "report this bug") from None

    def close(self) -> None:
        """Remove the work folder from the board (best effort: the build's own result does not depend on it)."""
        if self.folder:
            subprocess.run(_ssh(self.address, f"rm -rf {shlex.quote(self.folder)}"),
                           capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
            self.folder = None


def _tar(source: Path, arcname: str, timer: str) -> bytes:
    files = [(f"{arcname}/{p.relative_to(source).as_posix()}", p.read_bytes()) for p in sorted(source.rglob("*.py"))
             if "__pycache__" not in p.parts]
    return _tar_files(files + [("timer.py", timer.encode())])


def _tar_files(files: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
