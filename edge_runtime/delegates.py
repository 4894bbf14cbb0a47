"""Delegates: which one the user asked for, loading it, and how much of the graph it took.

An NPU on an ARM Linux board is reached through a TFLite *external delegate*:
a shared library exporting ``tflite_plugin_create_delegate`` and
``tflite_plugin_destroy_delegate`` (NXP's VX delegate on the i.MX 8M Plus, for
one). NNAPI plays that role on Android only, where no LiteRT Python wheel
runs. Any failure to load or apply a delegate ends in a one-line reason and
the model on the CPU with XNNPACK, never a traceback: a board without its
NPU driver should still answer.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import re
import stat
import sys

from .errors import UserError

NAMES = ("xnnpack", "cpu", "edgetpu")  # what --delegate takes besides a library path
EDGETPU_LIBRARY = "libedgetpu.so.1"
SYMBOLS = ("tflite_plugin_create_delegate", "tflite_plugin_destroy_delegate")
MAX_OPTIONS = 64
MAX_OPTION_TEXT = 1024
OPTION_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
DELEGATE_OP = "DELEGATE"  # the op name TFLite gives every delegate kernel node
# Where a library a bundle names may live: the system's own (and their subfolders, e.g. /usr/lib/aarch64-linux-gnu).
LIBRARY_FOLDERS = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib")
ELF_MACHINES = {3: "x86", 8: "mips", 20: "powerpc", 21: "ppc64", 40: "arm", 62: "x86_64", 183: "aarch64",
                243: "riscv"}  # e_machine codes


@dataclasses.dataclass(frozen=True)
class Choice:
    """The delegate asked for: a name of NAMES, or "external" with its library and options."""

    name: str
    library: str = ""
    options: tuple = ()  # ((key, value), ...): hashable, ordered as given
    named: bool = False  # the library was named on the command line (--delegate PATH), not by the bundle

    def describe(self) -> str:
        if self.name == "external":
            return f"external delegate {self.library}"
        return "Edge TPU delegate" if self.name == "edgetpu" else f"{self.name} delegate"


def is_library(value: str) -> bool:
    """--delegate names a library rather than one of NAMES: it holds a '/' or ends in .so."""
    return "/" in value or value.endswith(".so") or ".so." in os.path.basename(value)


def parse_options(pairs: list[str]) -> tuple:
    """--delegate-option KEY=VALUE flags as ((key, value), ...).

    Raises:
        UserError: a flag without '=', an empty or odd key, or too many.
    """
    if len(pairs) > MAX_OPTIONS:
        raise UserError(f"at most {MAX_OPTIONS} --delegate-option flags, found {len(pairs)}")
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not OPTION_KEY.fullmatch(key) or len(value) > MAX_OPTION_TEXT or CONTROL.search(value):
            raise UserError(f"--delegate-option must be KEY=VALUE (key of letters, digits, _ . -; value without "
                            f"control characters, at most {MAX_OPTION_TEXT} characters), found {pair[:80]!r}",
                            "e.g. --delegate-option cache_file_path=/var/cache/vx")
        options[key] = value
    return tuple(options.items())


def choose(delegate: str | None, options: list[str] | tuple | None, target: dict) -> Choice:
    """The delegate to use: the command line's, else the target profile's first.

    ``delegate`` is one of NAMES or a library path; ``options`` are
    --delegate-option flags, valid only for an external delegate (the command
    line's, or the manifest's ``target.external_delegate``, whose options they
    override key by key).

    Raises:
        UserError: an unknown name, or options for a delegate that takes none.
    """
    extra = parse_options(list(options)) if options and not isinstance(options, tuple) else (options or ())
    if delegate is not None and is_library(delegate):
        table = target.get("external_delegate") or {}
        same = "/" in delegate and os.path.realpath(table.get("library", "")) == os.path.realpath(delegate)
        # the bundle's own library named on the command line: its options apply, the command line's win
        merged = {**(table.get("options", {}) if same else {}), **dict(extra)}
        return Choice("external", delegate, tuple(merged.items()), named=True)
    if delegate is not None and delegate not in NAMES:
        raise UserError(f"--delegate must be one of {', '.join(NAMES)} or the path of a delegate library (.so), "
                        f"found {delegate!r}", "e.g. --delegate /usr/lib/libvx_delegate.so")
    name = delegate or (target.get("delegates") or ["xnnpack"])[0]
    if name == "nnapi":  # written by profiles for Android; no Python runtime reaches NNAPI
        name = "xnnpack"
    if name == "external":
        table = target["external_delegate"]  # required with "external" by the manifest's validation
        merged = {**table.get("options", {}), **dict(extra)}
        return Choice("external", table["library"], tuple(merged.items()))
    if extra:
        raise UserError(f"--delegate-option is for an external delegate library; the delegate here is {name}",
                        "pass --delegate /path/to/libdelegate.so with it")
    return Choice(name)


def one_line(text: str, most: int = 300) -> str:
    """An error text as one short line (runtimes and delegates write several)."""
    line = " ".join(CONTROL.sub(" ", str(text)).split())
    return line if len(line) <= most else line[: most - 3] + "..."


def elf_machine(path: str) -> str | None:
    """What an ELF file is built for ("aarch64, 64-bit"), or None when it is unreadable or not ELF."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
        return None
    code = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    return f"{ELF_MACHINES.get(code, f'ELF machine {code}')}, {32 * head[4]}-bit"


def _load_failure(library: str, exc: OSError) -> str:
    """Why the loader refused a library. glibc reports one built for another
    architecture as "cannot open shared object file: No such file or
    directory" though the file is there: say what it is built for instead."""
    if "/" in library:
        theirs, ours = elf_machine(library), elf_machine(sys.executable)
        if theirs and ours and theirs != ours:
            return f"cannot load {library}: it is built for {theirs}, this machine is {ours}"
    return f"cannot load {library}: {one_line(str(exc).removeprefix(f'{library}: '))}"


