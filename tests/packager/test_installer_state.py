"""install.sh trusts no state it finds (issue 24, installer part), on this machine: the host bundle
(tests/fixtures/profiles/host-x86_64.toml) installs its real wheels here with the host's sh and python3.

Each test is one class of attack or accident on the installer: a planted or half-made environment, a failed
install's leftovers, a model-only update, an older version, another process answering the health probe.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from tests.helpers.bundles import new_version, version

pytestmark = pytest.mark.slow  # the host bundle is a real build, and pip installs its real wheels
SITE = Path("lib") / "python3.11" / "site-packages"


@pytest.fixture
def bundle(host_bundle, tmp_path) -> Path:
    copy = tmp_path / "src" / host_bundle.name
    shutil.copytree(host_bundle, copy, ignore=shutil.ignore_patterns(".venv", "__pycache__"))
    return copy


def env_of(tmp_path: Path, **extra) -> dict:
    """The test's environment: no pinned key (an empty trust folder of its own), no systemd."""
    (tmp_path / "trust").mkdir(exist_ok=True)
    return {**os.environ, "EDGEPACK_TRUST_DIR": str(tmp_path / "trust"), **extra}


def install(bundle: Path, *args, tmp_path: Path, **extra) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(bundle / "install.sh"), *map(str, args)], cwd=tmp_path,
                          env=env_of(tmp_path, **extra), capture_output=True, text=True, stdin=subprocess.DEVNULL)


def current(prefix: Path) -> str:
    return os.readlink(prefix / "current") if os.path.lexists(prefix / "current") else ""


