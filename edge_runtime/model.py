"""A loaded bundle that predicts in the ONNX contract."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .bundle import open_bundle
from .delegates import choose
from .errors import UserError
from .interpreter import Engine, make_engine
from .manifest import MAX_FIXED_VALUES, Malformed, check_fixed_inputs, check_precision
from .tensors import (BATCH_AXIS, IMAGE_FORMAT, ONE, InputWriter, OutputReader, check_dtype, frames, input_samples,
                      raw_to_tflite)


def fixed_inputs(manifest: dict) -> dict[str, np.ndarray]:
    """The manifest's ``fixed_inputs`` as {name: integer array}, checked by type and size.

    Raises:
        UserError: the entry is not what edgepack build writes.
    """
    entries = manifest.get("fixed_inputs", [])
    try:
        check_fixed_inputs(entries, set())  # the one check, as open_bundle's validation runs it
    except Malformed as bad:
        raise UserError(
            f"manifest fixed_inputs entry {str(bad.value)[:80]!r} is not a name with at most "
            f"{MAX_FIXED_VALUES} integer values ({bad.path} must be {bad.expected})",
            "rebuild the bundle with edgepack build",
        ) from None
    return {entry["name"]: np.asarray(entry["value"], dtype=np.int64) for entry in entries}


def precision_report(manifest: dict) -> dict | None:
    """The manifest's ``precision`` section, checked by type (None for bundles built before it).

    Raises:
        UserError: a field is not what edgepack build writes (names the field).
    """
    prec = manifest.get("precision")
    try:
        check_precision(prec)
    except Malformed as bad:
        field = bad.path if "." in bad.path else f"{bad.path}.(section)"
        raise UserError(f"manifest {field} {str(bad.value)[:60]!r} is not what edgepack build writes: "
                        f"must be {bad.expected}", "rebuild the bundle with edgepack build") from None
    return prec


class Model:
    """A verified bundle with its interpreter.

    Use :func:`edge_runtime.load` rather than building one directly.
    """

    def __init__(self, folder: Path, manifest: dict, engine: Engine):
        self.folder = folder
        self.manifest = manifest
        self.engine = engine
        self.inputs: list[dict] = manifest["inputs"]
        self.outputs: list[dict] = manifest["outputs"]
        self.fixed_inputs: dict[str, np.ndarray] = fixed_inputs(manifest)
        self._writers = [InputWriter(spec) for spec in self.inputs]
        self._readers = [OutputReader(spec) for spec in self.outputs]

    @property
    def name(self) -> str:
        return self.manifest["name"]

    def _drop_fixed(self, feeds: dict) -> dict:
        """Inputs fixed at build time may be given, but only with the value the bundle was built for."""
        fixed = self.fixed_inputs
        for name in set(feeds) & set(fixed):
            want = fixed[name]
            got = np.asarray(feeds[name])
            if (got.size == 0 or got.size % want.size
                    or not np.all(got.reshape(-1, want.size) == want.reshape(-1))):
                raise UserError(
                    f"input '{name}' was fixed at {want.tolist()} when this bundle was built; "
                    f"found {got.reshape(-1)[:4].tolist()}",
                    f"leave '{name}' out or give {want.tolist()}; for another value, build a bundle "
                    "from calibration samples that hold it",
                )
        return {k: v for k, v in feeds.items() if k not in fixed}

    def _check_names(self, feeds: dict) -> None:
        expected = [s["name"] for s in self.inputs]
        missing = [n for n in expected if n not in feeds]
        unknown = [n for n in feeds if n not in expected]
        if missing or unknown:
            raise UserError(
                f"the model's inputs are {', '.join(expected)}; "
                f"missing: {', '.join(missing) or 'none'}; unknown: {', '.join(unknown) or 'none'}",
                "name each array after an ONNX input (a .npy works for a one-input model)",
            )

    def invoke(self, tensors: list[np.ndarray]) -> list[np.ndarray]:
        """Run once on TFLite-ready tensors (in manifest input order)."""
        interp = self.engine.interpreter
        for spec, tensor in zip(self.inputs, tensors):
            interp.set_tensor(spec["tflite_index"], tensor)
        interp.invoke()
        return [interp.get_tensor(spec["tflite_index"]) for spec in self.outputs]

    def predict(self, feeds: dict[str, np.ndarray], raw: bool = False) -> dict[str, np.ndarray]:
        """Run the model on ONNX-contract inputs: what onnxruntime takes, onnxruntime's shapes back.

        Args:
            feeds: {ONNX input name: array}. Each array is one sample in
                exactly the ONNX shape (outputs then in exactly their ONNX
                shapes), or N samples stacked in front ``(N, *shape)``, or,
                for an input whose first dimension is a batch of 1, N
                samples along that axis; every input in the same form
                (the rule: :mod:`edge_runtime.tensors`).
            raw: feed and return the TFLite tensors as they are (quantized,
                TFLite layout), one sample.

        Returns:
            {ONNX output name: float array in the ONNX layout}: for one
            sample, the ONNX output shape; for N stacked samples,
            ``(N, *shape)``; for N samples along the batch axis, joined
            along the output's own batch axis of 1 (stacked in front when it
            has none).

        Raises:
            UserError: a missing or unknown name, a shape that is none of
                the forms, inputs in different forms or sample counts.
        """
        feeds = self._drop_fixed(feeds)
        self._check_names(feeds)
        if raw:
            tensors = [raw_to_tflite(np.asarray(feeds[s["name"]]), s) for s in self.inputs]
            return {s["name"]: out for s, out in zip(self.outputs, self.invoke(tensors))}
        given = [self._samples(spec, np.asarray(feeds[spec["name"]])) for spec in self.inputs]
        batches, form = [b for b, _ in given], _one_form(self.inputs, [f for _, f in given])
        counts = {len(b) for b in batches}
        if counts == {0}:
            raise UserError("the input holds no samples", "give at least one sample")
        if len(counts) != 1:
            raise UserError(
                f"inputs hold different numbers of samples: {[len(b) for b in batches]}",
                "give every input the same number of samples",
            )
        return self._run(batches, counts.pop(), form)

    @staticmethod
    def _samples(spec: dict, array: np.ndarray) -> tuple[np.ndarray, str]:
        """One input's array -> ((N, *shape) samples, their form), checked for dtype and finite values."""
        if spec.get("format") == IMAGE_FORMAT:  # camera frames: one (H, W, C) or (1, H, W, C), or N along the batch
            samples = frames(array, spec, "input")
            return samples, ONE if len(samples) == 1 else BATCH_AXIS
        check_dtype(array, spec, "input")
        samples, form = input_samples(array, spec, "input")
        if np.dtype(spec["dtype"]).kind == "f" and not _finite(samples):
            raise UserError(f"input '{spec['name']}' holds NaN or Inf values", "clean the input")
        return samples, form

    def _run(self, batches: list[np.ndarray], count: int, form: str) -> dict[str, np.ndarray]:
        """Invoke once per sample, writing into the interpreter's buffers and one result array per output.

        The results are allocated once, after the first invoke shows the
        output shapes, and each sample's outputs land in their slot: no
        per-sample arrays to stack. Then shaped by the inputs' ``form``:
        one sample gives exactly the output's shape, stacked samples
        ``(N, *shape)``, samples along the batch axis are joined along the
        output's batch axis of 1 (stacked when it has none).
        """
        interp = self.engine.interpreter
        results: list[np.ndarray] = []
        for i in range(count):
            for writer, batch in zip(self._writers, batches):
                writer.write(interp, batch[i])
            interp.invoke()
            if not results:
                results = [np.empty((count, *r.shape(interp)), r.dtype) for r in self._readers]
            for reader, result in zip(self._readers, results):
                reader.read(interp, result[i])
        if form == ONE:
            results = [r[0] for r in results]
        elif form == BATCH_AXIS:
            results = [r.reshape(count, *r.shape[2:]) if r.shape[1:2] == (1,) else r for r in results]
        return {s["name"]: r for s, r in zip(self.outputs, results)}