def library_problem(library: str, bundle: str, named: bool) -> str | None:
    """Why a delegate library may not be opened (one line), or None.

    Opening a library runs its code (its ELF constructors) before anything
    can check what it is, so a path is judged before any dlopen. It is
    resolved first (symlinks, /proc/self/cwd/...) and must not lead into the
    bundle: a bundle carries no native code. One the manifest names must be
    in a system library folder (LIBRARY_FOLDERS); one named with --delegate
    may be anywhere else. Either way its owner is root or this user, neither
    its group nor others may write it, and nor may others its folder.
    """
    real, inside = os.path.realpath(library), os.path.realpath(bundle)
    if _within(real, inside):
        return f"refused: it resolves to {real}, inside the bundle; a bundle never brings native code"
    if not named and not any(_within(real, os.path.realpath(folder)) for folder in LIBRARY_FOLDERS):
        return (f"refused: the bundle names {real}, outside the system library folders "
                f"({', '.join(LIBRARY_FOLDERS)}); to load it, name it yourself with --delegate {library}")
    status, folder = os.stat(real), os.stat(os.path.dirname(real))
    if status.st_uid not in (0, os.getuid()):
        return f"refused: {real} belongs to uid {status.st_uid}, neither root nor this user"
    if status.st_mode & 0o022:
        return f"refused: {real} may be written by {'others' if status.st_mode & 0o002 else 'its group'}"
    if folder.st_mode & 0o002 and not folder.st_mode & stat.S_ISVTX:
        return f"refused: anyone may replace {real} (its folder is world-writable)"
    return None


def _within(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def open_delegate(mod, choice: Choice, bundle: str):
    """Load a delegate library: (delegate object, None) or (None, why not, one line).

    bundle: the folder the model came from (its libraries are refused, see library_problem).
    The library is opened and its two entry points looked up with ctypes
    first: the runtime's own loader reports a missing symbol as an
    AttributeError and then prints a traceback from its finalizer.
    """
    library = EDGETPU_LIBRARY if choice.name == "edgetpu" else choice.library
    if "/" in library and not os.path.isfile(library):
        return None, f"no file at {library}"
    problem = library_problem(library, bundle, choice.named) if "/" in library else None  # bare: the loader's path
    if problem:
        return None, problem
    try:
        handle = ctypes.CDLL(library)
    except OSError as exc:
        return None, _load_failure(library, exc)
    missing = [symbol for symbol in SYMBOLS if not hasattr(handle, symbol)]
    if missing:
        return None, f"{library} is not a TFLite external delegate (no {' or '.join(missing)})"
    options = dict(choice.options)
    try:
        return mod.load_delegate(library, options), None
    except (ValueError, RuntimeError, OSError) as exc:
        said = one_line(re.sub(r"^Failed to load delegate from \S+\s*", "", str(exc))) or "no reason given"
        asked = f" with options {', '.join(f'{k}={v}' for k, v in options.items())}" if options else ""
        return None, f"{library} refused to create its delegate{asked}: {said}"


@dataclasses.dataclass
class Coverage:
    """How much of the graph delegates took: kernel nodes, the original nodes they replaced, partitions."""

    delegate_nodes: int
    total_nodes: int
    partitions: int


def coverage(interpreter) -> Coverage | None:
    """Count the original nodes the delegate kernels replaced, from the interpreter's node list.

    After delegation the node list holds the model's original nodes, then one
    kernel node per partition (op name DELEGATE) whose inputs and outputs are
    the partition's. A partition's nodes are found by walking back from its
    outputs through the original producers, stopping at its inputs. Called
    before allocate_tensors, when only the delegates given to the interpreter
    have been applied (the default XNNPACK delegate is applied at allocation,
    to the nodes left over). None when the runtime does not list nodes.
    """
    try:
        ops = interpreter._get_ops_details()  # noqa: SLF001 -- the only view of the graph after delegation
    except (AttributeError, ValueError, RuntimeError):
        return None
    original, kernels, taken = _taken(ops)
    return Coverage(len(taken), len(original), len(kernels))


def _taken(ops: list[dict]) -> tuple[list[dict], list[dict], set[int]]:
    """(original nodes, delegate kernel nodes, indices of the original nodes the kernels replaced); see coverage()."""
    original = [op for op in ops if op["op_name"] != DELEGATE_OP]
    kernels = [op for op in ops if op["op_name"] == DELEGATE_OP]
    producer = {int(t): op["index"] for op in original for t in op["outputs"]}
    inputs = {op["index"]: [int(t) for t in op["inputs"] if t >= 0] for op in original}
    taken = set()
    for kernel in kernels:
        stop = {int(t) for t in kernel["inputs"]}
        todo = [int(t) for t in kernel["outputs"]]
        seen = set()
        while todo:
            tensor = todo.pop()
            if tensor in stop or tensor in seen or tensor not in producer:
                continue
            seen.add(tensor)
            node = producer[tensor]
            taken.add(node)
            todo.extend(inputs[node])
    return original, kernels, taken


def left_out(interpreter) -> dict[str, int]:
    """{op name: count}, most first, of the original nodes no delegate kernel took: what splits the partitions.

    Works after allocate_tensors too (the default XNNPACK delegate applied);
    empty when the runtime does not list nodes.
    """
    try:
        ops = interpreter._get_ops_details()  # noqa: SLF001 -- as in coverage()
    except (AttributeError, ValueError, RuntimeError):
        return {}
    original, _, taken = _taken(ops)
    counts: dict[str, int] = {}
    for op in original:
        if op["index"] not in taken:
            counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))
