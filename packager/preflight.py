"""Stage 0 of `edgepack build`: the options and targets, refused in seconds, before minutes of conversion.

The options themselves, the targets (profiles that exist, each named once,
a device some runtime wheel exists for), one I/O dtype they share, a folder
the bundles can be written to, the --input-shape values. Nothing is written.
Later stages check their own preconditions just as early (the signing key,
each accelerator's compiler): the conductor calls them right after this.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from edge_runtime.errors import UserError

from .profiles import IO_DTYPES, NO_RUNTIME_WHEELS, load_profile
from .shapes import parse_input_shapes

PRECISIONS = ("auto", "int8")
# auto: the precision ladder; int8: full integer or fail; strict: the ladder, on calibration data that varies
BUILD_PRECISIONS = (*PRECISIONS, "strict")
INPUT_FORMATS = ("tensor", "image-uint8")


@dataclasses.dataclass
class Plan:
    """What the preflight settled: the targets, their shared I/O dtype, where bundles go."""

    profiles: list
    io_dtype: str
    out_dir: Path
    input_shapes: dict[str, list[int]]  # --input-shape, parsed


def preflight(opts) -> Plan:
    """Check ``opts`` (a BuildOptions) and the targets; raises UserError on the first problem."""
    out_dir = Path(opts.out_dir)
    check_out_dir(out_dir)
    profiles = load_targets(opts.target, opts.wheels)
    io_dtype = opts.io_dtype or shared_io_dtype(profiles)
    check_options(opts, io_dtype)
    return Plan(profiles, io_dtype, out_dir, parse_input_shapes(opts.input_shapes))


def load_targets(targets: str, wheels: bool = True) -> list:
    """The profiles ``--target`` names: one, or several separated by commas (each a name or a .toml path).

    Raises:
        UserError: an unknown or repeated target, or one whose device no runtime wheel exists for.
    """
    parts = [t.strip() for t in targets.split(",")] if targets else []
    if not parts or not all(parts):
        raise UserError(f"--target {targets!r}: expected one target or several separated by commas",
                        "e.g. --target rpi4 or --target rpi4,rpi5,zero2w (edgepack targets lists them)")
    profiles = [load_profile(t) for t in parts]
    seen = set()
    for profile in profiles:
        if profile.name in seen:
            raise UserError(f"--target {targets}: {profile.name} is named twice", "name each target once")
        seen.add(profile.name)
        if profile.arch in NO_RUNTIME_WHEELS and wheels:
            raise UserError(f"target {profile.name}: {NO_RUNTIME_WHEELS[profile.arch]}",
                            "use the device's 64-bit OS (targets rpi4, rpi5, zero2w), or build with --no-wheels "
                            "and install a TFLite runtime on the device yourself")
    return profiles


def shared_io_dtype(profiles) -> str:
    """The targets' I/O dtype: one model serves them all only when they agree."""
    wanted = {p.io_dtype for p in profiles}
    if len(wanted) > 1:
        listed = ", ".join(f"{p.name} {p.io_dtype}" for p in profiles)
        raise UserError(f"the targets want different I/O dtypes ({listed}) and one build makes one model",
                        "pass --io-dtype to choose one for all, or build the targets separately")
    return wanted.pop()


def check_out_dir(out_dir: Path) -> None:
    """-o names a folder we can write, or one we can create: refused before any work, nothing created.

    Otherwise mkdir or mkdtemp fail with a traceback, after the model and the
    calibration data were read.
    """
    existing = out_dir
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if existing.is_symlink() and not existing.exists():
        found = f"{existing} is a broken symlink"
    elif not existing.is_dir():
        found = f"{existing} is {'an existing file' if existing.is_file() else 'something else'}, not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        found = f"{existing} is a folder you cannot write to"
    else:
        return
    raise UserError(f"-o/--out-dir {out_dir} cannot hold the bundle: {found}",
                    "give a folder you can write to (it is created when missing), e.g. -o dist")


def check_options(opts, io_dtype: str) -> None:
    if io_dtype not in IO_DTYPES:
        raise UserError(f"--io-dtype must be one of {', '.join(IO_DTYPES)}, found {io_dtype!r}")
    if opts.precision not in BUILD_PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(BUILD_PRECISIONS)}, found {opts.precision!r}")
    if opts.input_format not in INPUT_FORMATS:
        raise UserError(f"--input-format must be tensor or {INPUT_FORMATS[1]}, found {opts.input_format!r}")
    if opts.precision == "strict" and opts.accept_low_fidelity:
        raise UserError("--precision strict and --accept-low-fidelity contradict each other: strict refuses "
                        "what --accept-low-fidelity would ship", "drop one of them")
    if opts.precision == "strict" and opts.calibration == "random":
        raise UserError("--precision strict refuses --calibration random: fidelity measured on noise means nothing",
                        "calibrate on real samples, or drop --precision strict")
    for flag, value in (("--min-cosine", opts.min_cosine), ("--min-top1", opts.min_top1),
                        ("--min-f1", opts.min_f1), ("--min-channel-cosine", opts.min_channel_cosine),
                        ("--min-detection-f1", opts.min_detection_f1), ("--min-exact-match", opts.min_exact_match)):
        if value is not None and not 0 <= value <= 1:
            raise UserError(f"{flag} must be in [0, 1], found {value}", "0 switches the criterion off")
    if opts.max_memory is not None and opts.max_memory < 256:
        raise UserError(f"--max-memory is in MB and at least 256, found {opts.max_memory}", "e.g. --max-memory 8000")
    if opts.strategy_timeout is not None and opts.strategy_timeout <= 0:
        raise UserError(f"--strategy-timeout must be a positive number of seconds, found {opts.strategy_timeout}")
