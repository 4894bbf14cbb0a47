"""Stage 8–9 per target: the chosen model checked on each target's runtime, then staged as its bundle.

One model serves every target of a build; what differs per target is its
device wheels, the runtime release that must load the model (and the peak
memory it takes against the target's budget), its manifest, and what its
accelerators add (packager.accelerators).
"""

from __future__ import annotations

import json
from pathlib import Path

import edge_runtime

from .accelerators import stage_accelerators
from .bundle import stage_files, stage_health
from .manifest import Shipped, assemble
from .memory import check_budget, measure_peak_rss
from .report import detail, warn
from .runtimes import python_for, runtime_key
from .wheels import stage_wheels


def check_runs(model: Path, profiles) -> dict:
    """Each target's run on the host with its own runtime release: loads? peak RSS? (packager.memory).

    Targets sharing a runtime and thread count share one measurement.
    """
    runner_root = Path(edge_runtime.__file__).resolve().parent.parent
    done, runs = {}, {}
    for profile in profiles:
        key = (*runtime_key(profile), profile.default_threads)
        if key not in done:
            python = python_for(profile, log=detail)
            done[key] = measure_peak_rss(model, runner_root, profile.default_threads, python)
        runs[profile.name] = done[key]
    return runs


def stage_target(shipped: Shipped, stage: Path, profile, equipment: tuple[list, list], run: dict,
                 health_samples: dict) -> dict:
    """Write one target's bundle folder ``stage`` (not yet sealed); returns its manifest.

    Raises:
        UserError: the model does not fit the target's memory budget.
    """
    wheels, packages = equipment
    memory, crowded = check_budget(run, profile)
    if crowded:
        warn(crowded)
    q = shipped.quantized
    stage.mkdir()
    (stage / "model.tflite").write_bytes(q.tflite)
    if q.recipe is not None:
        (stage / "recipe.json").write_text(json.dumps(q.recipe, indent=1, default=str) + "\n")
    if wheels:
        stage_wheels(wheels, stage)
    stage_files(stage, profile.arch, profile.os["python"], packages)
    entries, warnings = stage_accelerators(q.tflite, q.precision, profile, stage, shipped.opts)
    for text in warnings:
        warn(text)
    manifest = assemble(shipped, stage.name, profile, packages, memory, {}, entries)
    manifest["health"] = stage_health(stage, manifest, health_samples)
    return manifest
