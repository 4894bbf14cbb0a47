"""`edgepack oci BUNDLE`: the bundle as an OCI image whose entrypoint is `edge-run serve`.

Three layers, so a fleet pulls what changed and no more:

1. the base (packager.oci.base): Debian's python3 for the profile's suite and
   architecture, no shell;
2. the bundle's environment: the venv the bundle's own install.sh makes from
   its own hash-pinned wheels, run on the emulated board (QEMU, the
   profile's CPU) and reused from packager.device_envs when the same wheels
   were installed on the same tree before;
3. the bundle, file for file as built (the runner checks every sha256
   against its manifest before loading, as on a board).

Before anything is written, the assembled tree runs ``edge-run health`` (the
bundle's stored sample gives the build's outputs) as the image's user under
emulation. The image is put together by umoci and copied into an
``oci-archive`` by skopeo (Debian's packages; no container daemon, no root).
OCI has no health-check field: the probes are labels, and the k3s example
(deploy/k3s/) uses them.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from edge_runtime.bundle import MANIFEST, open_bundle
from edge_runtime.errors import UserError

from .. import __version__, emulator
from ..profiles import Profile, bundle_profile
from .base import USER_ID, ensure_base

# Profile arch -> the OCI (GOARCH) name; only what the emulator can run, since the image is proven there.
OCI_ARCH = {"aarch64": "arm64"}
TOOLS = ("umoci", "skopeo")
APP = "/opt/edge-run"
BUNDLE = f"{APP}/bundle"
PORT = 8080
PROBES = {"liveness": "/v2/health/live", "readiness": "/v2/health/ready"}
METRICS = "/metrics"
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/nonexistent"}
# What the bundle's edge-run launcher runs, without its shell (the image has none): the same isolated Python
# (-I), nothing written (-B), unbuffered logs (-u). The launcher's sha256 check is the runner's own, which
# checks every file before it loads the model. The .pyc files the image ships (standard library, venv) are
# used: its layers are content-addressed, so they are as trusted as the sources beside them.
LAUNCH = ("import sys; sys.path.insert(0, sys.argv.pop(1)); sys.argv[0] = 'edge-run'; "
          "from edge_runtime.cli import main; sys.exit(main())")
# Only the interpreter's links stay in the venv's bin/: pip's scripts and install.sh's launcher name the
# path the venv was made at on the emulated board, and the launcher wants a shell.
VENV_BIN_KEEP = ("python", "python3")
# Install-time only (25 MB): pip and setuptools install nothing in an image (no network, no wheels to fetch).
VENV_DROP = ("pip", "pip-*.dist-info", "setuptools", "setuptools-*.dist-info", "_distutils_hack", "pkg_resources",
             "distutils-precedence.pth")


def runner_argv(command: str, *args: str) -> list[str]:
    """``edge-run COMMAND BUNDLE ARGS`` as the image runs it."""
    return [f"{BUNDLE}/.venv/bin/python", "-I", "-B", "-u", "-c", LAUNCH, BUNDLE, command, BUNDLE, *args]


# Later flags win in edge-run's parser: a pod's `args: [--port, "9000"]` overrides these.
ENTRYPOINT = runner_argv("serve", "--host", "0.0.0.0", "--port", str(PORT))


@dataclasses.dataclass
class Image:
    """What `edgepack oci` wrote."""

    layout: Path  # OCI image layout folder; skopeo/podman/umoci read it as oci:LAYOUT:TAG
    archive: Path  # the same image as one oci-archive file (podman load, k3s ctr images import)
    tag: str
    reference: str  # the name the archive carries
    digest: str  # of the image manifest: pin it (image: REFERENCE@DIGEST) and every board runs these bytes
    architecture: str
    layers: list[tuple[str, int]]  # (what, compressed bytes)
    seconds: float

    def summary(self) -> str:
        total = sum(size for _, size in self.layers)
        rows = [f"image      {self.reference} (linux/{self.architecture}), {total / 1e6:.1f} MB compressed",
                f"digest     {self.digest}",
                *(f"  layer    {size / 1e6:6.1f} MB  {what}" for what, size in self.layers),
                f"layout     {self.layout} (oci:{self.layout}:{self.tag})",
                f"archive    {self.archive}",
                f"runs       edge-run serve on 0.0.0.0:{PORT} as uid {USER_ID}; probes GET {PROBES['liveness']}, "
                f"{PROBES['readiness']}; metrics GET {METRICS}",
                f"podman     podman load -i {self.archive}",
                f"k3s        sudo k3s ctr images import {self.archive}",
                f"built in   {self.seconds:.0f} s"]
        return "\n".join(rows)


def labels(manifest: dict, profile: Profile, manifest_sha256: str) -> dict[str, str]:
    """The image's labels: what it is, and the probes a runtime should use (OCI has no health-check field)."""
    return {
        "org.opencontainers.image.title": manifest["name"],
        "org.opencontainers.image.description": f"edge-run serve for {manifest['name']}, built by edgepack for "
                                                f"{profile.human_name}",
        "org.opencontainers.image.version": manifest_sha256[:12],
        "org.opencontainers.image.created": manifest["created_at"],
        "io.edgepack.target": profile.name,
        "io.edgepack.bundle.manifest-sha256": manifest_sha256,
        "io.edgepack.port": str(PORT),
        "io.edgepack.probe.liveness": f"GET {PROBES['liveness']}",
        "io.edgepack.probe.readiness": f"GET {PROBES['readiness']}",
        "io.edgepack.metrics": f"GET {METRICS}",
    }