def plant_fake_venv(folder: Path, marker: Path, stamp: str | None) -> None:
    """A .venv whose python leaves a marker when run (then runs the real one), with the stamp text given."""
    (folder / "bin").mkdir(parents=True)
    (folder / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = false\n")
    (folder / "bin" / "python").write_text(f"#!/bin/sh\ntouch '{marker}'\nexec python3 \"$@\"\n")
    (folder / "bin" / "python").chmod(0o755)
    if stamp is not None:
        (folder / ".edgepack-install").write_text(stamp)


def stamp_text(bundle: Path) -> str:
    """What install.sh writes in a finished environment's stamp for this bundle."""
    requirements = hashlib.sha256((bundle / "wheels" / "requirements.txt").read_bytes()).hexdigest()
    packages = next(line[9:] for line in (bundle / "install.conf").read_text().splitlines() if line.startswith("packages="))
    return f"{requirements} {packages}\n"


def test_planted_venv_is_never_run_by_install(bundle, tmp_path):
    """A .venv beside the bundle's files (verify-bundle skips it), even with a right stamp, is checked by
    verify-env with the system Python, found foreign, removed and made again."""
    marker = tmp_path / "pwned"
    plant_fake_venv(bundle / ".venv", marker, stamp_text(bundle))
    proc = install(bundle, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"the environment in {bundle}/.venv is not what this bundle's wheels install" in proc.stdout
    assert "bin/python is not the symlink venv makes" in proc.stdout
    assert not marker.exists()
    assert (bundle / ".venv" / "bin" / "python").is_symlink()
    run = subprocess.run(["sh", str(bundle / "edge-run"), "info", str(bundle)], env=env_of(tmp_path),
                         capture_output=True, text=True)
    assert run.returncode == 0 and "digits-host-x86_64" in run.stdout, run.stderr
    assert not marker.exists()


def test_edge_run_never_runs_an_unstamped_venv(bundle, tmp_path):
    marker = tmp_path / "pwned"
    plant_fake_venv(bundle / ".venv", marker, stamp=None)
    run = subprocess.run(["sh", str(bundle / "edge-run"), "info", str(bundle)], env=env_of(tmp_path),
                         capture_output=True, text=True)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        f"edge-run: {bundle}/.venv is not an environment install.sh finished for this bundle "
        f"(no stamp for its wheels); run {bundle}/install.sh"]
    assert not marker.exists()


def test_half_made_venv_is_rebuilt_not_failed_on(bundle, tmp_path):
    """An install killed during `python -m venv` leaves a venv without pip in its version folder: the next
    install finds it wanting and makes a fresh one (it used to fail on it for ever: No module named pip)."""
    prefix = tmp_path / "ab"
    left = prefix / "versions" / version(bundle)
    shutil.copytree(bundle, left)
    subprocess.run(["python3", "-I", "-m", "venv", "--without-pip", str(left / ".venv")], check=True)
    proc = install(bundle, "--prefix", prefix, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"the environment in {left}/.venv is not what this bundle's wheels install" in proc.stdout
    assert current(prefix) == f"versions/{version(bundle)}"


def test_failed_install_removes_what_it_made(bundle, tmp_path):
    """A full disk fails the new version's environment: its folder goes, the current version stays."""
    prefix = tmp_path / "ab"
    assert install(bundle, "--prefix", prefix, tmp_path=tmp_path).returncode == 0
    v2 = new_version(bundle, tmp_path / "v2", "2100-01-01T00:00:00+00:00")
    full = tmp_path / "python3-on-a-full-disk"
    full.write_text('#!/bin/sh\ncase "$*" in *venv*) echo "OSError: [Errno 28] No space left on device" >&2; '
                    'exit 1 ;; esac\nexec python3 "$@"\n')
    full.chmod(0o755)
    proc = install(v2, "--prefix", prefix, "--python", full, tmp_path=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(f"install.sh: error: could not create a venv with {full}")
    assert sorted(p.name for p in (prefix / "versions").iterdir()) == [version(bundle)]
    assert current(prefix) == f"versions/{version(bundle)}"


def test_model_only_update_reuses_the_checked_env_by_hard_links(bundle, tmp_path):
    prefix = tmp_path / "ab"
    one, two, three = (bundle, new_version(bundle, tmp_path / "v2", "2100-01-01T00:00:00+00:00"),
                       new_version(bundle, tmp_path / "v3", "2101-01-01T00:00:00+00:00"))
    assert install(one, "--prefix", prefix, tmp_path=tmp_path).returncode == 0
    # the current version's environment tampered with: not reused, a fresh one made
    planted = prefix / "versions" / version(one) / ".venv" / SITE / "zz-evil.pth"
    planted.write_text("import os\n")
    proc = install(two, "--prefix", prefix, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "site-packages/zz-evil.pth is a .pth file (run at every start) no wheel's RECORD names): not reused" \
        in proc.stdout
    assert "installed ai-edge-litert" in proc.stdout
    assert not (prefix / "versions" / version(two) / ".venv" / SITE / "zz-evil.pth").exists()
    # the same wheels, an intact current environment: hard links, no pip, and the service probe passes
    proc = install(three, "--prefix", prefix, "--service", tmp_path=tmp_path, EDGE_RUN_UNIT_DIR=str(tmp_path / "u"))
    assert proc.returncode == 0, proc.stderr
    assert "its environment reused (hard links), checked by verify-env" in proc.stdout
    assert "installed ai-edge-litert" not in proc.stdout
    assert (f"edge-run serve {version(three)} answered /v2/health/ready and named digits-host-x86_64, "
            f"{version(three)}") in proc.stdout
    numpy = [prefix / "versions" / version(v) / ".venv" / SITE / "numpy" / "__init__.py" for v in (two, three)]
    assert numpy[0].stat().st_ino == numpy[1].stat().st_ino
    assert current(prefix) == f"versions/{version(three)}"


def test_versions_only_move_forward(bundle, tmp_path):
    prefix = tmp_path / "ab"
    newer = new_version(bundle, tmp_path / "newer", "2100-01-01T00:00:00+00:00")
    assert install(newer, "--prefix", prefix, tmp_path=tmp_path).returncode == 0
    assert (prefix / "newest").read_text() == "2100-01-01T00:00:00+00:00\n"
    assert (prefix / "newest").stat().st_mode & 0o777 == 0o644
    created = json.loads((bundle / "manifest.json").read_text())["created_at"]
    proc = install(bundle, "--prefix", prefix, tmp_path=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"install.sh: error: {version(bundle)} was built at {created}, before the newest version installed in "
        f"{prefix} (2100-01-01T00:00:00+00:00): versions only move forward; install.sh --rollback --prefix {prefix} "
        "returns to the previous one, --allow-downgrade installs an older one anyway"]
    assert current(prefix) == f"versions/{version(newer)}"
    assert sorted(p.name for p in (prefix / "versions").iterdir()) == [version(newer)]
    # asked for: the older one installs; the record stays the newest; a re-install of the newer is fine
    proc = install(bundle, "--prefix", prefix, "--allow-downgrade", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert current(prefix) == f"versions/{version(bundle)}"
    assert (prefix / "newest").read_text() == "2100-01-01T00:00:00+00:00\n"
    assert install(newer, "--prefix", prefix, tmp_path=tmp_path).returncode == 0
    # --rollback is the explicit way back, no flag needed
    proc = install(newer, "--rollback", "--prefix", prefix, tmp_path=tmp_path)
    assert proc.returncode == 0 and current(prefix) == f"versions/{version(bundle)}", proc.stderr
    # the record is protected like the pin: one anybody may write is not believed
    (prefix / "newest").chmod(0o666)
    proc = install(newer, "--prefix", prefix, tmp_path=tmp_path)
    assert proc.returncode == 1 and f"{prefix}/newest is not install.sh's record" in proc.stderr


class Impostor(http.server.BaseHTTPRequestHandler):
    """Another process on the machine: ready, and claiming the model under another version."""
    seen: list = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        Impostor.seen.append(self.path)
        body = (b'edge_run_model_info{model="digits-host-x86_64",version="digits-host-x86_64-000000000000"} 1\n'
                if self.path == "/metrics" else b'{"ready": true}')
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("server", ["never-listens", "points-at-the-impostor"])
def test_health_probe_checks_its_own_server(bundle, tmp_path, server):
    """Its own `edge-run serve` never comes up (a stand-in `timeout` runs none, or one that names the
    impostor's port): whatever answers elsewhere, the new version is refused and nothing is current."""
    impostor = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Impostor)
    threading.Thread(target=impostor.serve_forever, daemon=True).start()
    port = impostor.server_address[1]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    claim = (f'echo "edge-run serve: digits-host-x86_64 on http://127.0.0.1:{port} (workers 1, queue 8)" >&2; '
             "exec sleep 60" if server == "points-at-the-impostor" else "exit 0")
    (bin_dir / "timeout").write_text(
        f'#!/bin/sh\nfor a in "$@"; do [ "$a" = serve ] && {{ {claim}; }}; done\nexec {shutil.which("timeout")} "$@"\n')
    (bin_dir / "timeout").chmod(0o755)
    Impostor.seen = []
    try:
        proc = install(bundle, "--prefix", tmp_path / "ab", "--service", tmp_path=tmp_path,
                       PATH=f"{bin_dir}:{os.environ['PATH']}", EDGE_RUN_UNIT_DIR=str(tmp_path / "units"),
                       EDGEPACK_HEALTH_TIMEOUT="20")
    finally:
        impostor.shutdown()
        impostor.server_close()
    assert proc.returncode == 1, proc.stdout
    why = ("edge-run serve stopped before it was ready" if server == "never-listens"
           else "the server that answered did not name digits-host-x86_64, " + version(bundle))
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"install.sh: error: {version(bundle)} failed its health check: {why}"), proc.stderr
    assert last.endswith(f"nothing changed: no version is still current in {tmp_path}/ab")
    assert not os.path.lexists(tmp_path / "ab" / "current") and not (tmp_path / "units").exists()
    assert list((tmp_path / "ab" / "versions").iterdir()) == []
    if server == "never-listens":
        assert Impostor.seen == []
