"""`edgepack evaluate`: task metrics for the float ONNX model and the bundle, side by side.

Fidelity (cosine, top-1 agreement) says how close the bundle is to the float
model; this says what the user cares about: how often each one is right on
labelled data. The float side is the very ONNX file the bundle was built from
(checked by sha256) in onnxruntime; the bundle side runs through
edge_runtime exactly as on the device.

Data comes in the forms the build's calibration takes (.npy, .npz, a flat
image folder, each with ``--labels`` class ids in a .npy) or as an image
folder with one sub-folder per class (labels from the folder names, sorted).
Metrics are computed here from a confusion matrix: the host package does not
depend on scikit-learn.
"""

from __future__ import annotations

import copy

from pathlib import Path

import numpy as np

from edge_runtime.bundle import sha256_file
from edge_runtime.errors import UserError

from .calibration import IMAGE_SUFFIXES, _load_array_file, check_samples, load_calibration, load_image_folder

DATA_FORMS = "an image folder (flat, or one sub-folder per class), a .npy (one input) or a .npz (one array per input)"


def find_model(bundle: Path, manifest: dict, given: str | None) -> Path:
    """The float ONNX file the bundle was built from, checked against the manifest's sha256.

    The bundle does not carry the ONNX file, so it is ``--model`` or, without
    it, the manifest's source file name next to the bundle or in the current
    directory.
    """
    source = manifest["source"]
    if given:
        path = Path(given)
        if not path.is_file():
            raise UserError(f"--model {given} is not a file", f"pass the {source['file']} the bundle was built from")
    else:
        name = Path(source["file"]).name  # a bare name: never a path the manifest chose
        places = list(dict.fromkeys([bundle.resolve().parent, Path.cwd()]))
        found = [p / name for p in places if (p / name).is_file()]
        if not found:
            raise UserError(
                f"the float model {name} that bundle {manifest['name']} was built from is not next to the bundle "
                f"nor in the current directory (looked in {', '.join(map(str, places))})",
                "pass it with --model PATH: the bundle does not carry the ONNX file",
            )
        path = found[0]
    actual = sha256_file(path)
    if actual != source["sha256"]:
        raise UserError(
            f"{path} is not the model bundle {manifest['name']} was built from: its sha256 is {actual[:16]}..., "
            f"the manifest records {source['sha256'][:16]}... for {source['file']}",
            "pass the exact .onnx file given to edgepack build with --model PATH (or rebuild the bundle from this one)",
        )
    return path


def is_class_scores(output: dict) -> bool:
    """A classes output (its kind in the manifest; bundles from before kinds: one axis longer than 1, the last)."""
    if "kind" in output:
        return output["kind"]["kind"] == "classes"
    shape = output["shape"]
    return len(shape) >= 1 and shape[-1] >= 2 and all(d == 1 for d in shape[:-1])


def score_output(outputs: list[dict], name: str | None) -> dict:
    """The output to score: --output, else the single output, else the first class-score vector."""
    names = [o["name"] for o in outputs]
    if name is not None:
        if name not in names:
            raise UserError(f"--output {name} is not an output of the bundle; its outputs are {', '.join(names)}",
                            "pick one of those names")
        chosen = [o for o in outputs if o["name"] == name]
    else:
        chosen = [o for o in outputs if is_class_scores(o)]
    if not chosen or not is_class_scores(chosen[0]):
        shapes = ", ".join(f"{o['name']} {o['shape']}" for o in (chosen or outputs))
        raise UserError(
            f"evaluate scores a vector of class scores per sample (shape [..., classes], other axes 1); "
            f"found {shapes}",
            "evaluate applies to classifiers; compare other models with the fidelity report (edgepack inspect)",
        )
    return chosen[0]


