"""`edgepack build --bench-on USER@HOST`: the ladder's candidates timed on the board, over real SSH.

The board is an emulated Raspberry Pi 4 behind its own sshd on a loopback address (tests.helpers.fleet),
its runtime a venv install.sh made there. Timings under QEMU mean nothing; what is proven is the plumbing:
the board is reached before any work, the candidates that hold the bar and the float32 reference are timed
there with the board's runtime, the figures reach the manifest, and the board is left as it was.
"""

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.helpers.fleet import Fleet

pytestmark = pytest.mark.slow


def _ssh_config(fleet: Fleet, board, path: Path) -> Path:
    """An ssh_config naming the board by its name, with the fleet's key and known hosts (EDGEPACK_SSH_CONFIG)."""
    options = fleet.ssh_options()
    key, known = options[options.index("-i") + 1], options[options.index("-o", 6) + 1].split("=", 1)[1]
    path.write_text(f"Host {board.name}\n  HostName {board.address}\n  Port {board.port}\n  User root\n"
                    f"  IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {known}\n"
                    "  StrictHostKeyChecking yes\n")
    return path


@pytest.mark.emulated
def test_candidates_are_timed_on_the_board_over_ssh(digits, digits_bundle, tmp_path):
    work = Path(tempfile.mkdtemp(prefix="test-bench-on-", dir="/var/tmp"))
    try:
        with Fleet(work / "fleet", [("pi-01", "rpi4")]) as fleet:
            board = fleet.boards[0]
            version = fleet.seed(board, digits_bundle, board.path("opt"))
            python = board.path("opt", "versions", version, ".venv", "bin", "python")
            config = _ssh_config(fleet, board, work / "ssh_config")
            env = fleet.env(EDGEPACK_SSH_CONFIG=str(config))
            proc = run_cli("packager", "build", digits / "digits.onnx", "--target", "rpi4", "--calibration",
                           digits / "calibration.npy", "--bench-on", "root@pi-01", "--bench-python", python,
                           "-o", tmp_path / "dist", env=env)
            left = fleet.ssh(board, "ls /tmp").stdout
        manifest = json.loads((tmp_path / "dist" / "digits-rpi4" / "manifest.json").read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert f"--bench-on root@pi-01: candidates timed with the board's installed runtime ({python})" in proc.stderr
    precision = manifest["precision"]
    assert precision["float32_reference"]["board_ms"] > 0
    chosen = next(s for s in precision["steps"] if s["step"] == precision["step"])
    assert chosen["meets_bar"] and chosen["board_ms"] > 0  # the shipped step was timed on the board
    assert "on the board" in proc.stderr  # the float32 reference line says where it was timed
    assert not [n for n in left.split() if n.startswith("edgepack-bench.")]  # the board work folder is gone


def test_a_board_that_cannot_be_reached_stops_the_build_before_any_work(digits, tmp_path):
    proc = run_cli("packager", "build", digits / "digits.onnx", "--target", "rpi4", "--calibration",
                   digits / "calibration.npy", "--bench-on", "root@127.0.0.1:1", "-o", tmp_path / "dist",
                   check=False)
    assert proc.returncode == 2 and "[1/9]" not in proc.stderr
    error = next(line for line in proc.stderr.splitlines() if line.startswith("error: "))
    assert error.startswith("error: --bench-on root@127.0.0.1:1: reaching the board failed")
    assert not (tmp_path / "dist").exists()
