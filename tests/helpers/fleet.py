"""Emulated boards reachable over real SSH, for tests that reach a board the way its owner does.

Each board is one OpenSSH server (Debian's openssh-server, ``/usr/sbin/sshd``) listening on a loopback
address of its own (127.0.0.N), whose every session runs inside the board: sshd's ``ForceCommand`` starts
the command (``$SSH_ORIGINAL_COMMAND``) in the profile's cached Debian tree under proot + QEMU with the
profile's CPU and ``/proc/cpuinfo`` (packager.emulator), so ``ssh root@127.0.0.N uname -m`` says aarch64.

A board keeps its writable places across sessions in a state folder on the host: its home, its /tmp and
/var/tmp, its trust pin (``EDGEPACK_TRUST_DIR``, install.sh's documented override of /etc/edgepack: the
cached tree is shared and stays pristine) and whatever folders a test installs into. The state folder is
mounted at its own path inside the board, because proot does not translate paths in the newest syscalls
(statx, faccessat2): `ls`, `test -x` and Python's os.access see the real files only at identical paths.
So a board's install prefix is a path under ``board.state``, the same inside and out.

The board's commands share the host's network namespace (a served model is then reachable on the board's
address, as on a LAN), and nothing here leaves loopback. ``Fleet.stop()`` ends every process the fleet
started, sessions and what they left running included (found by a marker in their environment), checks
that none is left, and that no board wrote into the shared tree.

    with Fleet(tmp, [("pi-01", "rpi4"), ("zero-01", "zero2w")]) as fleet:
        fleet.ssh(fleet.boards[0], "uname -m").stdout  # 'aarch64\\n'
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from packager import device_envs, emulator
from packager.profiles import Profile, load_profile
from tests.helpers.net import free_port

SSHD = "/usr/sbin/sshd"
MARKER = "EDGEPACK_FLEET"  # in the environment of every process the fleet starts
FIRST_ADDRESS = 11  # boards are 127.0.0.11, 127.0.0.12, ...


@dataclasses.dataclass
class Board:
    """One emulated board: its name, profile, SSH address and port, and its state folder (same path inside)."""

    name: str
    profile: Profile
    address: str
    port: int
    state: Path
    env: dict = dataclasses.field(default_factory=dict)  # the board's own environment (its /etc/environment)

    @property
    def target(self) -> str:
        return self.profile.name

    def path(self, *parts: str) -> Path:
        """A path on the board's persistent state (identical on the host and inside the board)."""
        return self.state.joinpath(*parts)



