"""Ansible as a user runs it: ansible-core from its own venv (.venv-fleet, requirements/fleet.txt), the
edgepack.fleet collection installed from deploy/ansible with ansible-galaxy, playbooks run with
ansible-playbook against an inventory.

``EDGEPACK_FLEET_BIN`` names that venv's bin folder (the Makefile sets it; default: ``.venv-fleet/bin``).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

COLLECTION = ROOT / "deploy" / "ansible"


def fleet_bin() -> Path:
    """The bin folder of the venv with ansible-core and ansible-lint; fails the test when it is missing."""
    folder = ROOT / os.environ.get("EDGEPACK_FLEET_BIN", ".venv-fleet/bin")  # a relative name: from the repo
    if not (folder / "ansible-playbook").is_file():
        pytest.fail(f"ansible-playbook is not in {folder}: `make fleet-tools` makes .venv-fleet from "
                    "requirements/fleet.txt (make test does)")
    return folder


def tool_env(workdir: Path, base: dict | None = None, **extra: str) -> dict:
    """The environment for Ansible's tools (on ``base``, default this process's): their venv first on PATH,
    their state in ``workdir``, no colour."""
    base = os.environ if base is None else base
    return {**base, "PATH": f"{fleet_bin()}{os.pathsep}{base.get('PATH', '')}",
            "ANSIBLE_HOME": str(workdir / "ansible-home"), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
            "PYTHONWARNINGS": "ignore::DeprecationWarning", **extra}


def install_collection(workdir: Path) -> Path:
    """``ansible-galaxy collection install deploy/ansible -p DIR``; returns DIR (a collections path)."""
    dest = workdir / "collections"
    subprocess.run([fleet_bin() / "ansible-galaxy", "collection", "install", "--force", str(COLLECTION),
                    "-p", str(dest)], check=True, capture_output=True, text=True, env=tool_env(workdir),
                   stdin=subprocess.DEVNULL)
    return dest


class Ansible:
    """ansible-playbook against boards over SSH, configured as the README advises for slow boards:
    pipelining (a module runs in one SSH round trip), a persistent SSH connection per board, and files
    sent through the SSH session itself (``transfer_method = piped``: no SFTP server needed on the board).

    Args:
        workdir: where its configuration and state go.
        collections: a collections path holding edgepack.fleet (install_collection).
        ssh_options: the ssh client's options for the boards (key, known hosts).
        env: the environment to run in (e.g. a Fleet's, so what it leaves running is found and ended).
    """

    def __init__(self, workdir: Path, collections: Path, ssh_options: list[str], env: dict | None = None):
        self.workdir = workdir
        (workdir / "cp").mkdir(parents=True, exist_ok=True)
        self.config = workdir / "ansible.cfg"
        self.config.write_text("\n".join([
            "[defaults]",
            f"collections_path = {collections}",
            "forks = 8",
            "host_key_checking = True",
            "retry_files_enabled = False",
            "timeout = 60",
            "[ssh_connection]",
            "pipelining = True",
            f"ssh_args = {' '.join(ssh_options)} -o ControlMaster=auto -o ControlPersist=120s",
            f"control_path_dir = {workdir / 'cp'}",
            "transfer_method = piped",
            "",
        ]))
        self.env = tool_env(workdir, env, ANSIBLE_CONFIG=str(self.config))

    def playbook(self, playbook: str, inventory: Path, *args: str, timeout: float = 900) -> Run:
        """Run ``ansible-playbook -i INVENTORY edgepack.fleet.<playbook> ARGS``; the finished run, timed."""
        start = time.monotonic()
        proc = subprocess.run([fleet_bin() / "ansible-playbook", "-i", str(inventory), f"edgepack.fleet.{playbook}",
                               *args], capture_output=True, text=True, env=self.env, cwd=self.workdir,
                              stdin=subprocess.DEVNULL, timeout=timeout)
        return Run(proc, time.monotonic() - start)


class Run:
    """A finished ansible-playbook run: its exit code, output, seconds, and the PLAY RECAP per host."""

    def __init__(self, proc: subprocess.CompletedProcess, seconds: float):
        self.returncode, self.stdout, self.stderr, self.seconds = proc.returncode, proc.stdout, proc.stderr, seconds
        self.recap = {}
        for line in proc.stdout.split("PLAY RECAP")[-1].splitlines()[1:]:
            if ":" in line:
                host, counts = line.split(":", 1)
                self.recap[host.strip()] = {k: int(v) for k, v in (p.split("=") for p in counts.split())}

    def __str__(self) -> str:
        return f"exit {self.returncode} after {self.seconds:.0f} s\n{self.stdout[-6000:]}\n{self.stderr[-3000:]}"
