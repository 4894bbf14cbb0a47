"""`edgepack evaluate` without labels: the bundle against the float model, by what each output means.

Each output is judged by its kind's task figure (packager.kinds: top-1 for
classes, strings for CTC, detections after NMS, per-channel F1 for score
maps, cosine for regression), as the build judged it on its held-out
samples, here on the user's own data. The kinds come from the bundle's
manifest (inferred again for bundles made before kinds).
"""

from __future__ import annotations

from pathlib import Path

from edge_runtime.errors import UserError

from .calibration import load_calibration
from .fidelity import Bar, compare, format_table, shortfalls
from .kinds import OutputKind
from .kinds.infer import infer_kinds


def agreement(side, output: str | None) -> dict:
    """{"name", "model", "data", "samples", "labels": None, "fidelity": report, "shortfalls"} on ``side``'s data."""
    names = [o["name"] for o in side.runtime.outputs]
    if output is not None and output not in names:
        raise UserError(f"--output {output} is not an output of the bundle; its outputs are {', '.join(names)}",
                        "pick one of those names")
    data = side.data
    if data == "random" or not Path(data).exists():
        raise UserError(f"--data {data} is not an image folder, a .npy or a .npz", "pass samples from the task")
    samples = load_calibration(data, side.inputs, side.shapes, side.mean, side.std, side.image)
    count = len(next(iter(samples.values())))
    floats, bundled = side.run(samples)
    chosen = [output] if output else names
    refs = {n: floats[n] for n in chosen}
    kinds = _kinds(side.manifest, refs)
    report = compare(refs, {n: bundled[n] for n in chosen}, count, kinds)
    bar = Bar(**{k: v for k, v in side.manifest.get("precision", {}).get("bar", {}).items()
                 if k in Bar.__dataclass_fields__})
    return {"name": side.manifest["name"], "model": str(side.model_path), "data": str(data), "samples": count,
            "labels": None, "precision": side.manifest.get("precision", {}).get("chosen"), "fidelity": report,
            "shortfalls": shortfalls(report, bar)}


def _kinds(manifest: dict, refs: dict) -> dict[str, OutputKind]:
    known = {o["name"]: OutputKind.from_dict(o["kind"]) for o in manifest["outputs"] if "kind" in o}
    missing = {n: r for n, r in refs.items() if n not in known}
    if missing:  # a bundle from before output kinds: from the values alone
        known.update(infer_kinds(None, [], [(n, list(r.shape[1:])) for n, r in missing.items()], missing))
    return {n: known[n] for n in refs}


def format_agreement(report: dict) -> str:
    lines = [f"evaluate   {report['name']} on {Path(report['data']).name}: {report['samples']} samples, no labels: "
             "the bundle against the float model, each output by what it means",
             f"float      {report['model']} (sha256 matches the bundle's source)", "",
             format_table(report["fidelity"], report["precision"] or "bundle")]
    verdict = ("holds the build's bar on this data" if not report["shortfalls"] else
               "below the build's bar on this data: " + "; ".join(report["shortfalls"]))
    return "\n".join([*lines, "", f"verdict    {verdict}"])
