"""Accelerators a target may list among its delegates: one row each, run by the build at two points.

Before the conversion (minutes of work), :func:`check_accelerators` runs each
row's preflight on the targets that list its delegate, so a build that cannot
honour what it was asked for fails in seconds. Per target, after the
precision is chosen, :func:`stage_accelerators` runs each row's stage: the
manifest entry under the row's name, and the warnings the build prints. A
new accelerator is a new row here, not an ``if`` in the conductor.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from . import edgetpu


@dataclasses.dataclass(frozen=True)
class Accelerator:
    name: str  # the delegate a profile lists, and the manifest's key
    applies: Callable  # (profile) -> bool: the target lists this accelerator
    required: Callable  # (build options) -> bool: the user demands it (--require-<name>)
    # (the profiles it applies to, required, --target as given) -> None; raises UserError
    preflight: Callable
    # (tflite, chosen precision, profile, stage dir, required for this target) -> (manifest entry, warnings);
    # run for every target: a row may report on a target that does not list it
    stage: Callable


ACCELERATORS: tuple[Accelerator, ...] = (
    Accelerator("edgetpu", lambda profile: "edgetpu" in profile.delegates, lambda opts: opts.require_edgetpu,
                edgetpu.preflight, edgetpu.stage_target),
)


def check_accelerators(profiles: list, opts) -> None:
    """Before the conversion: every accelerator's preflight on the targets that list it.

    Raises:
        UserError: an accelerator the options demand that no target lists,
            or that cannot be used for a target that lists it.
    """
    for row in ACCELERATORS:
        row.preflight([p for p in profiles if row.applies(p)], row.required(opts), opts.target)


def stage_accelerators(tflite: bytes, precision: str, profile, stage_dir: Path, opts) -> tuple[dict, list[str]]:
    """One target's accelerator entries for the manifest ({name: entry}) and the warnings for the build."""
    entries, warnings = {}, []
    for row in ACCELERATORS:
        entry, notes = row.stage(tflite, precision, profile, stage_dir, row.required(opts) and row.applies(profile))
        entries[row.name] = entry
        warnings += notes
    return entries, warnings