def class_folders(folder: Path) -> list[Path]:
    """The sub-folders of an image folder, sorted by name: one per class (empty for a flat folder)."""
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def load_class_folders(folder: Path, spec, shape: list[int], mean=None, std=None, raw: bool = False):
    """Images sorted into one sub-folder per class -> (samples, labels, class names).

    Each class folder is read by the calibration's own image loader, so
    resizing and normalisation are exactly the build's. A class folder may
    be empty (the class then has no samples).
    """
    names, arrays, labels = [], [], []
    for index, sub in enumerate(class_folders(folder)):
        names.append(sub.name)
        if not any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in sub.iterdir()):
            continue
        images = load_image_folder(sub, spec, shape, mean, std, raw=raw)
        arrays.append(images)
        labels.append(np.full(len(images), index, dtype=np.int64))
    if not arrays:
        raise UserError(
            f"{folder}: the class folders {', '.join(names)} hold no images (looked for {', '.join(IMAGE_SUFFIXES)})",
            "put each labelled image in the sub-folder named after its class",
        )
    samples = check_samples(np.concatenate(arrays), spec, shape, str(folder))
    return samples, np.concatenate(labels), names


def load_labels(path: str) -> np.ndarray:
    """Class ids from a .npy: integers, one per sample."""
    file = Path(path)
    if not file.is_file() or file.suffix != ".npy":
        raise UserError(f"--labels {path} is not a .npy file", "save the class ids with np.save('labels.npy', ids)")
    labels = _load_array_file(file)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise UserError(
            f"--labels {path}: expected one integer class id per sample, shape (N,), found {labels.dtype} "
            f"with shape {labels.shape}",
            "save integer class ids: np.save(path, ids.astype(np.int64)); not one-hot rows or floats",
        )
    return labels.astype(np.int64)


def check_labels(labels: np.ndarray, count: int, classes: int, source: str) -> None:
    if len(labels) != count:
        raise UserError(
            f"{source} holds {len(labels)} labels, the data {count} samples",
            "give exactly one class id per sample, in the same order",
        )
    if count and (labels.min() < 0 or labels.max() >= classes):
        raise UserError(
            f"{source}: class ids span {labels.min()}..{labels.max()}, the model scores {classes} classes "
            f"(ids 0..{classes - 1})",
            "give the index of the class in the model's score vector",
        )


def _data_inputs(onnx_inputs, manifest: dict, data: Path) -> tuple[list, dict[str, list[int]]]:
    """The inputs the data must hold, with their static shapes.

    These are the bundle's inputs; an input fixed at build time may also be
    in a .npz (the same file that calibrated the build), but need not be.
    """
    shapes = {s["name"]: s["shape"] for s in manifest["inputs"]}
    if data.suffix == ".npz" and data.is_file():
        with _load_array_file(data) as archive:
            keys = set(archive.files)
        shapes.update({f["name"]: f["shape"] for f in manifest.get("fixed_inputs", []) if f["name"] in keys})
    return [s for s in onnx_inputs if s.name in shapes], shapes


def _read_data(data: str, labels: str | None, inputs, shapes, mean, std, image=None):
    """(samples per input, labels, class names or None)."""
    path = Path(data)
    if data == "random" or not (path.is_dir() or (path.is_file() and path.suffix in (".npy", ".npz"))):
        raise UserError(f"--data {data} is not {DATA_FORMS}", "pass labelled samples from the task")
    if path.is_dir() and class_folders(path):
        if labels is not None:
            raise UserError(f"--data {data} has one sub-folder per class, which gives the labels; --labels too",
                            "drop --labels, or pass a flat folder / array file with --labels")
        if len(inputs) != 1:
            raise UserError(f"an image folder feeds a model with one input; this bundle takes {len(inputs)}",
                            "pass a .npz with one array per input name, and --labels")
        spec = inputs[0]
        samples, ids, names = load_class_folders(path, spec, shapes[spec.name], mean, std, raw=image is not None)
        return {spec.name: samples}, ids, names
    if labels is None:
        raise UserError(f"--data {data} carries no labels", "pass --labels LABELS.npy (one class id per sample), "
                        "or an image folder with one sub-folder per class")
    return load_calibration(data, inputs, shapes, mean, std, image), load_labels(labels), None


