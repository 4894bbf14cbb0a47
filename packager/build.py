"""`edgepack build`: the host pipeline, stage by stage.

load ONNX -> fix shapes -> read calibration -> prepare the graph -> convert
(float, strategies tried in order, each checked against onnxruntime) ->
quantize (int8) -> measure fidelity -> op report -> bundle.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

import edge_runtime
from edge_runtime.errors import UserError

from . import __version__
from .accelerators import check_accelerators, stage_accelerators
from .bundle import bundle_name, publish, seal, stage_files, stage_health
from .calibration import lack_of_variation, load_calibration, split_holdout
from .input_stats import input_statistics
from .convert import DEFAULT_BUDGET, convert
from .fidelity import Bar, format_table
from .ladder import PRECISIONS, Bench, Ladder, VALIDATION, float_model, io_entry
from .layout import map_tensors
from .onnx_model import load_onnx
from .prepare import prepare
from .prepare.config_inputs import constant_config_inputs, freeze
from .prepare.image_input import FORMAT as IMAGE_FORMAT, ImageInput, plan as plan_image_input
from .ops import op_report
from .memory import check_budget, measure_peak_rss
from .runtimes import python_for, runtime_key
from .profiles import NO_RUNTIME_WHEELS, load_profile
from .quantize import IO_DTYPES, Calibrated, converter_int8, export_float, export_float16
from .quiet import captured_output
from .reference import Reference
from .wheels import fetch_wheels, pinned, requirements, stage_wheels
from .shapes import fix_shapes, parse_input_shapes, resolve_shapes
from .signing import check_key, sign

STAGES = 9
# auto: the precision ladder; int8: full integer or fail; strict: the ladder, on calibration data that varies
BUILD_PRECISIONS = (*PRECISIONS, "strict")


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
    precision: str = "auto"  # one of BUILD_PRECISIONS
    min_cosine: float | None = None  # the bar; None: the defaults of fidelity.Bar
    min_top1: float | None = None
    min_f1: float | None = None
    min_channel_cosine: float | None = None
    accept_low_fidelity: bool = False
    wheels: bool = True
    strategy_timeout: float | None = DEFAULT_BUDGET  # seconds per conversion attempt
    verbose: bool = False
    require_edgetpu: bool = False
    sign: str | None = None  # an OpenSSH private key: manifest.json.sig
    input_format: str = "tensor"  # or "image-uint8": camera frames in, normalisation folded into the model


@dataclasses.dataclass
class BuildResult:
    bundle_dir: Path
    archive: Path
    manifest: dict
    signer: str | None = None  # the signing key's fingerprint (not in the manifest: the signature covers it)


def _say(step: int, text: str) -> None:
    print(f"[{step}/{STAGES}] {text}", file=sys.stderr, flush=True)


def _warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


def split_warning(partitions: int, split_by: dict[str, int]) -> str:
    """The build's warning for a graph XNNPACK takes in several pieces, naming the ops between them.

    Every boundary hands tensors between XNNPACK and the reference kernels
    (and those ops run single-threaded and unoptimised), so the ops named here
    are what to change or replace in the ONNX model to get one partition.
    """
    ops = ", ".join(f"{name} x{count}" for name, count in split_by.items()) or "not measured"
    return (f"XNNPACK takes the chosen model in {partitions} partitions, split by the ops it does not take: {ops}. "
            "Each boundary is a hand-off through the reference kernels; replacing those ops in the ONNX model "
            "with ones XNNPACK takes joins the pieces")


def build(opts: BuildOptions, say: Callable[[int, str], None] = _say) -> BuildResult:
    """One target's build (``--target`` names one profile); see :func:`build_all`."""
    results = build_all(opts, say)
    if len(results) != 1:
        raise UserError(f"--target {opts.target} names {len(results)} targets here, where one is expected")
    return results[0]


