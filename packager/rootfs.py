"""The emulated boards' root filesystems: built from Debian's packages, cached, verified, rebuilt offline.

* A tree is unpacked from Debian's own packages by mmdebstrap (no
  maintainer scripts run, nothing from elsewhere), cached under
  ``~/.cache/edgepack/rootfs/`` with a checksum of every file, and verified
  before each use: a corrupt cache is rebuilt, never silently used.
* The packages it was built from are kept beside it, so it can be rebuilt
  with no network (``local_mirror``).
* ``proot_command`` runs a program in a tree under proot + qemu-*-static (no
  root-only kernel features, no binfmt_misc) with a CPU model of QEMU's.
  packager.emulator runs boards on top of it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edge_runtime.bundle import sha256_file
from edge_runtime.errors import UserError

from .profiles import Profile
from .wheels import cache_root

# profile arch -> (QEMU user-mode binary, Debian architecture)
EMULATORS = {
    "aarch64": ("qemu-aarch64-static", "arm64"),
}


# What a Raspberry Pi OS Lite image brings that the bundle relies on.
# openssh-client: ssh-keygen, which checks a signed bundle against the pinned key. tar and gzip: a board unpacks
# the bundle's .tar.gz (the fleet's Ansible role does, as a user would).
ROOTFS_PACKAGES = ("python3", "python3-venv", "libstdc++6", "libgcc-s1", "coreutils", "dash", "sed", "grep",
                   "findutils", "ca-certificates", "openssh-client", "tar", "gzip")


HOST_TOOLS = ("proot", "mmdebstrap", "unshare")


# The guest's whole environment; proot itself finds QEMU on the same PATH.
GUEST_ENV = {"HOME": "/root", "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


DEBIAN_MIRROR = "http://deb.debian.org/debian"


CHECKSUMS = "rootfs.sha256.json"


DEBS = "debs"  # the Debian packages a tree was built from, kept beside it


def stderr_log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def emulator_for(profile: Profile) -> tuple[str, str]:
    """(QEMU binary, Debian arch) for the profile, or a clear error."""
    if profile.arch not in EMULATORS:
        raise UserError(
            f"no emulator for target '{profile.name}' (arch {profile.arch}); "
            f"emulated architectures: {', '.join(EMULATORS)}",
            "test this target on the real device",
        )
    qemu, debian_arch = EMULATORS[profile.arch]
    missing = [tool for tool in (qemu, *HOST_TOOLS) if shutil.which(tool) is None]
    if missing:
        raise UserError(
            f"the emulated device needs {', '.join(missing)} on this host",
            "make emulator-tools (apt-get install qemu-user-static proot mmdebstrap)",
        )
    return qemu, debian_arch


def _tree_checksums(root: Path) -> dict[str, str]:
    sums = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                sums[rel] = "link:" + os.readlink(path)
            elif path.is_file():
                sums[rel] = sha256_file(path)
            else:
                sums[rel] = "special"  # a device node or fifo: never expected
    return sums


def _spec(profile: Profile) -> dict:
    qemu, debian_arch = emulator_for(profile)
    return {"suite": profile.os["debian_suite"], "arch": debian_arch, "qemu": qemu,
            "python": profile.os["python"], "packages": list(ROOTFS_PACKAGES), "layout": 6}


def rootfs_dir(profile: Profile) -> Path:
    """The cached tree's folder, named by suite, arch and a digest of its spec.

    Trees of other specs (another package list, from another edgepack
    checkout sharing the cache) live side by side instead of rebuilding
    each other, or being swapped out under a run that uses them.
    """
    _, debian_arch = emulator_for(profile)
    spec = hashlib.sha256(json.dumps(_spec(profile), sort_keys=True).encode()).hexdigest()[:8]
    return cache_root() / "rootfs" / f"{profile.os['debian_suite']}-{debian_arch}-{spec}"


# proot -q makes this empty, mode-000 file in the tree while a run lasts (and removes it at exit): a tree in use by
# another run (a fleet of boards, tests side by side) is not a corrupt one.
PROOT_GLUE = ("etc/ld.so.preload",)


def _proot_glue(root: Path, rel: str) -> bool:
    if rel not in PROOT_GLUE:
        return False
    try:
        info = (root / rel).lstat()
    except OSError:  # gone since the walk: the run that made it ended
        return True
    return info.st_size == 0 and info.st_mode & 0o7777 == 0


def check_rootfs(cache: Path, spec: dict) -> str | None:
    """Why the cached tree cannot be used, or None when it is intact."""
    record = cache / CHECKSUMS
    if not (cache / "root").is_dir() or not record.is_file():
        return "not built yet"
    try:
        saved = json.loads(record.read_text())
    except json.JSONDecodeError:
        return "its checksum record is unreadable"
    if saved.get("spec") != spec:
        return "it was built for other packages"
    actual = _tree_checksums(cache / "root")
    expected = saved.get("files", {})
    for rel, digest in expected.items():
        if rel not in actual:
            return f"{rel} is missing"
        if actual[rel] != digest:
            return f"{rel} was modified"
    extra = sorted(rel for rel in set(actual) - set(expected) if not _proot_glue(cache / "root", rel))
    if extra:
        return f"{extra[0]} appeared"
    return None


def _device_files(root: Path) -> None:
    """What the skipped maintainer scripts would have given the emulated board's tree."""
    (root / "etc" / "hostname").write_text("edgepack-emulated\n")
    # base-passwd's job: ssh-keygen refuses to run for a uid with no passwd entry.
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    # update-ca-certificates' job: Debian's pip (trixie's 25.1) loads the system CA bundle at import,
    # even with --no-index, and fails without it.
    certs = sorted((root / "usr" / "share" / "ca-certificates").rglob("*.crt"))
    (root / "etc" / "ssl" / "certs").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "ssl" / "certs" / "ca-certificates.crt").write_bytes(b"".join(c.read_bytes() for c in certs))