def _camera_input(manifest: dict, onnx_model, mean, std):
    """A camera-frame bundle (--input-format image-uint8): its ImageInput, and the user's model with the same
    normalisation in front, so both sides read the same pixels. None, model for a tensor-input bundle."""
    import dataclasses

    from .inputs.image import FORMAT, ImageInput

    spec = next((s for s in manifest["inputs"] if s.get("format") == FORMAT), None)
    if spec is None:
        return None, onnx_model
    norm = spec["normalisation"]
    for flag, given, built in (("--mean", mean, norm["mean"]), ("--std", std, norm["std"])):
        if given and list(np.broadcast_to(np.asarray(given, float), len(built))) != list(built):
            raise UserError(f"{flag} {','.join(map(str, given))} differs from the {built} built into "
                            f"{manifest['name']} (it takes camera frames and normalises them itself)",
                            f"drop {flag}: the bundle's own values are used")
    image = ImageInput(spec["name"], norm["layout"], spec["shape"][3], tuple(norm["mean"]), tuple(norm["std"]))
    proto = copy.deepcopy(onnx_model.proto)
    image.prepend(proto)
    inputs = [image.pixel_spec(s) if s.name == image.name else s for s in onnx_model.inputs]
    return image, dataclasses.replace(onnx_model, proto=proto, inputs=inputs)


def class_metrics(labels: np.ndarray, predicted: np.ndarray, classes: int, shown=None) -> dict:
    """Accuracy, per-class precision/recall/F1/support and their macro means, from a confusion matrix.

    A class never predicted has precision 0, a class never present recall 0
    (scikit-learn's zero_division=0). Per-class rows and macro means cover
    ``shown`` (default: the classes present in the labels or predicted), so
    two models compared side by side are averaged over the same classes.
    """
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    hits = np.diag(confusion).astype(np.float64)
    support, guessed = confusion.sum(1), confusion.sum(0)
    precision = np.divide(hits, guessed, out=np.zeros(classes), where=guessed > 0)
    recall = np.divide(hits, support, out=np.zeros(classes), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros(classes), where=both > 0)
    seen = np.flatnonzero((support > 0) | (guessed > 0)) if shown is None else np.asarray(shown, dtype=np.int64)
    return {
        "accuracy": float(hits.sum() / max(len(labels), 1)),
        "macro": {k: float(v[seen].mean()) for k, v in (("precision", precision), ("recall", recall), ("f1", f1))},
        "per_class": [
            {"class": int(c), "precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
             "support": int(support[c])}
            for c in seen
        ],
    }


def _float_scores(proto, inputs: dict[str, np.ndarray], manifest: dict, count: int) -> dict:
    """onnxruntime on the user's model; inputs fixed at build time get their fixed value."""
    from edge_runtime.model import fixed_inputs

    from .reference import Reference

    reference = Reference(proto)
    feeds = dict(inputs)
    for entry in manifest.get("fixed_inputs", []):
        if entry["name"] not in feeds:
            value = fixed_inputs({"fixed_inputs": [entry]})[entry["name"]]
            one = value.astype(entry["dtype"]).reshape(entry["shape"])
            feeds[entry["name"]] = np.broadcast_to(one, (count, *one.shape))
    runs = [reference.run(feeds, i) for i in range(count)]
    return {name: np.stack([r[name] for r in runs]) for name in reference.output_names}


def evaluate(bundle: str, data: str, labels: str | None = None, model: str | None = None,
             output: str | None = None, mean=None, std=None) -> dict:
    """Score the float ONNX model and the bundle on the user's data.

    With labels (``labels``, or an image folder with one sub-folder per
    class): accuracy and per-class figures of a classes output, each side
    against the labels. Without: the bundle against the float model, each
    output judged by what it means (packager.agreement).

    Args:
        bundle: the bundle folder or its .tar.gz.
        data: image folder (flat, or a sub-folder per class), .npy or .npz.
        labels: .npy of class ids, one per sample (not with class folders).
        model: the float .onnx the bundle was built from (default: found by name).
        output: the output to score (default: the first classes output; without labels, every output).
        mean, std: image normalisation, for image folders, as given to the build.

    Returns:
        with labels: {"name" (the bundle's), "model", "data", "output", "samples", "classes", "agreement",
        "float": metrics, "bundle": metrics} (see class_metrics; per-class rows also carry the class "name");
        without: packager.agreement's report.

    Raises:
        UserError: wrong model file, data or labels that do not fit the bundle.
    """
    side = _Sides(bundle, data, model, mean, std)
    path = Path(data)
    if labels is None and not (path.is_dir() and class_folders(path)):
        from .agreement import agreement

        return agreement(side, output)
    return _labelled(side, labels, output)