def _listening(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


class Fleet:
    """Boards over SSH: ``start()`` brings every board up, ``stop()`` ends everything it started.

    Args:
        workdir: a new folder outside /tmp (each board's /tmp is its own), e.g. under /var/tmp.
        boards: (name, target profile) per board.
    """

    def __init__(self, workdir: Path, boards: list[tuple[str, str]]):
        self.workdir = Path(workdir)
        self.marker = f"{MARKER}={self.workdir}"
        self.boards = [Board(name, load_profile(target), f"127.0.0.{FIRST_ADDRESS + i}", 0,
                             self.workdir / "boards" / name) for i, (name, target) in enumerate(boards)]
        self.key = self.workdir / "ssh" / "id_ed25519"
        self.known_hosts = self.workdir / "ssh" / "known_hosts"
        self._sshd: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> Fleet:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def board(self, name: str) -> Board:
        return next(b for b in self.boards if b.name == name)

    # -- start and stop ---------------------------------------------------------------------------------

    def start(self) -> None:
        if not Path(SSHD).is_file():
            raise RuntimeError(f"{SSHD} is missing: apt-get install openssh-server (make fleet-tools does)")
        ssh = self.workdir / "ssh"
        ssh.mkdir(parents=True)
        for key in (self.key, ssh / "host_ed25519_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgepack-fleet", "-f", str(key)],
                           check=True, stdin=subprocess.DEVNULL)
        (ssh / "authorized_keys").write_text(self.key.with_suffix(".pub").read_text())
        host_key = (ssh / "host_ed25519_key.pub").read_text().split()[:2]
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder (Debian's unit makes it)
        try:
            for profile in {emulator.rootfs_dir(b.profile): b.profile for b in self.boards}.values():
                emulator.ensure_rootfs(profile)  # once per tree: its check reads every file
            for board in self.boards:
                self._start_board(board)
            self.known_hosts.write_text("".join(f"[{b.address}]:{b.port} {' '.join(host_key)}\n" for b in self.boards))
        except BaseException:
            self.stop()
            raise

    def _start_board(self, board: Board) -> None:
        for folder in ("home", "tmp", "etc/edgepack"):
            board.path(folder).mkdir(parents=True, exist_ok=True)
        board.path("cpuinfo").write_text(emulator.cpuinfo(board.profile))
        board.path("passwd").write_text(f"root:x:0:0:root:{board.path('home')}:/bin/sh\n")
        self.set_env(board)
        board.port = free_port(board.address)
        ssh = self.workdir / "ssh"
        config = board.path("sshd_config")
        config.write_text("\n".join([
            f"ListenAddress {board.address}:{board.port}",
            f"HostKey {ssh / 'host_ed25519_key'}",
            f"PidFile {board.path('sshd.pid')}",
            f"AuthorizedKeysFile {ssh / 'authorized_keys'}",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "StrictModes no", "X11Forwarding no", "AllowTcpForwarding no", "PrintMotd no",
            "MaxSessions 32", "LogLevel ERROR",
            f"SetEnv {self.marker}",
            f"ForceCommand {board.path('board-shell')}",
            "",
        ]))
        log = open(board.path("sshd.log"), "w")
        self._sshd[board.name] = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                                  stdout=log, stderr=log, env={**os.environ, MARKER: str(self.workdir)})
        log.close()
        deadline = time.monotonic() + 20
        while not _listening(board.address, board.port):
            if self._sshd[board.name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd for {board.name} did not start: {board.path('sshd.log').read_text()}")
            time.sleep(0.1)

    def set_env(self, board: Board, **env: str) -> None:
        """Set (or, with None, unset) variables of the board's own environment for its next sessions."""
        board.env.update(env)
        board.env = {k: v for k, v in board.env.items() if v is not None}
        qemu, _ = emulator.emulator_for(board.profile)
        state = str(board.state)
        # Every place a board writes is its own: its home (root's, in its own passwd: Ansible's ~root must name
        # the same path inside and out), /tmp and /var/tmp; what it installs goes under its state folder too. A
        # folder mounted at a second name would be seen by that name too (pwd -P), where proot cannot translate
        # every call; and only paths the tree has are mounted over (proot makes a placeholder in the tree for
        # any other). The tree is shared: stop() checks that no board wrote into it.
        binds = [(state, state), (f"{state}/passwd", "/etc/passwd"), (f"{state}/tmp", "/tmp"),
                 (f"{state}/tmp", "/var/tmp"), (f"{state}/cpuinfo", "/proc/cpuinfo")]
        settings = {"HOME": f"{state}/home", "USER": "root", "LOGNAME": "root", "TMPDIR": f"{state}/tmp",
                    "EDGEPACK_TRUST_DIR": f"{state}/etc/edgepack", **board.env}
        command = emulator.guest_command(qemu, board.profile.cpu, emulator.rootfs_dir(board.profile) / "root",
                                         binds, f"{state}/home", settings)
        shell = board.path("board-shell")
        shell.write_text(f"#!/bin/sh\n# {board.name} ({board.target}): every SSH session runs inside the board\n"
                         f'exec {shlex.join(command)} /bin/sh -c "$SSH_ORIGINAL_COMMAND"\n')
        shell.chmod(0o755)

    def stop(self) -> None:
        """End every sshd and every process a session left (marked in its environment); none may remain."""
        for proc in self._sshd.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self._sshd.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.processes():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 10
            while self.processes() and time.monotonic() < deadline:
                time.sleep(0.2)
        left = self.processes()
        if left:
            raise RuntimeError(f"fleet processes left behind: {left}")
        for profile in {emulator.rootfs_dir(b.profile): b.profile for b in self.boards}.values():
            problem = emulator.check_rootfs(emulator.rootfs_dir(profile), emulator._spec(profile))
            if problem:  # a board wrote into the shared tree instead of its own state
                raise RuntimeError(f"the boards' {profile.name} tree changed: {problem}")

    def processes(self) -> list[int]:
        """Processes the fleet started that are still running (zombies excluded)."""
        found = []
        needle = self.marker.encode() + b"\0"
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if needle in (entry / "environ").read_bytes() and " Z " not in (entry / "stat").read_text():
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    # -- using the boards -------------------------------------------------------------------------------

    def ssh_options(self) -> list[str]:
        """The ssh client's options for these boards: this fleet's key and known hosts, nothing of the host's."""
        return ["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", str(self.key),
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes"]

    def ssh(self, board: Board, command: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run a shell command on the board over SSH, as root."""
        proc = subprocess.run(["ssh", *self.ssh_options(), "-p", str(board.port), f"root@{board.address}", command],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout,
                              env=self.env())
        if check and proc.returncode != 0:
            raise AssertionError(f"{board.name}: {command} failed ({proc.returncode}): {proc.stderr[-2000:]}")
        return proc

    def env(self, **extra: str) -> dict:
        """The host environment for a client of the fleet (ssh, ansible-playbook): marked, so stop() ends what
        they leave running (ssh's control masters)."""
        return {**os.environ, MARKER: str(self.workdir), **extra}

    def seed(self, board: Board, bundle: Path, prefix: Path) -> str:
        """Give the board the installed environment of ``bundle``'s version under ``prefix``, as an earlier
        install.sh --prefix would have left it (``versions/<name>-<12 hex>/`` with its .venv), so a test
        installs in seconds rather than pip's minutes under QEMU; install.sh still checks the copy and the
        environment before it uses them. The environment is packager.device_envs' cached one for this tree and
        these wheels (made once by a real install on the emulated board). Returns the version."""
        name = bundle.name
        version = f"{name}-{hashlib.sha256((bundle / 'manifest.json').read_bytes()).hexdigest()[:12]}"
        root = emulator.ensure_rootfs(board.profile)
        key = device_envs.env_key(root, bundle)
        if key is None or not (device_envs.cached_env(key) / device_envs.VENV).is_dir():
            proc, _ = emulator.run_on_device(board.profile, bundle, '"$BUNDLE/install.sh" >/dev/null',
                                             reuse_env=True, capture=True)
            if proc.returncode != 0 or key is None:
                raise RuntimeError(f"could not make {name}'s environment on {board.target}: {proc.stderr[-2000:]}")
        dest = prefix / "versions" / version
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=".seed.", dir=dest.parent))
            try:
                shutil.copytree(bundle, work / "v", ignore=shutil.ignore_patterns(".venv", "__pycache__"))
                device_envs.seed(key, work / "v", link=True)
                os.rename(work / "v", dest)
            finally:
                shutil.rmtree(work)
        return version