def build_all(opts: BuildOptions, say: Callable[[int, str], None] = _say) -> list[BuildResult]:
    """Run the whole pipeline once and publish one bundle per target.

    ``--target rpi4,rpi5,zero2w`` converts, quantizes and measures the model
    once: the targets share it, only their wheels, profile and checks differ.

    Raises:
        UserError: any bad input, or a target the model does not suit (its
            memory budget); nothing is left in ``out_dir`` then, for no target.
    """
    out_dir = Path(opts.out_dir)
    _check_out_dir(out_dir)
    profiles = load_targets(opts.target, opts.wheels)
    io_dtype = opts.io_dtype or _shared_io_dtype(profiles)
    _check_options(opts, io_dtype)
    signer = check_key(opts.sign) if opts.sign else None  # seconds, before minutes of conversion
    check_accelerators(profiles, opts)  # before minutes of conversion
    overrides = parse_input_shapes(opts.input_shapes)

    say(1, f"loading {opts.model}")
    model = load_onnx(opts.model)
    shapes = resolve_shapes(model.inputs, overrides)
    image, image_notes = None, []
    if opts.input_format == IMAGE_FORMAT:
        image = plan_image_input(model.inputs, shapes, opts.mean, opts.std)
        model, image_notes = _with_pixel_input(model, shapes, image)
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
    data = load_calibration(opts.calibration, model.inputs, shapes, opts.mean, opts.std, image)
    calibration_warnings = _calibration_warnings(opts, data)
    calib, holdout = split_holdout(data)

    new_dirs = _missing_dirs(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [bundle_name(model.path.stem, p.name) for p in profiles]
    private = Path(tempfile.mkdtemp(prefix=f".{names[0]}.", dir=out_dir))
    try:
        with tempfile.TemporaryDirectory(prefix="edgepack-") as work:
            work = Path(work)
            # Wheels first: a device we cannot equip should fail before minutes of conversion.
            equipment = [_device_wheels(opts, p, work / f"wheels-{p.name}", say, image is not None) for p in profiles]

            say(4, "preparing the graph (constants folded, pre-quantized ops back to float)")
            prepared = copy.deepcopy(fixed)
            frozen = constant_config_inputs(prepared, model.inputs, calib, holdout)
            frozen_notes = freeze(prepared, frozen)
            with captured_output(show=opts.verbose):  # onnxsim's warnings
                preparation = prepare(prepared, calib, reference=reference.outputs)
            preparation.changes[:0] = [f"image_input: {n}" for n in image_notes] + [
                f"config_inputs: {n}" for n in frozen_notes]
            _show_preparation(preparation)

            say(5, "converting to a float model and checking it against onnxruntime")
            live_inputs = [s for s in model.inputs if s.name not in frozen]
            conversion = _convert(prepared, work, model, live_inputs, shapes, calib, reference, opts)

            say(6, f"choosing the precision ({opts.precision}): full int8 first, calibrated on "
                   f"{len(next(iter(calib.values())))} samples, judged on {len(next(iter(holdout.values())))} "
                   "held-out samples")
            fixed_entries = [
                {"name": s.name, "shape": shapes[s.name], "dtype": s.dtype, "value": frozen[s.name].tolist()}
                for s in model.inputs if s.name in frozen
            ]
            pinned = {image.name: (0.0, 255.0)} if image else None
            outcome, ladder = _choose_precision(opts, io_dtype, conversion, calib, holdout, reference,
                                                fixed_entries, prepared, work, model, live_inputs, shapes, pinned)
            chosen = outcome.chosen
            q = chosen.model
            if image:
                print("      " + frame_path(q.io[next(m.key for m in conversion.in_maps if m.spec.name == image.name)]),
                      file=sys.stderr, flush=True)
            precision = {
                "requested": opts.precision,
                "chosen": q.precision,
                "step": chosen.name,
                "why": outcome.why,
                "bar": dataclasses.asdict(ladder.bar),
                "meets_bar": chosen.meets,
                "accepted_low_fidelity": not chosen.meets,
                "shortfalls": chosen.missing,
                "steps": [s.row() for s in outcome.steps],
            }

            say(7, f"fidelity of the chosen model ({chosen.name}) on "
                   f"{len(next(iter(holdout.values())))} held-out samples")
            print(format_table(chosen.report, q.precision), file=sys.stderr, flush=True)
            if calibration_warnings:
                _warn("the figures above were measured on " + ("random" if opts.calibration == "random" else
                      "calibration data without variation") + ": they mean NOTHING (manifest: "
                      "quantization.calibration.warnings)")

            say(8, "op report; a run on each target's runtime (loads? peak memory?)")
            ops = op_report(q.tflite)
            if ops["float_ops"] and q.precision in ("int8", "int8+float"):
                _warn(f"{len(ops['float_ops'])} float op(s) left in the graph: "
                      + ", ".join(f["type"] for f in ops["float_ops"][:8]))
            if chosen.partitions > 1:
                _warn(split_warning(chosen.partitions, ladder.bench.split_by(q)))
            (work / "model.tflite").write_bytes(q.tflite)
            runs = _check_runs(work / "model.tflite", profiles)
            stages = []
            for profile, name, (wheels, packages) in zip(profiles, names, equipment):
                memory, crowded = check_budget(runs[profile.name], profile)
                if crowded:
                    _warn(crowded)
                stage = private / name
                stage.mkdir()
                (stage / "model.tflite").write_bytes(q.tflite)
                if q.recipe is not None:
                    (stage / "recipe.json").write_text(json.dumps(q.recipe, indent=1, default=str) + "\n")
                if wheels:
                    stage_wheels(wheels, stage)
                stage_files(stage, profile.arch, profile.os["python"], packages)
                manifest = _manifest(opts, name, profile, model, io_dtype, q, calib, holdout,
                                     preparation, conversion, packages)
                if image:
                    manifest["inputs"] = [image.manifest_entry(e) if e["name"] == image.name else e
                                          for e in manifest["inputs"]]
                manifest["fixed_inputs"] = fixed_entries
                manifest["quantization"]["calibration"]["warnings"] = calibration_warnings
                manifest["precision"] = precision
                manifest["fidelity"] = chosen.report
                manifest["ops"] = ops
                manifest["memory"] = memory
                manifest["health"] = stage_health(stage, manifest, _as_frames(holdout, image))
                manifest["input_statistics"] = input_statistics(_as_frames(data, image), manifest["inputs"])
                accelerated, warnings = stage_accelerators(q.tflite, q.precision, profile, stage, opts)
                manifest.update(accelerated)
                for warning in warnings:
                    _warn(warning)
                stages.append((stage, manifest))

            say(9, "writing " + ", ".join(f"{out_dir / n} and {n}.tar.gz" for n in names))
            sealed = [(stage, seal(stage, manifest)) for stage, manifest in stages]
            for stage, _ in sealed if signer else ():
                sign(stage, signer)
            results = []
            for stage, manifest in sealed:
                bundle_dir, archive = publish(stage, out_dir)
                results.append(BuildResult(bundle_dir, archive, manifest, signer and signer.fingerprint))
    except BaseException:
        shutil.rmtree(private, ignore_errors=True)
        _remove_empty(new_dirs)
        raise
    shutil.rmtree(private, ignore_errors=True)
    return results


def _check_runs(model: Path, profiles) -> dict:
    """Each target's run on the host with its own runtime release: loads? peak RSS? (packager.memory).

    Targets sharing a runtime and thread count share one measurement.
    """
    runner_root = Path(edge_runtime.__file__).resolve().parent.parent
    done, runs = {}, {}
    for profile in profiles:
        key = (*runtime_key(profile), profile.default_threads)
        if key not in done:
            python = python_for(profile, log=lambda text: print(f"      {text}", file=sys.stderr, flush=True))
            done[key] = measure_peak_rss(model, runner_root, profile.default_threads, python)
        runs[profile.name] = done[key]
    return runs


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


def _shared_io_dtype(profiles) -> str:
    """The targets' I/O dtype: one model serves them all only when they agree."""
    wanted = {p.io_dtype for p in profiles}
    if len(wanted) > 1:
        listed = ", ".join(f"{p.name} {p.io_dtype}" for p in profiles)
        raise UserError(f"the targets want different I/O dtypes ({listed}) and one build makes one model",
                        "pass --io-dtype to choose one for all, or build the targets separately")
    return wanted.pop()


def _check_out_dir(out_dir: Path) -> None:
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


def _missing_dirs(out_dir: Path) -> list[Path]:
    """The folders ``mkdir(parents=True)`` is about to create, deepest first."""
    missing = []
    while not os.path.lexists(out_dir) and out_dir != out_dir.parent:
        missing.append(out_dir)
        out_dir = out_dir.parent
    return missing


def _remove_empty(dirs: list[Path]) -> None:
    """A failed build leaves nothing: the folders it created go again, if nothing else went in."""
    for folder in dirs:
        if not folder.is_dir() or any(folder.iterdir()):
            return
        folder.rmdir()


def _calibration_warnings(opts: BuildOptions, data: dict) -> list[str]:
    """What makes the fidelity figures meaningless: warned now and kept in the manifest; refused by strict.

    Calibration data that does not vary (identical or blank samples) gives a
    perfect fidelity report for a model nobody tested (packager.calibration).
    """
    found = lack_of_variation(data)
    if found and opts.precision == "strict":
        raise UserError(
            f"--precision strict: the calibration data does not vary ({'; '.join(found)}); "
            "fidelity measured on it would mean nothing",
            "give representative samples of the device's real input, or drop --precision strict "
            "to build anyway (with a warning)",
        )
    if found:
        _warn(f"the calibration data does not vary: {'; '.join(found)}. The int8 ranges are calibrated on it and "
              "the fidelity figures measured on it mean NOTHING. Give representative samples "
              "(--precision strict refuses such data).")
    notes = [f"no variation: {line}" for line in found]
    if opts.calibration == "random":
        notes.insert(0, "--calibration random: calibrated and judged on noise")
    return notes


def _check_options(opts: BuildOptions, io_dtype: str) -> None:
    if io_dtype not in IO_DTYPES:
        raise UserError(f"--io-dtype must be one of {', '.join(IO_DTYPES)}, found {io_dtype!r}")
    if opts.precision not in BUILD_PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(BUILD_PRECISIONS)}, found {opts.precision!r}")
    if opts.input_format not in ("tensor", IMAGE_FORMAT):
        raise UserError(f"--input-format must be tensor or {IMAGE_FORMAT}, found {opts.input_format!r}")
    if opts.precision == "strict" and opts.accept_low_fidelity:
        raise UserError("--precision strict and --accept-low-fidelity contradict each other: strict refuses "
                        "what --accept-low-fidelity would ship", "drop one of them")
    if opts.precision == "strict" and opts.calibration == "random":
        raise UserError("--precision strict refuses --calibration random: fidelity measured on noise means nothing",
                        "calibrate on real samples, or drop --precision strict")
    for flag, value in (("--min-cosine", opts.min_cosine), ("--min-top1", opts.min_top1),
                        ("--min-f1", opts.min_f1), ("--min-channel-cosine", opts.min_channel_cosine)):
        if value is not None and not 0 <= value <= 1:
            raise UserError(f"{flag} must be in [0, 1], found {value}", "0 switches the criterion off")
    if opts.strategy_timeout is not None and opts.strategy_timeout <= 0:
        raise UserError(f"--strategy-timeout must be a positive number of seconds, found {opts.strategy_timeout}")


