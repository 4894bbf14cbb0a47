"""Stage 5 (the check of each attempt): how the converted model's tensors map onto the ONNX contract.

The converter renames tensors and moves channels last (NCHW -> NHWC). We do
not guess: candidate permutations are tried on real samples, the float
SavedModel is compared against onnxruntime, and the mapping that reproduces
the ONNX outputs is kept. A float conversion that reproduces none of them is
a converter bug and stops the build here, before quantization can hide it.
"""

from __future__ import annotations

import dataclasses
import itertools
import re

import numpy as np

from edge_runtime.errors import UserError

from .onnx_model import TensorSpec
from .reference import Reference

FLOAT_MATCH_COSINE = 0.999
MAX_COMBINATIONS = 64


@dataclasses.dataclass
class TensorMap:
    """One ONNX tensor and its counterpart in the converted model."""

    spec: TensorSpec
    shape: list[int]  # the static ONNX-layout shape
    key: str  # signature name in the SavedModel / TFLite model
    permutation: list[int]  # converted = onnx.transpose(permutation)


def io_entry(tmap: TensorMap, facts: dict) -> dict:
    """A manifest input/output: the ONNX contract plus its TFLite tensor (``facts`` by signature key)."""
    spec = tmap.spec
    return {
        "name": spec.name,
        "shape": list(tmap.shape),
        "declared_shape": list(spec.shape),
        "dtype": spec.dtype,
        "permutation": list(tmap.permutation),
        "signature_key": tmap.key,
        **facts[tmap.key],
    }


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]", "_", name).lower()


def _candidate_perms(src: list[int], dst: list[int]) -> list[list[int]]:
    """Permutations p with src.transpose(p).shape == dst, likeliest first."""
    n = len(src)
    if n != len(dst):
        return []
    likely = [list(range(n))]
    if n >= 3:
        likely.insert(0, [0, *range(2, n), 1])  # channels last, as onnx2tf does
    found = [p for p in likely if [src[i] for i in p] == list(dst)]
    if n <= 6:
        for p in itertools.permutations(range(n)):
            p = list(p)
            if p not in found and [src[i] for i in p] == list(dst):
                found.append(p)
    return found


def _match_names(onnx_names: list[str], keys: list[str], what: str) -> list[str]:
    """Pair ONNX names with signature keys: by name, then in order."""
    if len(onnx_names) != len(keys):
        raise UserError(
            f"the converted model has {len(keys)} {what}, the ONNX model {len(onnx_names)}",
            "run with -v to see the converter's log",
        )
    by_norm = {_norm(k): k for k in keys}
    paired = [by_norm.get(_norm(n)) for n in onnx_names]
    rest = [k for k in keys if k not in paired]
    return [p if p is not None else rest.pop(0) for p in paired]


def _output_keys(outputs: dict) -> list[str]:
    def order(key: str):
        m = re.search(r"(\d+)$", key)
        return (0, int(m.group(1)), key) if m else (1, 0, key)

    return sorted(outputs, key=order)


def map_tensors(saved_model_dir, inputs, outputs, shapes, samples, reference: Reference):
    """Find and check the ONNX <-> converted-model mapping.

    Args:
        saved_model_dir: the converter's float SavedModel.
        inputs, outputs: the ONNX model's TensorSpecs.
        shapes: static ONNX input shapes.
        samples: calibration samples, (N, *shape) per input.
        reference: onnxruntime on the shape-fixed model.

    Returns:
        (input TensorMaps, output TensorMaps, {output: float cosine}).
    """
    import tensorflow as tf

    fn = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]
    sig_in = fn.structured_input_signature[1]
    in_keys = _match_names([s.name for s in inputs], list(sig_in), "inputs")
    out_keys = _output_keys(fn.structured_outputs)
    if len(out_keys) != len(outputs):
        _match_names([s.name for s in outputs], out_keys, "outputs")
    count = min(2, len(next(iter(samples.values()))))
    refs = [reference.run(samples, i) for i in range(count)]
    best = None
    for combo in itertools.islice(itertools.product(*_input_candidates(inputs, in_keys, sig_in, shapes)),
                                  MAX_COMBINATIONS):
        feeds = [{key: tf.constant(np.transpose(samples[spec.name][i], perm).astype(sig_in[key].dtype.as_numpy_dtype))
                  for spec, key, perm in zip(inputs, in_keys, combo)} for i in range(count)]
        got = [{k: v.numpy() for k, v in fn(**feed).items()} for feed in feeds]
        out_maps, scores = _output_maps(outputs, out_keys, refs, got)
        worst = min(scores.values())
        if best is None or worst > best[0]:
            in_maps = [TensorMap(s, shapes[s.name], k, list(p)) for s, k, p in zip(inputs, in_keys, combo)]
            best = (worst, in_maps, out_maps, scores)
        if worst >= FLOAT_MATCH_COSINE:
            break
    worst, in_maps, out_maps, scores = best
    if worst < FLOAT_MATCH_COSINE:
        bad = ", ".join(f"{n} cosine {c:.4f}" for n, c in scores.items() if c < FLOAT_MATCH_COSINE)
        raise UserError(
            f"the converted float model does not reproduce the ONNX model ({bad}; expected >= {FLOAT_MATCH_COSINE}) "
            "before any quantization: the converter mistranslated an op",
            "run with -v to see onnx2tf's per-op check; simplify or re-export the model",
        )
    return in_maps, out_maps, scores


def _input_candidates(inputs, in_keys, sig_in, shapes) -> list[list[list[int]]]:
    """Per input, the transposes that turn its ONNX shape into the converted one."""
    out = []
    for spec, key in zip(inputs, in_keys):
        dst = [int(d) for d in sig_in[key].shape]
        cands = _candidate_perms(shapes[spec.name], dst)
        if not cands:
            raise UserError(
                f"input '{spec.name}' {shapes[spec.name]} became {dst} in the converted model; no transpose maps one "
                "to the other",
                "run with -v to see the converter's log",
            )
        out.append(cands)
    return out


def _output_maps(outputs, out_keys, refs: list[dict], got: list[dict]) -> tuple[list, dict]:
    """Each output's best transpose back to its ONNX shape, and its cosine against onnxruntime (worst sample)."""
    out_maps, scores = [], {}
    for spec, key in zip(outputs, out_keys):
        ref0 = refs[0][spec.name]
        best_perm, best_cos = None, -2.0
        for perm in _candidate_perms(list(ref0.shape), list(got[0][key].shape)):
            c = min(cosine(np.transpose(r[spec.name], perm), g[key]) for r, g in zip(refs, got))
            if c > best_cos:
                best_perm, best_cos = perm, c
        scores[spec.name] = best_cos
        out_maps.append(TensorMap(spec, list(ref0.shape), key, best_perm or list(range(ref0.ndim))))
    return out_maps, scores