def _unpack(spec: dict, root: Path) -> None:
    """mmdebstrap --variant=extract: the packages and their dependencies, no maintainer script run; dpkg's
    path-exclude (spec["exclude"]) leaves files out as they are unpacked. The packages it fetched are kept
    beside the tree (``DEBS``): the tree can be rebuilt from them offline (local_mirror)."""
    mirror = os.environ.get("EDGEPACK_DEBIAN_MIRROR", DEBIAN_MIRROR)
    (root.parent / DEBS).mkdir(exist_ok=True)
    cmd = ["mmdebstrap", "--variant=extract", f"--arch={spec['arch']}", f"--include={','.join(spec['packages'])}",
           *(f"--dpkgopt=path-exclude={pattern}" for pattern in spec.get("exclude", ())),
           f"--extract-hook=sync-out /var/cache/apt/archives {root.parent / DEBS}",
           spec["suite"], str(root), mirror]
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = " ".join(proc.stderr.strip().splitlines()[-3:])
        raise UserError(f"mmdebstrap could not build the {spec['suite']}/{spec['arch']} tree: {tail}",
                        "check that Debian's package mirror is reachable")


def _finish_tree(spec: dict, root: Path) -> None:
    """What every tree needs after unpacking, whatever its packages: merged /usr, an empty /dev, the usual
    folders, and the standard library byte-compiled (py3compile's job) so runs never write into the tree."""
    # Merged /usr: from trixie on, base-files' maintainer scripts make these links (bookworm's packages
    # ship them); without them no binary finds /lib/ld-linux-aarch64.so.1.
    for top in ("bin", "sbin", "lib"):
        if not os.path.lexists(root / top) and (root / "usr" / top).is_dir():
            (root / top).symlink_to(f"usr/{top}")
    # /dev comes from the host at run time; device nodes in a cached tree
    # would only be a hazard to anyone copying it (/dev/zero never ends).
    shutil.rmtree(root / "dev")
    (root / "dev").mkdir()
    for d in ("proc", "sys", "tmp", "root"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    # Straight to the interpreter, no shell: a tree may have none (the OCI image's base has none).
    python = f"/usr/lib/python{spec['python']}"
    compiled = subprocess.run(
        proot_command(spec["qemu"], "max", root, [], "/", ["/usr/bin/python3", "-m", "compileall", "-q", "-j2", python]),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=GUEST_ENV)
    if compiled.returncode != 0:  # a tree whose Python cannot even run would fail every test later, obscurely
        tail = " ".join((compiled.stderr or compiled.stdout).strip().splitlines()[-3:])
        raise UserError(f"the {spec['suite']}/{spec['arch']} tree's python3 does not run under emulation: {tail}",
                        "report this bug with the Debian suite")


def build_rootfs(cache: Path, spec: dict, log=stderr_log, customize=_device_files) -> None:
    """Unpack a fresh tree with mmdebstrap, give it what ``customize`` writes, then swap it in atomically."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=cache.parent))
    try:
        root = work / "root"
        start = time.monotonic()
        _unpack(spec, root)
        customize(root)
        _finish_tree(spec, root)
        record = {"spec": spec, "files": _tree_checksums(root), "build_seconds": round(time.monotonic() - start, 1)}
        (work / CHECKSUMS).write_text(json.dumps(record))
        old = cache.parent / f".{cache.name}.old"
        if cache.exists():
            os.replace(cache, old)
        os.replace(work, cache)
        shutil.rmtree(old, ignore_errors=True)
        log(f"emulated device: built {spec['suite']}/{spec['arch']} root filesystem in {record['build_seconds']} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def local_mirror(profile: Profile) -> str:
    """A mirror line for ``EDGEPACK_DEBIAN_MIRROR`` that serves the packages the profile's cached tree was
    built from, from this disk: the tree can then be rebuilt with no network (a flat repository indexed by
    dpkg-scanpackages, trusted as apt's own cache was; copy:// so mmdebstrap needs no bind mount for it).

    Raises:
        UserError: no tree was built yet with its packages kept (``make device`` builds one).
    """
    debs = rootfs_dir(profile) / DEBS
    if not any(debs.glob("*.deb")):
        raise UserError(f"no Debian packages are kept for the {profile.name} tree ({debs})",
                        "build the tree once with the network (make device)")
    index = debs / "Packages"
    if not index.is_file():
        scanned = subprocess.run(["dpkg-scanpackages", "--multiversion", "."], cwd=debs, capture_output=True,
                                 text=True, stdin=subprocess.DEVNULL)
        if scanned.returncode != 0:
            raise UserError(f"dpkg-scanpackages could not index {debs}: {scanned.stderr.strip()[-200:]}",
                            "apt-get install dpkg-dev")
        index.write_text(scanned.stdout)
    return f"deb [trusted=yes] copy://{debs} ./"


def ensure_rootfs(profile: Profile, log=stderr_log) -> Path:
    """The verified cached tree for a profile, rebuilt if absent or corrupt."""
    return ensure_tree(rootfs_dir(profile), _spec(profile), log)


def ensure_tree(cache: Path, spec: dict, log=stderr_log, customize=_device_files) -> Path:
    """The verified tree of ``spec`` cached at ``cache`` (its ``root``), built (mmdebstrap, then ``customize``)
    when absent, rebuilt when corrupt."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    # One checker/builder at a time per tree (tests and builds may run side by side).
    with open(cache.parent / f".{cache.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        problem = check_rootfs(cache, spec)
        if problem:
            if problem != "not built yet":
                log(f"emulated device: cached root filesystem {cache} is unusable ({problem}); rebuilding")
            build_rootfs(cache, spec, log, customize)
            problem = check_rootfs(cache, spec)
            if problem:
                raise UserError(f"the freshly built root filesystem fails its own check ({problem})",
                                "report this bug")
        return cache / "root"


def proot_command(qemu: str, cpu: str, root: Path, binds: list[tuple[str, str]], workdir: str, argv: list[str],
                  user: str | None = None) -> list[str]:
    """``argv`` run in ``root`` under proot + QEMU with ``cpu``; no shell needed inside. The guest inherits the
    caller's environment (pass ``env=GUEST_ENV`` or the image's own); ``user`` (``UID:GID``) is what the guest
    sees as its ids (proot -i: the files stay the caller's)."""
    cmd = ["proot", "-q", f"{qemu} -cpu {cpu}", "-r", str(root), "-b", "/proc", "-b", "/sys", "-b", "/dev"]
    if user:
        cmd += ["-i", user]
    for host, guest in binds:
        cmd += ["-b", f"{host}:{guest}"]
    return cmd + ["-w", workdir, *argv]