def _device_wheels(opts: BuildOptions, profile, work: Path, say, images: bool = False) -> tuple[list, list]:
    if not opts.wheels:
        say(3, "no device wheels (--no-wheels)")
        return [], requirements(profile, images)
    say(3, f"device wheels for {profile.name}: {profile.arch} / Python {profile.os['python']} "
           f"({', '.join(requirements(profile, images))})")
    work.mkdir(parents=True)
    wheels = fetch_wheels(profile, work, images)
    return wheels, pinned(wheels, profile)


def _with_pixel_input(model, shapes: dict, image: ImageInput):
    """The model with ``image``'s pixel input in front (a copy; ``shapes`` is updated in place)."""
    proto = copy.deepcopy(model.proto)
    notes = image.prepend(proto)
    inputs = [image.pixel_spec(s) if s.name == image.name else s for s in model.inputs]
    shapes[image.name] = image.pixel_shape(shapes[image.name])
    return dataclasses.replace(model, proto=proto, inputs=inputs), notes


def _as_frames(data: dict, image: ImageInput | None) -> dict:
    """Samples as the bundle takes them: an image input's pixel values as uint8 frames."""
    if image is None:
        return data
    return {k: image.frames(v) if k == image.name else v for k, v in data.items()}


def frame_path(facts: dict) -> str:
    """How a uint8 frame reaches the model's input tensor on the device (see edge_runtime.tensors.pixel_mode)."""
    from edge_runtime.tensors import pixel_mode

    mode = pixel_mode({**facts, "dtype": "uint8", "format": IMAGE_FORMAT})
    if mode == "quantize":
        return (f"frames: the input tensor is {facts['tflite_dtype']} with scale {facts['scale']:.6g}, zero point "
                f"{facts['zero_point']}: the device quantizes each frame (one pass); a pixel range pinned to 0..255 "
                "needs LiteRT Quantizer's int8 I/O")
    how = {"copy": "copied as they are", "flip": "copied with the top bit flipped (int8, scale 1, zero point -128)"}
    return f"frames: uint8 pixels go into the model's {facts['tflite_dtype']} input tensor {how[mode]}"


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
            "io_dtype": io_dtype if q.precision.startswith("int8") else "float32",
            "tool": "litert-quantizer" if q.recipe is not None else "tflite-converter",
            "recipe": "recipe.json" if q.recipe is not None else None,
            "ranges_per_tensor": len(q.ranges or {}),
            "float_ops_kept": len(q.float_ops),
            "per_channel": not opts.per_tensor,
            "full_integer": q.strict,
            "calibration": {
                "source": "random" if opts.calibration == "random" else Path(opts.calibration).name,
                "samples": len(next(iter(calib.values()))),
                "held_out": len(next(iter(holdout.values()))),
            },
        },
        "inputs": [io_entry(m, q.io) for m in conversion.in_maps],
        "outputs": [io_entry(m, q.io) for m in conversion.out_maps],
        "float_conversion_cosine": conversion.float_cosine,
        "device_packages": packages,
        "wheels": opts.wheels,
    }


