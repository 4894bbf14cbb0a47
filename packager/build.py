"""`edgepack build`: the host pipeline, stage by stage.

load ONNX -> fix shapes -> read calibration -> prepare the graph -> convert
(float, strategies tried in order, each checked against onnxruntime) ->
quantize (int8) -> measure fidelity -> op report -> bundle.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

from edge_runtime.errors import UserError

from . import __version__
from .bundle import publish, seal, stage_files
from .calibration import load_calibration, split_holdout
from .convert import DEFAULT_BUDGET, convert
from .fidelity import check_min_cosine, format_table, measure
from .layout import map_tensors
from .onnx_model import load_onnx
from .prepare import prepare
from .prepare.config_inputs import constant_config_inputs, freeze
from .ops import op_report
from .profiles import load_profile
from .quantize import IO_DTYPES, quantize
from .quiet import captured_output
from .reference import Reference
from .wheels import fetch_wheels, pinned, requirements, stage_wheels
from .shapes import fix_shapes, parse_input_shapes, resolve_shapes

STAGES = 9


@dataclasses.dataclass
class BuildOptions:
    """Everything `edgepack build` takes; see DESIGN.md for the meaning."""

    model: str
    target: str
    calibration: str
    out_dir: str = "dist"
    input_shapes: tuple[str, ...] = ()
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    io_dtype: str | None = None  # default: the profile's
    per_tensor: bool = False
    min_cosine: float | None = None
    wheels: bool = True
    strategy_timeout: float | None = DEFAULT_BUDGET  # seconds per conversion attempt
    verbose: bool = False


@dataclasses.dataclass
class BuildResult:
    bundle_dir: Path
    archive: Path
    manifest: dict


def _say(step: int, text: str) -> None:
    print(f"[{step}/{STAGES}] {text}", file=sys.stderr, flush=True)


def _warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


def _io_entry(tmap, facts: dict) -> dict:
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


def build(opts: BuildOptions, say: Callable[[int, str], None] = _say) -> BuildResult:
    """Run the whole pipeline and publish the bundle.

    Raises:
        UserError: any bad input; nothing is left in ``out_dir`` then.
    """
    profile = load_profile(opts.target)
    io_dtype = opts.io_dtype or profile.io_dtype
    _check_options(opts, io_dtype)
    overrides = parse_input_shapes(opts.input_shapes)

    say(1, f"loading {opts.model}")
    model = load_onnx(opts.model)
    shapes = resolve_shapes(model.inputs, overrides)
    fixed = fix_shapes(model, shapes)
    # The user's own model, as they ran it: some only load in onnxruntime with
    # dynamic shapes (branches never taken that fit no static shape).
    reference = Reference(model.proto)

    say(2, f"reading calibration data from {opts.calibration}")
    if opts.calibration == "random":
        _warn(
            "--calibration random: the model is calibrated on noise; its accuracy figures mean "
            "NOTHING. Use real samples for anything you ship."
        )
    data = load_calibration(opts.calibration, model.inputs, shapes, opts.mean, opts.std)
    calib, holdout = split_holdout(data)

    out_dir = Path(opts.out_dir)
    created_out = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"{model.path.stem}-{profile.name}"
    private = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out_dir))
    try:
        with tempfile.TemporaryDirectory(prefix="edgepack-") as work:
            work = Path(work)
            # Wheels first: a device we cannot equip should fail before minutes of conversion.
            wheels, packages = _device_wheels(opts, profile, work, say)

            say(4, "preparing the graph (constants folded, pre-quantized ops back to float)")
            prepared = copy.deepcopy(fixed)
            frozen = constant_config_inputs(prepared, model.inputs, calib, holdout)
            frozen_notes = freeze(prepared, frozen)
            with captured_output(show=opts.verbose):  # onnxsim's warnings
                preparation = prepare(prepared, calib, reference=reference.outputs)
            preparation.changes[:0] = [f"config_inputs: {n}" for n in frozen_notes]
            _show_preparation(preparation)

            say(5, "converting to a float model and checking it against onnxruntime")
            live_inputs = [s for s in model.inputs if s.name not in frozen]
            conversion = _convert(prepared, work, model, live_inputs, shapes, calib, reference, opts)

            say(6, f"quantizing to full integer ({'per-tensor' if opts.per_tensor else 'per-channel'}, "
                   f"{io_dtype} I/O) on {len(next(iter(calib.values())))} samples")
            q = quantize(conversion.saved_model, conversion.in_maps, calib, io_dtype, opts.per_tensor, opts.verbose)
            if not q.strict:
                _warn("some ops have no integer kernel and stay float (named in the op report)")

            stage = private / name
            stage.mkdir()
            (stage / "model.tflite").write_bytes(q.tflite)
            if wheels:
                stage_wheels(wheels, stage)
            stage_files(stage, profile.arch, profile.os["python"], packages)
            manifest = _manifest(opts, name, profile, model, io_dtype, q, calib, holdout,
                                 preparation, conversion, packages)
            manifest["fixed_inputs"] = [
                {"name": s.name, "shape": shapes[s.name], "dtype": s.dtype, "value": frozen[s.name].tolist()}
                for s in model.inputs if s.name in frozen
            ]

            say(7, f"measuring int8 fidelity on {len(next(iter(holdout.values())))} held-out samples")
            with captured_output(show=opts.verbose):
                fidelity = _measure(stage, manifest, reference, holdout)
            manifest["fidelity"] = fidelity
            print(format_table(fidelity), file=sys.stderr, flush=True)

            say(8, "op report")
            manifest["ops"] = op_report(q.tflite)
            if manifest["ops"]["float_ops"]:
                _warn(f"{len(manifest['ops']['float_ops'])} float op(s) left in the graph: "
                      + ", ".join(f["type"] for f in manifest["ops"]["float_ops"][:8]))
            check_min_cosine(fidelity, opts.min_cosine)

            say(9, f"writing {out_dir / name} and {name}.tar.gz")
            manifest = seal(stage, manifest)
            bundle_dir, archive = publish(stage, out_dir)
    except BaseException:
        shutil.rmtree(private, ignore_errors=True)
        if created_out and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise
    shutil.rmtree(private, ignore_errors=True)
    return BuildResult(bundle_dir, archive, manifest)


def _check_options(opts: BuildOptions, io_dtype: str) -> None:
    if io_dtype not in IO_DTYPES:
        raise UserError(f"--io-dtype must be one of {', '.join(IO_DTYPES)}, found {io_dtype!r}")
    if opts.min_cosine is not None and not 0 < opts.min_cosine <= 1:
        raise UserError(f"--min-cosine must be in (0, 1], found {opts.min_cosine}")
    if opts.strategy_timeout is not None and opts.strategy_timeout <= 0:
        raise UserError(f"--strategy-timeout must be a positive number of seconds, found {opts.strategy_timeout}")


def _device_wheels(opts: BuildOptions, profile, work: Path, say) -> tuple[list, list]:
    if not opts.wheels:
        say(3, "no device wheels (--no-wheels)")
        return [], requirements(profile)
    say(3, f"device wheels for {profile.arch} / Python {profile.os['python']} "
           f"({', '.join(requirements(profile))})")
    wheels = fetch_wheels(profile, work)
    return wheels, pinned(wheels, profile)


def _show_preparation(preparation) -> None:
    for change in preparation.changes:
        print(f"      {change}", file=sys.stderr, flush=True)
    if preparation.changes:
        worst = min(preparation.cosine.values())
        print(f"      prepared graph vs original in onnxruntime: worst cosine {worst:.6f}", file=sys.stderr, flush=True)


def _convert(prepared, work: Path, model, inputs, shapes, calib, reference, opts: BuildOptions):
    def check(saved_model):
        with captured_output(show=opts.verbose):
            return map_tensors(saved_model, inputs, model.outputs, shapes, calib, reference)

    def progress(text: str) -> None:
        print(f"      {text}", file=sys.stderr, flush=True)

    conversion = convert(prepared, work / "convert", calib, check, budget=opts.strategy_timeout,
                         verbose=opts.verbose, say=progress)
    worst = min(conversion.float_cosine.values())
    progress(f"strategy {conversion.strategy}: float model matches onnxruntime (worst cosine {worst:.6f})")
    return conversion


def _manifest(opts, name, profile, model, io_dtype, q, calib, holdout, preparation, conversion, packages) -> dict:
    return {
        "schema_version": 1,
        "name": name,
        "target": profile.to_dict(),
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "edgepack_version": __version__,
        "source": {"file": model.path.name, "sha256": model.sha256},
        "converter": {**_converter_versions(), "strategy": conversion.strategy},
        "preparation": preparation.to_dict(),
        "conversion": conversion.report(),
        "quantization": {
            "io_dtype": io_dtype,
            "per_channel": not opts.per_tensor,
            "full_integer": q.strict,
            "calibration": {
                "source": "random" if opts.calibration == "random" else Path(opts.calibration).name,
                "samples": len(next(iter(calib.values()))),
                "held_out": len(next(iter(holdout.values()))),
            },
        },
        "inputs": [_io_entry(m, q.io) for m in conversion.in_maps],
        "outputs": [_io_entry(m, q.io) for m in conversion.out_maps],
        "float_conversion_cosine": conversion.float_cosine,
        "device_packages": packages,
        "wheels": opts.wheels,
    }


def _measure(stage: Path, manifest: dict, reference: Reference, holdout) -> dict:
    """Fidelity through edge_runtime itself, as the device will run it."""
    from edge_runtime.interpreter import make_engine
    from edge_runtime.model import Model

    engine = make_engine(str(stage / "model.tflite"), threads=2, delegate="xnnpack")
    return measure(Model(stage, manifest, engine), reference, holdout)


def _converter_versions() -> dict:
    from importlib.metadata import version

    return {
        "name": "onnx2tf",
        "onnx2tf": version("onnx2tf"),
        "tensorflow": version("tensorflow"),
        "onnx": version("onnx"),
        "onnxruntime": version("onnxruntime"),
    }
