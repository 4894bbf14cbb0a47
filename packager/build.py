"""`edgepack build`: the host pipeline, stage by stage.

preflight -> load ONNX, fix shapes -> read calibration -> device wheels ->
prepare the graph -> convert (float, strategies tried in order, each checked
against onnxruntime) -> choose the precision (the ladder) -> fidelity and op
report -> each target's runtime check and bundle -> seal, sign, publish.
Each stage lives in a module of its own; this one only calls them in order.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from edge_runtime.errors import UserError

from .accelerators import check_accelerators
from .board_bench import RUNNER_ROOT, reach_board
from .bundle import bundle_name, publish_all
from .convert import DEFAULT_BUDGET
from .fidelity import format_table, unresolved
from .graph import convert_graph, prepare_graph, same_strategy
from .input_stats import input_statistics
from .manifest import Shipped, input_entries
from .ops import op_report
from .ladder.apart import Job, choose_apart
from .precision import Candidates, bar_of, make_bench, precision_entry
from .preflight import preflight
from .report import block, detail, float_ops_warning, frame_path, split_warning, warn
from .report import say as _say
from .signing import check_key
from .source import IMAGE_FORMAT, as_frames, load_source, read_samples
from .staging import check_runs, stage_target
from .stopping import checkpoint
from .wheels import device_wheels


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
    precision: str = "auto"  # auto | int8 | strict
    min_cosine: float | None = None  # the bar; None: the defaults of fidelity.Bar
    min_top1: float | None = None
    min_f1: float | None = None
    min_channel_cosine: float | None = None
    min_detection_f1: float | None = None
    min_exact_match: float | None = None
    output_kinds: tuple[str, ...] = ()  # NAME=KIND[:THRESHOLD] (packager.kinds)
    accept_low_fidelity: bool = False
    wheels: bool = True
    strategy_timeout: float | None = DEFAULT_BUDGET  # seconds per conversion attempt
    max_memory: int | None = None  # MB a conversion may take (unrolling is refused above it); None: 80% of RAM
    verbose: bool = False
    require_edgetpu: bool = False
    sign: str | None = None  # an OpenSSH private key: manifest.json.sig
    input_format: str = "tensor"  # or "image-uint8": camera frames in, normalisation folded into the model
    bench_on: str | None = None  # USER@HOST[:PORT]: time the ladder's candidates on that board over SSH
    bench_python: str | None = None  # the board's python with a TFLite runtime (default: python3, else a venv)


@dataclasses.dataclass
class BuildResult:
    bundle_dir: Path
    archive: Path
    manifest: dict
    signer: str | None = None  # the signing key's fingerprint (not in the manifest: the signature covers it)


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
    plan = preflight(opts)  # seconds, before minutes of conversion; so are the next three
    signer = check_key(opts.sign) if opts.sign else None
    check_accelerators(plan.profiles, opts)
    board = reach_board(opts.bench_on, plan.profiles, opts.bench_python) if opts.bench_on else None
    try:
        return _run(opts, plan, signer, board, say)
    finally:
        if board is not None:
            board.close()


def _run(opts, plan, signer, board, say) -> list[BuildResult]:
    """Stages 1–9, once the options, targets, key and board checked out."""
    from .workspace import workspace

    say = _checked(say)

    say(1, f"loading {opts.model}")
    source = load_source(opts, plan.input_shapes)
    say(2, f"reading calibration data from {opts.calibration}")
    samples = read_samples(opts, source)
    names = [bundle_name(source.model.path.stem, p.name) for p in plan.profiles]
    with workspace(plan.out_dir, names[0]) as (private, work):
        # Wheels first: a device we cannot equip should fail before minutes of conversion.
        equipment = [device_wheels(opts.wheels, p, work / f"wheels-{p.name}", say, source.image is not None)
                     for p in plan.profiles]
        if board is not None:
            detail(f"--bench-on {board.name}: candidates timed with {board.prepare(RUNNER_ROOT, equipment[0][0])}")
        say(4, "preparing the graph (constants folded, pre-quantized ops back to float)")
        graph = prepare_graph(source, samples, opts.verbose)
        say(5, "converting to a float model and checking it against onnxruntime")
        conversion = convert_graph(source, graph, samples, opts, work)
        shipped = _choose(opts, plan, source, samples, graph, conversion, work, say, board)
        say(8, "op report; a run on each target's runtime (loads? peak memory?)")
        runs = check_runs(_chosen_file(shipped, work), plan.profiles)
        health_samples = as_frames(samples.holdout, source.image)
        manifests = [stage_target(shipped, private / name, profile, kit, runs[profile.name], health_samples)
                     for profile, name, kit in zip(plan.profiles, names, equipment)]
        say(9, "writing " + ", ".join(f"{plan.out_dir / n} and {n}.tar.gz" for n in names))
        published = publish_all([(private / n, m) for n, m in zip(names, manifests)], signer, plan.out_dir)
    fingerprint = signer.fingerprint if signer else None
    return [BuildResult(folder, archive, manifest, fingerprint) for folder, archive, manifest in published]


def _checked(say: Callable[[int, str], None]) -> Callable[[int, str], None]:
    """``say`` that first raises again a stop signal whose exception was swallowed (packager.stopping)."""
    def checked(stage: int, text: str) -> None:
        checkpoint()
        say(stage, text)

    return checked


def _choose(opts, plan, source, samples, graph, conversion, work: Path, say, board) -> Shipped:
    """Stages 6–7: the ladder's choice, its fidelity table, and everything measured about it."""
    calibrated, held_out = samples.counts
    say(6, f"choosing the precision ({opts.precision}): full int8 first, calibrated on {calibrated} samples, "
           f"judged on {held_out} held-out samples")
    pinned = {source.image.name: (0.0, 255.0)} if source.image else None
    candidates = Candidates(conversion, samples.calib, plan.io_dtype, opts.per_tensor, opts.verbose, pinned,
                            same_strategy(source, graph, samples, opts, work, conversion).reconvert, graph.proto)
    bench = make_bench(conversion, source, graph.fixed_entries, samples, opts.verbose)
    too_few = unresolved(bench.kinds, held_out, bar_of(opts))
    for text in too_few:
        warn(text)
    outcome, split = choose_apart(Job(opts, candidates, bench, board, tuple(plan.profiles), str(work / "ladder")))
    chosen, q = outcome.chosen, outcome.chosen.model
    if source.image:
        key = next(m.key for m in conversion.in_maps if m.spec.name == source.image.name)
        detail(frame_path(q.io[key], IMAGE_FORMAT))
    if q.respelled:
        detail("respelled for int8 (same values in float): "
               + ", ".join(f"{op} x{n}" for op, n in sorted(q.respelled.items()))
               + " -> ops LiteRT Quantizer and XNNPACK take in int8 (MUL/ADD with fused RELU6, MAX_POOL_2D)")
    say(7, f"fidelity of the chosen model ({chosen.name}) on {held_out} held-out samples")
    block(format_table(chosen.report, q.precision))
    if samples.warnings:
        warn("the figures above were measured on " + ("random" if opts.calibration == "random" else
             "calibration data without variation") + ": they mean NOTHING (manifest: "
             "quantization.calibration.warnings)")
    ops = op_report(q.tflite)
    if ops["float_ops"] and q.precision in ("int8", "int8+float"):
        warn(float_ops_warning(ops))
    if chosen.partitions > 1:
        warn(split_warning(chosen.partitions, split))
    statistics = input_statistics(as_frames(samples.data, source.image),
                                  input_entries(q, conversion, source.image))
    precision = precision_entry(opts, outcome, bar_of(opts), too_few)
    return Shipped(opts, source.model, plan.io_dtype, q, samples.counts, graph.preparation, conversion, source.image,
                   graph.fixed_entries, samples.warnings, precision, bench.kinds, chosen.report, ops, statistics)


def _chosen_file(shipped: Shipped, work: Path) -> Path:
    path = work / "model.tflite"
    path.write_bytes(shipped.quantized.tflite)
    return path