def _bar(opts: BuildOptions) -> Bar:
    """The default bar with the user's overrides; 0 switches a criterion off."""
    given = {"min_cosine": opts.min_cosine, "min_top1": opts.min_top1, "min_f1": opts.min_f1,
             "min_channel_cosine": opts.min_channel_cosine}
    return dataclasses.replace(Bar(), **{k: (v or None) for k, v in given.items() if v is not None})


def _stacked(reference: Reference, samples: dict) -> dict:
    count = len(next(iter(samples.values())))
    runs = reference.outputs(samples, count)
    return {name: np.stack([r[k] for r in runs]) for k, name in enumerate(reference.output_names)}


def _choose_precision(opts: BuildOptions, io_dtype: str, conversion, calib, holdout, reference, fixed_entries,
                      prepared, work: Path, model, live_inputs, shapes, pinned=None):
    """The precision ladder (packager.ladder) on this model; raises when nothing may ship."""
    bar = _bar(opts)
    count = len(next(iter(calib.values())))
    take = max(1, min(VALIDATION, count // 4))
    validation = {k: v[count - take:] for k, v in calib.items()}
    with captured_output(show=opts.verbose):
        bench = Bench(conversion.in_maps, conversion.out_maps, fixed_entries, holdout, _stacked(reference, holdout),
                      validation, _stacked(reference, validation))
    # strict is auto's ladder; it differs in what it accepts as calibration data (_calibration_warnings)
    ladder_precision = "auto" if opts.precision == "strict" else opts.precision
    ladder = Ladder(bench, bar, ladder_precision, fallback=lambda: converter_int8(
        conversion.saved_model, conversion.in_maps, calib, io_dtype, opts.per_tensor, opts.verbose))
    float_tflite = export_float(conversion.saved_model, opts.verbose)
    if io_dtype == "uint8":
        # LiteRT Quantizer writes int8 I/O only; the Edge TPU convention stays on the converter.
        q = converter_int8(conversion.saved_model, conversion.in_maps, calib, "uint8", opts.per_tensor, opts.verbose)
        outcome = ladder.only("int8 (converter, uint8 I/O)", q)
    else:
        cal = Calibrated(float_tflite, conversion.in_maps, calib, io_dtype, opts.per_tensor, opts.verbose, pinned)

        def repaired():
            return _repaired(prepared, work, model, live_inputs, shapes, calib, reference, conversion, io_dtype, opts,
                             pinned)

        outcome = ladder.climb(cal, repaired, lambda: float_model(export_float16(conversion.saved_model, opts.verbose),
                                                                   "float16"),
                               float_model(float_tflite, "float32"))
    if outcome.chosen is None:
        best = ladder.best()
        rows = "; ".join(f"{s.name}: {', '.join(s.missing) or 'holds the bar'}" for s in ladder.steps)
        if not opts.accept_low_fidelity:
            raise UserError(
                f"no {'full-integer ' if opts.precision == 'int8' else ''}model holds the fidelity bar "
                f"(worst-output cosine >= {bar.min_cosine}, top-1 >= {bar.min_top1}, score-map F1 >= {bar.min_f1}, "
                f"worst channel >= {bar.min_channel_cosine}); tried: {rows}",
                "give more representative calibration data, " + (
                    "drop --precision int8 to let float islands or a float precision keep the accuracy, "
                    if opts.precision == "int8" else "") +
                "or ship anyway with --accept-low-fidelity (the manifest then says so)",
            )
        _warn(f"shipping {best.name} BELOW the fidelity bar (--accept-low-fidelity): {'; '.join(best.missing)}")
        outcome.chosen, outcome.why = best, f"--accept-low-fidelity: {best.name} came closest to the bar"
    return outcome, ladder


def _repaired(prepared, work: Path, model, live_inputs, shapes, calib, reference, conversion, io_dtype,
              opts: BuildOptions, pinned=None) -> Calibrated | None:
    """Ladder step 2: the float graph repaired (packager.repairs), converted again with the same strategy."""
    from .convert.strategies import STRATEGIES
    from .repairs import equalize, fuse_activations

    proto = copy.deepcopy(prepared)
    changes = [line for repair in (fuse_activations, equalize) for line in repair(proto)]
    if not changes:
        return None
    for change in changes:
        print(f"      repair: {change}", file=sys.stderr, flush=True)
    strategy = [s for s in STRATEGIES if s.name == conversion.strategy]

    def check(saved_model):
        with captured_output(show=opts.verbose):
            return map_tensors(saved_model, live_inputs, model.outputs, shapes, calib, reference)

    try:
        again = convert(proto, work / "repaired", calib, check, budget=opts.strategy_timeout,
                        verbose=opts.verbose, strategies=strategy, say=lambda text: None)
    except UserError as exc:
        _warn(f"the repaired graph did not convert ({exc}); going on without it")
        return None
    return Calibrated(export_float(again.saved_model, opts.verbose), again.in_maps, calib, io_dtype,
                      opts.per_tensor, opts.verbose, pinned)


def _converter_versions() -> dict:
    from importlib.metadata import version

    return {
        "name": "onnx2tf",
        "onnx2tf": version("onnx2tf"),
        "tensorflow": version("tensorflow"),
        "onnx": version("onnx"),
        "onnxruntime": version("onnxruntime"),
    }
