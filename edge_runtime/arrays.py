""".npy/.npz files from anyone, read with memory bounded before allocation.

``np.load`` trusts the file: an .npy header may declare a shape of
petabytes, and an .npz member is inflated whole before its size is known (a
1.1 MB request once grew the server by 1 GB). Here every size is checked
against the caller's budget before anything is allocated or inflated: the
.npy header's shape times its item size, and each .npz member's declared size
(zip central directory), and no more bytes are read than were declared.
Pickles (object arrays) are never loaded. Standard library and numpy only.
"""

from __future__ import annotations

import ast
import io
import math
import os
import re
import struct
import zipfile
import zlib
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npy_format

from .errors import UserError

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members / an empty zip
PICKLE_MAGIC = b"\x80"  # protocol 2+ pickles start with PROTO
MAX_HEADER = 10_000  # numpy's own limit on an .npy header (its max_header_size)
MAX_DIMS = 32  # numpy allows 64; no model input comes close
NUMERIC_DESCR = re.compile(r"[<>|=]?[biufc][0-9]{1,2}")  # what np.save writes for bool and numbers
OBJECT_DESCR = re.compile(r"[<>|=]?O[0-9]*")  # object arrays: their data is a pickle
MAX_MEMBERS = 256  # arrays in one .npz: one per model input
MAX_DIRECTORY = MAX_MEMBERS * 512  # zip central directory bytes (an entry: 46 + its name and extras)
DEFLATE_MAX_RATIO = 1032  # the most deflate can expand its input; a declared size beyond is a lie
CHUNK = 1 << 20  # bytes read at a time: no transient copy of a whole array
FIX = "save plain numeric arrays with np.save / np.savez (or np.savez_compressed)"


class NpzArrays(dict):
    """The arrays of an .npz by name.

    Also usable where ``np.load``'s NpzFile was (``.files``, ``with``), so
    callers written for it keep working; every array is already in memory.
    """

    @property
    def files(self) -> list[str]:
        return list(self)

    def __enter__(self) -> NpzArrays:
        return self

    def __exit__(self, *exc) -> None:
        return None


def load_arrays(source: str | os.PathLike | BinaryIO, max_bytes: int, what: str,
                too_big: str = "split it into smaller files") -> np.ndarray | NpzArrays:
    """Read an .npy (one array) or .npz (arrays by name), refusing more than ``max_bytes`` of array data.

    Args:
        source: a path, or a seekable binary file object (positioned at the start of the data).
        max_bytes: the most the decoded arrays may take together, checked against the
            sizes the file declares before anything is allocated or decompressed.
        what: how to name the source in errors (a path, "the .npz body").
        too_big: the hint when the file is over ``max_bytes``.

    Raises:
        UserError: not an .npy/.npz, pickled or non-numeric arrays, sizes over
            ``max_bytes`` or inconsistent with the file, truncated or corrupt data.
    """
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, "rb") as fp:
                return _load(fp, max_bytes, what, too_big)
        except OSError as exc:
            raise UserError(f"{what} cannot be read ({exc.strerror or exc})", "check the path") from None
    return _load(source, max_bytes, what, too_big)


def _load(fp, max_bytes: int, what: str, too_big: str) -> np.ndarray | NpzArrays:
    start = fp.tell()
    size = fp.seek(0, io.SEEK_END) - start
    fp.seek(start)
    magic = fp.read(len(NPY_MAGIC))
    fp.seek(start)
    if magic.startswith(NPY_MAGIC):
        budget = _Budget(max_bytes, what, too_big)
        array = _read_npy(fp, size, budget, what)
        extra = start + size - fp.tell()
        if extra:
            raise UserError(f"{what} holds {extra:,} bytes after its array, which np.save never writes", FIX)
        return array
    if magic.startswith(ZIP_MAGICS):
        return _read_npz(fp, start, size, max_bytes, what, too_big)
    if magic.startswith(PICKLE_MAGIC):
        raise _pickle_error(what)
    if not magic:
        raise UserError(f"{what} is empty: it is neither an .npy nor an .npz file", FIX)
    raise UserError(f"{what} is neither an .npy nor an .npz file (it starts with {magic[:6]!r})", FIX)


class TooLarge(UserError):
    """Over the caller's byte budget (a server answers 413, not 400)."""


class _Budget:
    """Array bytes still allowed; taken before each allocation."""

    def __init__(self, max_bytes: int, what: str, too_big: str):
        self.left, self.max_bytes, self.what, self.too_big = max_bytes, max_bytes, what, too_big

    def take(self, nbytes: int, found: str) -> None:
        if nbytes > self.left:
            raise TooLarge(f"{self.what} declares {found} ({nbytes:,} bytes): over the limit of "
                            f"{self.max_bytes:,} bytes of arrays", self.too_big)
        self.left -= nbytes