def _one_form(inputs: list[dict], forms: list[str]) -> str:
    """The form every input shares (one sample, stacked, along the batch axis); mixed forms are refused."""
    if len(set(forms)) <= 1:
        return forms[0] if forms else ONE
    given = ", ".join(f"'{spec['name']}' {form}" for spec, form in zip(inputs, forms))
    raise UserError(f"the inputs come in different forms: {given}",
                    "give every input as one sample in its ONNX shape (what onnxruntime takes), or every input as "
                    "N samples, stacked in front (N, *shape) or along its batch axis of 1")


def _finite(x: np.ndarray) -> bool:
    """No NaN or Inf: a sum first (one pass, no temporary), the exact test only when the sum is not finite.

    A sum is NaN or Inf whenever a term is, and otherwise only when finite
    values overflow it; then the per-value test decides.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.sum(x)):
            return True
    return bool(np.all(np.isfinite(x)))


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, as a container or taskset limits it), at least 1."""
    if hasattr(os, "process_cpu_count"):  # Python 3.13
        return os.process_cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def default_threads(target: dict) -> int:
    """The target profile's default_threads, but no more than the cores here: more threads than cores only
    queue behind each other (a Pi 4 bundle benchmarked on a 2-core host)."""
    return min(target.get("default_threads") or usable_cores(), usable_cores())


def load(bundle: str | os.PathLike, threads: int | None = None, delegate: str | None = None,
         delegate_options: list[str] | None = None) -> Model:
    """Verify a bundle and load its model.

    Args:
        bundle: the bundle folder or its .tar.gz.
        threads: CPU threads; default: the target profile's, at most the
            cores this process may use (:func:`default_threads`).
        delegate: "xnnpack", "cpu", "edgetpu" or the path of an external
            delegate library; default: the target's first (its
            ``external_delegate`` for "external").
        delegate_options: KEY=VALUE options for an external delegate.

    Returns:
        A :class:`Model`.

    Raises:
        UserError: the bundle is missing, modified, or cannot be loaded.
    """
    folder, manifest = open_bundle(bundle)
    target = manifest.get("target", {})
    threads = threads or default_threads(target)
    if threads < 1:
        raise UserError(f"--threads must be at least 1, found {threads}")
    choice = choose(delegate, delegate_options, target)
    # model_edgetpu.tflite only with the Edge TPU delegate loaded: the CPU cannot run its edgetpu-custom-op
    edgetpu_model = folder / "model_edgetpu.tflite"
    engine = make_engine(str(folder / "model.tflite"), threads, choice,
                         str(edgetpu_model) if choice.name == "edgetpu" and edgetpu_model.is_file() else None)
    return Model(folder, manifest, engine)
