"""Accelerators a target profile can list, as rows of one table.

Each row says when it applies (the profile lists its delegate), what it
checks before any conversion (seconds, not minutes later), and what it adds
to each target's bundle (its manifest entry, files and warnings). The build's
conductor calls :func:`preflight` once and :func:`stage` per target; it has
no accelerator of its own.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from edge_runtime.errors import UserError


@dataclasses.dataclass(frozen=True)
class Accelerator:
    name: str  # the manifest key
    delegate: str  # the profile's delegates entry it applies to
    preflight: Callable  # (profile, opts) -> None, raises UserError
    stage: Callable  # (tflite, precision, profile, stage_dir, opts) -> (manifest entry, [warnings]); every target
    demanded: Callable  # (opts) -> bool: the user insists on it (--require-edgetpu)


def _edgetpu_preflight(profile, opts) -> None:
    from .edgetpu import check_compiler

    check_compiler(profile, opts.require_edgetpu)


def _edgetpu_stage(tflite: bytes, precision: str, profile, stage_dir: Path, opts) -> tuple[dict, list[str]]:
    """Every target gets the compatibility report; a target with the delegate gets the compiled model too."""
    from .edgetpu import edgetpu_stage

    runs_it = "edgetpu" in profile.delegates
    entry = edgetpu_stage(tflite, profile, stage_dir, opts.require_edgetpu and runs_it)
    warnings = []
    if runs_it and precision != "int8":
        warnings.append(f"target {profile.name}: the Edge TPU runs full-integer models only, and the chosen "
                        f"precision is {precision}: {entry['summary']}. --precision int8 demands "
                        "full integer (or fails, saying what it loses)")
    return entry, warnings


ACCELERATORS = (
    Accelerator("edgetpu", "edgetpu", _edgetpu_preflight, _edgetpu_stage, lambda opts: opts.require_edgetpu),
)


def _rows(profile) -> list[Accelerator]:
    return [a for a in ACCELERATORS if a.delegate in profile.delegates]


def preflight(profiles: list, opts) -> None:
    """Each accelerator's preconditions, before any work; one demanded with no target to run it is refused."""
    for acc in ACCELERATORS:
        users = [p for p in profiles if acc in _rows(p)]
        if acc.demanded(opts) and not users:
            raise UserError(f"--require-{acc.name}, but no target of {opts.target} lists the {acc.delegate} delegate",
                            f"add an {acc.name} target (e.g. coral-usb), or leave --require-{acc.name} out")
        for profile in users:
            acc.preflight(profile, opts)


def stage(tflite: bytes, precision: str, profile, stage_dir: Path, opts) -> tuple[dict, list[str]]:
    """{manifest key: entry} of each accelerator (its report serves every target; what runs on it goes only to
    targets that list it), and the warnings they raise."""
    entries, warnings = {}, []
    for acc in ACCELERATORS:
        entry, more = acc.stage(tflite, precision, profile, stage_dir, opts)
        entries[acc.name] = entry
        warnings += more
    return entries, warnings