def _tool(cmd: list[str], what: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise UserError(f"{cmd[0]} could not {what}: {tail}", f"report this bug with the command: {' '.join(cmd)}")
    return proc.stdout


def _check_host(profile: Profile) -> str:
    """The image's OCI architecture, once the host has every tool the build needs."""
    if profile.arch not in OCI_ARCH:
        raise UserError(f"no OCI image for target '{profile.name}' (arch {profile.arch}): the image is proven "
                        f"on the emulated board before it is written, and that runs {', '.join(OCI_ARCH)} only",
                        "install the bundle with its install.sh on this board instead")
    emulator.emulator_for(profile)
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        raise UserError(f"edgepack oci needs {', '.join(missing)} on this host",
                        "make oci-tools (apt-get install umoci skopeo)")
    return OCI_ARCH[profile.arch]


def _install_env(profile: Profile, folder: Path, work: Path, log) -> Path:
    """The venv the bundle's install.sh makes on the emulated board, copied out and trimmed to what runs."""
    log(f"oci: installing the bundle's wheels on the emulated {profile.name} (QEMU; reused when installed before)")
    venv = work / "venv"

    def take_env(copy: Path) -> None:  # on the host: copying 150 MB under emulation takes ~20 s
        if (copy / ".venv" / ".edgepack-install").is_file():
            shutil.copytree(copy / ".venv", venv, symlinks=True)

    proc, _ = emulator.run_on_device(profile, folder, '"$BUNDLE/install.sh"', cwd=work, log=log, capture=True,
                                     reuse_env=True, collect=take_env)
    if proc.returncode != 0 or not venv.is_dir():
        raise UserError(f"the bundle's install.sh failed on the emulated {profile.name}: "
                        f"{' '.join(proc.stderr.strip().splitlines()[-3:])}", "fix the bundle, then run edgepack oci again")
    for entry in (venv / "bin").iterdir():
        if entry.name not in VENV_BIN_KEEP and not entry.name.startswith("python3."):
            entry.unlink()
    for site in (venv / "lib").glob("python3*/site-packages"):
        for entry in site.iterdir():
            if any(fnmatch.fnmatch(entry.name, pattern) for pattern in VENV_DROP):
                _remove(entry)
    # Folders dated as the install, not as this run: the same environment gives the same layer, which a
    # board that already has it does not pull again.
    installed = (venv / ".edgepack-install").stat().st_mtime
    for folder, _, _ in os.walk(venv):
        os.utime(folder, (installed, installed))
    return venv


def _health_check(profile: Profile, base: Path, bundle: Path, venv: Path, manifest: dict, log) -> None:
    """The image's tree, as its user, on the emulated board with loopback only: the stored sample gives the
    build's outputs (bundles built before health samples: the model loads)."""
    command = "health" if "health" in manifest else "info"
    log(f"oci: edge-run {command} in the image's root filesystem on the emulated {profile.name}")
    # On a copy: proot adds and removes its mount points in the tree it runs, which would re-date the
    # cached base's folders, and so change the base layer of every image after.
    root = bundle.parent / "rootfs"
    shutil.copytree(base, root, symlinks=True)
    mounts = [(str(bundle), BUNDLE), (str(venv), f"{BUNDLE}/.venv")]
    with emulator.board(profile, root, mounts, user=f"{USER_ID}:{USER_ID}") as on_board:
        proc = subprocess.run([*emulator.network_isolation(), *on_board(runner_argv(command))], env=ENV,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise UserError(f"the image does not run the bundle on the emulated {profile.name}: "
                        f"{' '.join(proc.stderr.strip().splitlines()[-3:])}", "report this bug; nothing was written")


def _assemble(layout: Path, tag: str, layers: list[tuple[Path, str, str]], config: list[str], created: str) -> None:
    image = f"{layout}:{tag}"
    # umoci records the files' owners as they are; rootless maps the caller's own files to root in the image.
    rootless = ["--rootless"] if os.geteuid() != 0 else []
    _tool(["umoci", "init", "--layout", str(layout)], "create the image layout")
    _tool(["umoci", "new", "--image", image], "create the image")
    history = ["--history.created", created, "--history.author", f"edgepack {__version__}"]
    for source, target, what in layers:
        _tool(["umoci", "insert", *rootless, "--image", image, *history, "--history.created_by", f"edgepack oci: {what}",
               str(source), target], f"add {what}")
    _tool(["umoci", "config", "--image", image, *history, "--history.created_by", "edgepack oci: configuration",
           "--created", created, "--author", f"edgepack {__version__}", *config], "configure the image")
    _tool(["umoci", "gc", "--layout", str(layout)], "drop the unused blobs")


def _config(arch: str, image_labels: dict[str, str]) -> list[str]:
    flags = ["--architecture", arch, "--os", "linux", "--config.user", f"{USER_ID}:{USER_ID}",
             "--config.workingdir", BUNDLE, "--config.exposedports", f"{PORT}/tcp", "--config.stopsignal", "SIGTERM"]
    flags += [arg for a in ENTRYPOINT for arg in ("--config.entrypoint", a)]
    flags += [arg for k, v in ENV.items() for arg in ("--config.env", f"{k}={v}")]
    flags += [arg for k, v in image_labels.items() for arg in ("--config.label", f"{k}={v}")]
    return flags + [arg for k, v in image_labels.items() if k.startswith("org.opencontainers.")
                    for arg in ("--manifest.annotation", f"{k}={v}")]


def image_manifest(layout: Path, tag: str) -> tuple[str, list[int]]:
    """The digest of ``layout:tag``'s image manifest and the compressed size of each of its layers."""
    index = json.loads((layout / "index.json").read_text())
    (descriptor,) = [m for m in index["manifests"]
                     if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
    algorithm, digest = descriptor["digest"].split(":")
    manifest = json.loads((layout / "blobs" / algorithm / digest).read_text())
    return descriptor["digest"], [layer["size"] for layer in manifest["layers"]]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _publish(built: Path, final: Path) -> None:
    """Move a finished output into place; an older one goes only once the new one is there."""
    old = final.with_name(f".{final.name}.old")
    _remove(old)
    if final.exists():
        os.replace(final, old)
    os.replace(built, final)
    _remove(old)


def build_image(bundle: str | os.PathLike, out_dir: str | os.PathLike = "dist", log=emulator.stderr_log) -> Image:
    """Write BUNDLE as an OCI image layout ``OUT/<name>-oci/`` and archive ``OUT/<name>-oci.tar``.

    Raises:
        UserError: the bundle fails its check, has no wheels, its architecture cannot be emulated, a host tool
            is missing, or the image does not pass its health check (then nothing is written).
    """
    start = time.monotonic()
    folder, manifest = open_bundle(bundle)
    profile = bundle_profile(manifest, bundle)
    arch = _check_host(profile)
    if not (folder / "wheels" / "requirements.txt").is_file():
        raise UserError(f"{folder} has no wheels/ (built with --no-wheels): the image needs them for its environment",
                        "rebuild the bundle without --no-wheels")
    name, sha = manifest["name"], hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest()
    tag, reference = sha[:12], f"localhost/edge-run/{manifest['name']}:{sha[:12]}"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = ensure_base(profile, log)
    with tempfile.TemporaryDirectory(prefix=f".{name}-oci.", dir=out) as tmp:
        work = Path(tmp)
        staged = work / "bundle"
        shutil.copytree(folder, staged, ignore=shutil.ignore_patterns(".venv", "__pycache__"))
        venv = _install_env(profile, folder, work, log)
        _health_check(profile, base, staged, venv, manifest, log)
        shutil.copystat(folder, staged)  # dated as the bundle again: the check's mount point came and went
        log("oci: assembling the image (umoci) and its archive (skopeo)")
        what = [(base, "/", f"Debian {profile.os['debian_suite']} {arch}: python3, libstdc++6; no shell"),
                (venv, f"{BUNDLE}/.venv", "the environment install.sh made from the bundle's wheels"),
                (staged, BUNDLE, f"the bundle {name}, every file as built (the runner checks them all)")]
        _assemble(work / "layout", tag, what, _config(arch, labels(manifest, profile, sha)), manifest["created_at"])
        _tool(["skopeo", "copy", "--quiet", f"oci:{work / 'layout'}:{tag}", f"oci-archive:{work / 'archive.tar'}:"
               f"{reference}"], "write the oci-archive")
        digest, sizes = image_manifest(work / "layout", tag)
        _publish(work / "layout", out / f"{name}-oci")
        _publish(work / "archive.tar", out / f"{name}-oci.tar")
    return Image(layout=out / f"{name}-oci", archive=out / f"{name}-oci.tar", tag=tag, reference=reference,
                 digest=digest, architecture=arch, layers=[(w[2], size) for w, size in zip(what, sizes)],
                 seconds=time.monotonic() - start)
