"""Opening a bundle: folder or .tar.gz, manifest, and the integrity check.

Nothing is loaded before the bundle's files are exactly the manifest's:
every listed file present with its sha256, no file more, no symlink or
special file, no path outside the folder, and the manifest matching its own
digest (so an edited manifest is refused as surely as an edited model). Once
the device pins a signing key, the manifest must also carry that key's
signature (``trust``): the digest alone anyone can recompute. An
archive is read with every name and size checked against its manifest
before any content is written, so a bomb is refused with the disk untouched.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

from .errors import UserError
from .manifest import validate
from .signals import checkpoint, held
from .trust import MAX_SIGNATURE_BYTES, SIGNATURE, check_signature

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
# The only files outside manifest["files"]: the manifest, its sums, and (signed bundles) its signature,
# which cannot be listed in what it signs, and is left out of SHA256SUMS so signing changes no other file.
UNLISTED = (MANIFEST, SUMS, SIGNATURE)
# Where install.sh puts the venv by default: made on the device, never shipped.
VENV = ".venv"
MAX_MANIFEST_BYTES = 16 << 20
# A bundle is a model and a few wheels; an archive declaring more is refused unread.
MAX_BUNDLE_BYTES = 4 << 30
# Relative, normalised, plain: what edgepack build writes and install.sh accepts.
SAFE_PATH = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9._+-]*(/[A-Za-z0-9_+-][A-Za-z0-9._+-]*)*$")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON, without its own digest."""
    body = {k: v for k, v in manifest.items() if k != "integrity"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def sums_text(files: dict[str, str], manifest_sha256: str) -> str:
    """SHA256SUMS as ``sha256sum -c`` reads it: every file, manifest.json included."""
    rows = {**files, MANIFEST: manifest_sha256}
    return "".join(f"{digest}  {rel}\n" for rel, digest in sorted(rows.items()))


def _refuse(where, what: str, fix: str = "re-copy the bundle, or rebuild it with edgepack build"):
    raise UserError(f"{where}: {what}", fix)


def check_paths(files, sizes, where) -> None:
    """The manifest's file list: relative, normalised paths inside the bundle, with sha256 and size."""
    if not isinstance(files, dict) or not files:
        _refuse(where, "'files' must map each bundle file to its sha256, found " + type(files).__name__)
    if not isinstance(sizes, dict) or set(sizes) != set(files):
        _refuse(where, "'sizes' must give the size of exactly the files in 'files'")
    for rel, digest in files.items():
        if not SAFE_PATH.match(rel) or posixpath.normpath(rel) != rel or rel.split("/")[0] == VENV:
            _refuse(where, f"file entry {rel!r} is not a plain relative path inside the bundle")
        if rel in UNLISTED:
            _refuse(where, f"file entry {rel!r} is the manifest's own")
        if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
            _refuse(where, f"files[{rel!r}] must be a sha256 hex digest, found {digest!r}")
        size = sizes[rel]
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            _refuse(where, f"sizes[{rel!r}] must be a byte count, found {size!r}")
    if "model.tflite" not in files:
        _refuse(where, "the file list has no model.tflite")


def _read_manifest_bytes(data: bytes, where) -> dict:
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, over-long integers
        _refuse(where, f"not valid JSON ({str(exc)[:200]})")
    if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
        found = manifest.get("schema_version") if isinstance(manifest, dict) else type(manifest).__name__
        raise UserError(
            f"{where}: expected schema_version {SCHEMA_VERSION}, found {found!r}",
            "rebuild the bundle with a matching edgepack",
        )
    if manifest.get("integrity") != manifest_digest(manifest):
        raise UserError(f"{where} was modified after the build (its digest does not match)",
                        "re-copy the bundle, or rebuild it with edgepack build")
    check_paths(manifest.get("files"), manifest.get("sizes"), where)
    validate(manifest, str(where))
    return manifest


def _extract(archive: Path) -> Path:
    """Unpack a .tar.gz bundle to a private temp folder; returns the bundle dir.

    The archive must start with its folder, manifest.json and SHA256SUMS
    (``edgepack build`` writes it so, then manifest.json.sig when signed);
    every later member must be a regular file the manifest lists, of the
    size it declares, each at most once.
    The declared total is checked against a cap and the free disk first.
    """
    with held():  # a signal between the two would leave the folder with nobody to remove it
        dest = Path(tempfile.mkdtemp(prefix="edge-run-"))
        atexit.register(shutil.rmtree, dest, True)
    fix = "use the .tar.gz that edgepack build wrote"
    try:
        with tarfile.open(archive, "r:gz") as tar:
            top = tar.next()
            if top is None or not top.isdir() or not SAFE_PATH.match(top.name.rstrip("/")) or "/" in top.name.rstrip("/"):
                _refuse(archive, "does not start with the bundle's folder", fix)
            name = top.name.rstrip("/")
            first = tar.next()
            if first is None or first.name != f"{name}/{MANIFEST}" or not first.isfile() \
                    or first.size > MAX_MANIFEST_BYTES:
                _refuse(archive, f"does not hold {name}/{MANIFEST} first (or it is over 16 MB)", fix)
            raw = tar.extractfile(first).read()
            manifest = _read_manifest_bytes(raw, f"{archive}:{MANIFEST}")
            declared = {SUMS: MAX_MANIFEST_BYTES, SIGNATURE: MAX_SIGNATURE_BYTES, **manifest["sizes"]}
            capped = {SUMS, SIGNATURE}  # no declared size: at most their cap
            total = sum(manifest["sizes"].values())
            free = shutil.disk_usage(dest).free
            if total > MAX_BUNDLE_BYTES or total > free:
                _refuse(archive, f"declares {total} bytes of files; the limit is {min(MAX_BUNDLE_BYTES, free)} "
                                 "(4 GiB or the free disk)", fix)
            root = dest / name
            root.mkdir()
            (root / MANIFEST).write_bytes(raw)
            for member in iter(tar.next, None):
                rel = member.name[len(name) + 1:] if member.name.startswith(name + "/") else None
                if rel is None or rel not in declared or not member.isfile():
                    _refuse(archive, f"holds {member.name!r}, which its manifest does not list as a file", fix)
                size = declared.pop(rel)
                if rel not in capped and member.size != size:
                    _refuse(archive, f"member {rel} is {member.size} bytes; the manifest says {size}", fix)
                if rel in capped and member.size > size:
                    _refuse(archive, f"{rel} is {member.size} bytes", fix)
                if hasattr(tarfile, "data_filter"):  # PEP 706 (3.11.4+; bookworm's 3.11.2 may lack it)
                    tar.extract(member, dest, filter="data")
                else:  # a regular file at a checked, plain path: what the data filter would allow
                    tar.extract(member, dest, set_attrs=False)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise UserError(f"bundle archive {archive} cannot be unpacked ({exc})", "copy the .tar.gz again") from None
    return root


def open_bundle(path: str | os.PathLike) -> tuple[Path, dict]:
    """Locate, verify and read a bundle.

    Args:
        path: the bundle folder, its manifest.json, or the .tar.gz.

    Returns:
        (bundle folder, manifest dict).

    Raises:
        UserError: not a bundle, any file differs from the manifest, or (a
            key pinned on this machine) the manifest is not signed by it.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"bundle {path} does not exist", "pass the bundle folder or its .tar.gz")
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        path = _extract(path)
    elif path.is_file() and path.name == MANIFEST:
        path = path.parent
    manifest_path = path / MANIFEST
    if manifest_path.is_symlink() or not manifest_path.is_file():
        raise UserError(f"{path} is not a bundle: no {MANIFEST}", "pass the folder that edgepack build wrote")
    if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
        _refuse(manifest_path, "is over 16 MB; edgepack writes a few KB")
    manifest = _read_manifest_bytes(manifest_path.read_bytes(), manifest_path)
    check_signature(path)  # before the files: a manifest changed after signing is named as such
    verify(path, manifest)
    checkpoint()  # a stop signal lost while unpacking or verifying ends the process here
    return path, manifest


def _present(folder: Path) -> set[str]:
    """Every file under the bundle folder (relative), refusing links and special files.

    The top-level ``.venv`` (install.sh's default venv) is the device's, not the bundle's.
    """
    found = set()
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        if here == folder and VENV in dirnames and not (folder / VENV).is_symlink():
            dirnames.remove(VENV)
        for entry in [*dirnames, *filenames]:
            path = here / entry
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                _refuse(folder, f"{path.relative_to(folder)} is a symlink or special file; a bundle holds plain files")
        found.update((here / f).relative_to(folder).as_posix() for f in filenames)
    return found


def verify(folder: Path, manifest: dict) -> None:
    """The folder holds exactly the manifest's files, each with its size and sha256.

    Also checks SHA256SUMS (what the device's sha256sum checked before any
    Python from the bundle ran) says the same as the manifest. A
    manifest.json.sig may be there (whether it must is ``trust``'s rule).
    """
    where = folder / MANIFEST
    if manifest.get("integrity") != manifest_digest(manifest):
        raise UserError(f"{where} was modified after the build (its digest does not match)",
                        "re-copy the bundle, or rebuild it with edgepack build")
    files, sizes = manifest.get("files"), manifest.get("sizes")
    check_paths(files, sizes, where)
    present = _present(folder)
    expected = set(files) | {MANIFEST, SUMS}
    extra, missing = sorted(present - expected - {SIGNATURE}), sorted(expected - present)
    if missing:
        raise UserError(f"bundle file {missing[0]} is missing from {folder}", "re-copy the whole bundle")
    if extra:
        raise UserError(
            f"{folder} holds {len(extra)} file(s) its manifest does not list: {', '.join(extra[:5])}",
            "a bundle runs only what it was built with: remove them, or re-copy the bundle",
        )
    if (folder / SUMS).read_text(encoding="ascii", errors="replace") != sums_text(files, sha256_file(where)):
        _refuse(folder / SUMS, "does not match the manifest")
    for rel, expected_sha in sorted(files.items()):
        file = folder / rel
        actual = sha256_file(file) if file.stat().st_size == sizes[rel] else "size differs"
        if actual != expected_sha:
            raise UserError(
                f"bundle file {rel} was modified: sha256 {actual[:12]}..., manifest says {expected_sha[:12]}...",
                "re-copy the bundle, or rebuild it with edgepack build",
            )