def _brief(exc: Exception) -> str:
    """An exception's first line, short: errors are one line."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]


def _pickle_error(what: str) -> UserError:
    return UserError(f"{what} is not a numpy file without pickles: it holds pickled Python objects, "
                     "and edgepack never loads pickles", FIX)


def _read_npy(fp, available: int, budget: _Budget, what: str) -> np.ndarray:
    """One .npy from ``fp``; ``available`` bytes are there to read (the file, or the member's declared size)."""
    shape, fortran, dtype, header_size = _read_header(fp, what)
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    budget.take(nbytes, f"a {dtype.name} array of shape {shape}")
    if header_size + nbytes > available:
        raise UserError(f"{what} is truncated: its header declares {nbytes:,} bytes of data, "
                        f"{max(available - header_size, 0):,} follow", FIX)
    data = _read_exactly(fp, nbytes, what)
    array = np.frombuffer(data, dtype=dtype, count=count)
    return array.reshape(shape[::-1]).transpose() if fortran else array.reshape(shape)


def _read_header(fp, what: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran order, dtype, header bytes) of an .npy, checked before any data is read."""
    prefix = fp.read(len(NPY_MAGIC) + 2)
    if not prefix.startswith(NPY_MAGIC):
        if prefix.startswith(PICKLE_MAGIC):
            raise _pickle_error(what)
        raise UserError(f"{what} is not an .npy (it starts with {prefix[:6]!r})", FIX)
    version = tuple(prefix[len(NPY_MAGIC):])
    if version not in ((1, 0), (2, 0)):
        raise UserError(f"{what} is an .npy of format version {'.'.join(map(str, version)) or '?'}; "
                        "read are versions 1.0 and 2.0 (what np.save writes for numeric arrays)", FIX)
    length_format = "<H" if version == (1, 0) else "<I"
    length_bytes = fp.read(struct.calcsize(length_format))
    if len(length_bytes) != struct.calcsize(length_format):
        raise UserError(f"{what} is truncated inside its .npy header", FIX)
    (length,) = struct.unpack(length_format, length_bytes)
    if length > MAX_HEADER:  # numpy would read it all before its own check
        raise UserError(f"{what} declares an .npy header of {length:,} bytes, over numpy's limit of {MAX_HEADER:,}",
                        FIX)
    header = fp.read(length)
    if len(header) != length:
        raise UserError(f"{what} is truncated inside its .npy header", FIX)
    _check_descr(header, what)
    parse = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
    try:
        shape, fortran, dtype = parse(io.BytesIO(length_bytes + header))
    except (ValueError, TypeError, OverflowError) as exc:
        raise UserError(f"{what} has an unreadable .npy header ({_brief(exc)})", FIX) from None
    # numpy refuses a shape whose non-zero dimensions overflow, even with a zero among them
    if (len(shape) > MAX_DIMS or any(d < 0 for d in shape)
            or math.prod(max(d, 1) for d in shape) * dtype.itemsize > np.iinfo(np.intp).max):
        raise UserError(f"{what} declares an impossible shape {shape[:8]}", FIX)
    return shape, fortran, dtype, len(prefix) + len(length_bytes) + length


def _check_descr(header: bytes, what: str) -> None:
    """The header is a Python literal naming a plain numeric dtype; refused before numpy parses it.

    numpy's parser only warns on the headers it repairs (Python 2 ones) and
    on deprecated dtype names, and builds any dtype a descr names; here
    pickles (object arrays), structured and text arrays never get that far.
    """
    try:
        fields = ast.literal_eval(header.decode("latin1"))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
        raise UserError(f"{what} has an unreadable .npy header ({_brief(exc)})", FIX) from None
    descr = fields.get("descr") if isinstance(fields, dict) else None
    if any(OBJECT_DESCR.fullmatch(code) for code in _strings(descr)):
        raise _pickle_error(what)
    if not isinstance(descr, str) or not NUMERIC_DESCR.fullmatch(descr):
        raise UserError(f"{what} holds {str(descr)[:60]} values; only plain numeric arrays are read", FIX)


def _strings(value) -> list[str]:
    """Every string in a (possibly nested, structured) descr."""
    if isinstance(value, str):
        return [value]
    return [s for item in value for s in _strings(item)] if isinstance(value, (list, tuple)) else []


def _read_exactly(fp, nbytes: int, what: str) -> bytearray:
    """``nbytes`` from ``fp`` into one buffer, a chunk at a time (never more than asked)."""
    data = bytearray(nbytes)
    view, got = memoryview(data), 0
    while got < nbytes:
        chunk = fp.read(min(CHUNK, nbytes - got))
        if not chunk:
            raise UserError(f"{what} is truncated: {got:,} of the {nbytes:,} bytes of data its header declares", FIX)
        view[got:got + len(chunk)] = chunk
        got += len(chunk)
    return data


# --- .npz: a zip of .npy members ---

_EOCD = struct.Struct("<4s4H2LH")  # end of central directory: signature ... directory size, offset, comment length
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError, struct.error,
              NotImplementedError, RuntimeError, OverflowError)


def _read_npz(fp, start: int, size: int, max_bytes: int, what: str, too_big: str) -> NpzArrays:
    _check_directory(fp, start, size, what)
    fp.seek(start)
    try:
        with zipfile.ZipFile(fp) as archive:
            members = _check_members(archive.infolist(), size, max_bytes, what, too_big)
            budget = _Budget(max_bytes, what, too_big)
            arrays = NpzArrays()
            for name, info in members:
                arrays[name] = _read_member(archive, info, budget, f"{what} member {info.filename!r}")
            return arrays
    except ZIP_ERRORS as exc:
        raise UserError(f"{what} is not a readable .npz ({type(exc).__name__}: {_brief(exc)})", FIX) from None


def _check_directory(fp, start: int, size: int, what: str) -> None:
    """Refuse a zip whose central directory declares more members or bytes than an .npz holds.

    zipfile builds an object for every member before anything can be
    checked (about 500 bytes each: 26 MB of empty members took 141 MB), so
    the end-of-directory record that it reads is checked here first, the same
    way it finds it.
    """
    tail_size = min(size, _EOCD.size + 0xFFFF)
    fp.seek(start + size - tail_size)
    tail = fp.read(tail_size)
    last = tail[-_EOCD.size:]  # zipfile looks at the very end first (no archive comment), then searches back
    plain_end = last[:4] == b"PK\x05\x06" and last[-2:] == b"\0\0"
    at = len(tail) - _EOCD.size if plain_end else tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < _EOCD.size:
        return  # zipfile finds no directory either, and says so
    _, _, _, _, entries, directory, _, _ = _EOCD.unpack_from(tail, at)
    locator_at = at - _ZIP64_LOCATOR.size
    if locator_at >= _ZIP64_EOCD.size and tail[locator_at:locator_at + 4] == b"PK\x06\x07":
        record = _ZIP64_EOCD.unpack_from(tail, locator_at - _ZIP64_EOCD.size)
        if record[0] == b"PK\x06\x06":
            entries, directory = record[7], record[8]
    if entries > MAX_MEMBERS or directory > MAX_DIRECTORY:
        raise UserError(f"{what} declares {entries:,} members in a {directory:,}-byte directory; "
                        f"an .npz of model inputs holds at most {MAX_MEMBERS}", FIX)


def _check_members(infos: list[zipfile.ZipInfo], size: int, max_bytes: int, what: str, too_big: str) \
        -> list[tuple[str, zipfile.ZipInfo]]:
    """(array name, member) pairs, checked on what the directory declares, before any member is inflated."""
    if len(infos) > MAX_MEMBERS:
        raise UserError(f"{what} holds {len(infos):,} members; an .npz of model inputs holds at most "
                        f"{MAX_MEMBERS}", FIX)
    members, declared = {}, 0
    for info in infos:
        name = info.filename
        where = f"{what} member {name!r}"
        if not name.endswith(".npy") or name[:-4] in members:
            problem = "a second member named" if name.endswith(".npy") else "a member that is not an .npy:"
            raise UserError(f"{what} holds {problem} {name!r}", FIX)
        if info.flag_bits & 0x1:
            raise UserError(f"{where} is encrypted", FIX)
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise UserError(f"{where} is compressed with zip method {info.compress_type}; np.savez stores and "
                            "np.savez_compressed deflates", FIX)
        most = info.compress_size if info.compress_type == zipfile.ZIP_STORED else \
            info.compress_size * DEFLATE_MAX_RATIO + 1024
        if info.compress_size > size or info.file_size > most:
            raise UserError(f"{where} declares {info.file_size:,} bytes from {info.compress_size:,} compressed "
                            f"in a {size:,}-byte file: more than its compression can hold", FIX)
        declared += info.file_size
        members[name[:-4]] = info
    allowance = max_bytes + len(members) * (MAX_HEADER + 16)  # each member's .npy header on top of its data
    if declared > allowance:
        raise TooLarge(f"{what} declares {declared:,} bytes once inflated: over the limit of {max_bytes:,} "
                        "bytes of arrays", too_big)
    return list(members.items())


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: _Budget, what: str) -> np.ndarray:
    """One member, inflated no further than the size it declares (its CRC is checked at its end)."""
    with archive.open(info) as member:
        array = _read_npy(member, info.file_size, budget, what)
        if member.read(1):  # at most one byte past the array: zipfile then checks the CRC too
            raise UserError(f"{what} holds bytes after its array", FIX)
        return array