class _Sides:
    """The bundle and the float model it was built from, and what the data must hold to feed both."""

    def __init__(self, bundle: str, data: str, model: str | None, mean, std):
        import edge_runtime

        from .onnx_model import load_onnx

        self.runtime = edge_runtime.load(bundle)
        self.manifest = self.runtime.manifest
        self.model_path = find_model(Path(bundle), self.manifest, model)
        self.image, self.onnx_model = _camera_input(self.manifest, load_onnx(self.model_path), mean, std)
        self.inputs, self.shapes = _data_inputs(self.onnx_model.inputs, self.manifest, Path(data))
        if self.image is not None:  # the data is read as the user's model's pixels, [N, C, H, W]
            n, h, w, c = self.shapes[self.image.name]
            self.shapes[self.image.name] = [n, c, h, w]
        self.data, self.mean, self.std = data, mean, std

    def run(self, samples: dict) -> tuple[dict, dict]:
        """(the float model's outputs, the bundle's), stacked over the samples."""
        count = len(next(iter(samples.values())))
        image = self.image
        frames = {k: image.frames(v) if image is not None and k == image.name else v for k, v in samples.items()}
        return _float_scores(self.onnx_model.proto, samples, self.manifest, count), self.runtime.predict(frames)


def _labelled(side: _Sides, labels: str | None, output: str | None) -> dict:
    chosen = score_output(side.runtime.outputs, output)
    classes = chosen["shape"][-1]
    samples, ids, names = _read_data(side.data, labels, side.inputs, side.shapes, side.mean, side.std, side.image)
    count = len(next(iter(samples.values())))
    check_labels(ids, count, classes, "the class folders" if names else f"--labels {labels}")
    if names and len(names) > classes:
        raise UserError(f"{side.data} has {len(names)} class folders, the model scores {classes} classes",
                        "keep one sub-folder per class the model knows, named so they sort in its class order")
    floats, bundled = side.run(samples)
    bundle_pred = bundled[chosen["name"]].reshape(count, -1).argmax(1)
    float_pred = floats[chosen["name"]].reshape(count, -1).argmax(1)
    names = names or [str(c) for c in range(classes)]
    shown = np.unique(np.concatenate([ids, float_pred, bundle_pred]))
    sides = {side_name: class_metrics(ids, pred, classes, shown) for side_name, pred in (("float", float_pred),
                                                                                        ("bundle", bundle_pred))}
    for row in (r for metrics in sides.values() for r in metrics["per_class"]):
        row["name"] = names[row["class"]] if row["class"] < len(names) else str(row["class"])
    return {
        "name": side.manifest["name"],
        "model": str(side.model_path),
        "data": str(side.data),
        "output": chosen["name"],
        "samples": count,
        "classes": classes,
        "agreement": float((float_pred == bundle_pred).mean()),
        **sides,
    }


def format_report(report: dict) -> str:
    """The report as a table: float ONNX and bundle side by side, one row per class (or, without labels,
    one row per output: packager.agreement)."""
    if "fidelity" in report:
        from .agreement import format_agreement

        return format_agreement(report)
    flt, bnd = report["float"], report["bundle"]
    lines = [
        f"evaluate   {report['name']} on {Path(report['data']).name}: {report['samples']} samples, "
        f"output '{report['output']}' ({report['classes']} classes)",
        f"float      {report['model']} (sha256 matches the bundle's source)",
        "",
        f"{'':16}{'float ONNX':>12}{'bundle':>12}",
        f"{'accuracy':16}{flt['accuracy'] * 100:11.2f}%{bnd['accuracy'] * 100:11.2f}%",
        f"{'macro F1':16}{flt['macro']['f1']:12.4f}{bnd['macro']['f1']:12.4f}",
        f"{'agreement':16}{report['agreement'] * 100:11.2f}%  (both predict the same class)",
        "",
        f"{'':23}|{'float ONNX':^28}|{'bundle':^28}|",
        f"{'class':<14}{'support':>8} |" + f" {'precision':>10} {'recall':>7} {'F1':>7} |" * 2,
    ]
    for f, b in zip(flt["per_class"], bnd["per_class"]):
        cells = "".join(f" {m['precision']:10.4f} {m['recall']:7.4f} {m['f1']:7.4f} |" for m in (f, b))
        lines.append(f"{f['name'][:13]:<14}{f['support']:>8} |{cells}")
    return "\n".join(lines)
