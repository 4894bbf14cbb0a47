"""`edgepack`: the host command line.

User errors become one ``error: ...`` line and exit code 2; tracebacks only
with -v. Heavy imports happen inside the commands that need them, so
``edgepack --help`` and ``edgepack targets`` are instant.
"""

from __future__ import annotations

import json
import sys

import click

from edge_runtime.errors import UserError
from edge_runtime.native_logs import quiet_process

EXIT_USER_ERROR = 2


def _floats(ctx, param, value):
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers like 0.485,0.456,0.406, found {value!r}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgepack", prog_name="edgepack")
def cli():
    """Turn an ONNX model into a calibrated full-integer TFLite bundle for an edge device."""


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", required=True,
              help="Device profile name (edgepack targets) or path to a profile .toml; several separated by "
                   "commas build one bundle each from one conversion.")
@click.option("--calibration", required=True,
              help="Folder of images, .npy (one input), .npz (one array per input name), or 'random'.")
@click.option("-o", "--out-dir", default="dist", show_default=True, help="Where the bundle folder and .tar.gz go.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=D0,D1,...",
              help="Fix an input's dynamic dimensions (repeatable). Batch defaults to 1.")
@click.option("--mean", callback=_floats, help="Image folders: per-channel mean after scaling to 0..1.")
@click.option("--std", callback=_floats, help="Image folders: per-channel std after scaling to 0..1.")
@click.option("--input-format", type=click.Choice(["tensor", "image-uint8"]), default="tensor", show_default=True,
              help="image-uint8: the bundle takes camera frames (uint8 HxWxC RGB, as PIL or a camera gives them); "
                   "--mean/--std are folded into the model, so the device does no per-frame work.")
@click.option("--io-dtype", type=click.Choice(["int8", "uint8", "float32"]), default=None,
              help="Dtype of the model's inputs/outputs (default: the target's).")
@click.option("--per-tensor", is_flag=True, help="One quantization scale per tensor instead of per channel.")
@click.option("--precision", type=click.Choice(["auto", "int8", "strict"]), default="auto", show_default=True,
              help="auto: the cheapest precision that holds the fidelity bar (full int8 first); "
                   "int8: full integer or fail (Edge TPU, NPUs); strict: auto, but calibration data "
                   "without variation (identical or blank samples) is refused, not warned about.")
@click.option("--output-kind", "output_kinds", multiple=True, metavar="NAME=KIND[:THRESHOLD]",
              help="What an output means, when the graph does not say (repeatable): classes, tags, ctc, scores, "
                   "detections, regression, embedding or state; scores and detections take a threshold "
                   "(e.g. prob=scores:0.6). It chooses the task figure that judges the output.")
@click.option("--min-top1", type=float, default=None,
              help="Bar: top-1 agreement of classes and tags outputs (default 0.99; 0 = off).")
@click.option("--min-exact-match", type=float, default=None,
              help="Bar: share of CTC strings equal to the float model's (default 0.99).")
@click.option("--min-f1", type=float, default=None,
              help="Bar: F1 above the threshold of every lit channel of a score map (default 0.95).")
@click.option("--min-detection-f1", type=float, default=None,
              help="Bar: F1 of the detections after NMS against the float model's (default 0.98).")
@click.option("--min-cosine", type=float, default=None,
              help="Bar: mean cosine of regression, embedding and state outputs (default 0.99).")
@click.option("--min-channel-cosine", type=float, default=None,
              help="Bar: cosine of the worst channel of a regression output (default: not judged).")
@click.option("--accept-low-fidelity", is_flag=True,
              help="Publish the closest model even when none holds the bar (the manifest says so).")
@click.option("--no-wheels", is_flag=True, help="Leave the device wheels out of the bundle.")
@click.option("--strategy-timeout", type=float, default=None, metavar="SECONDS",
              help="Time budget of each conversion attempt before the next strategy is tried (default 600).")
@click.option("--max-memory", type=int, default=None, metavar="MB",
              help="Memory a conversion may take; unrolling recurrent layers is refused when its estimate is over "
                   "it, before it starts (default: 80% of this machine's memory).")
@click.option("--require-edgetpu", is_flag=True,
              help="Edge TPU targets: fail (before converting) unless edgetpu_compiler is on PATH to compile "
                   "model_edgetpu.tflite; without it the CPU model ships with the compatibility report.")
@click.option("--sign", "sign_key", metavar="KEY",
              help="Sign manifest.json with this OpenSSH private key (ssh-keygen -Y sign): a device that pinned "
                   "its public key (install.sh --trust KEY.pub) runs only bundles it signed.")
@click.option("--bench-on", metavar="USER@HOST[:PORT]",
              help="Time the precision candidates on this board over SSH (key authentication) with its own runtime "
                   "(or a temporary venv from the bundle's wheels), and choose by those timings.")
@click.option("--bench-python", metavar="PATH",
              help="With --bench-on: the board's python that has a TFLite runtime (e.g. a venv install.sh made).")
@click.option("-v", "--verbose", is_flag=True, help="Show the converters' logs and tracebacks.")
def build(model, target, calibration, out_dir, input_shapes, mean, std, input_format, io_dtype, per_tensor, precision,
          output_kinds, min_top1, min_exact_match, min_f1, min_detection_f1, min_cosine, min_channel_cosine,
          accept_low_fidelity, no_wheels, strategy_timeout, max_memory, require_edgetpu, sign_key, bench_on,
          bench_python, verbose):
    """Build MODEL.onnx into a bundle for --target."""
    from .build import BuildOptions, build_all

    opts = BuildOptions(
        model=model, target=target, calibration=calibration, out_dir=out_dir, input_shapes=input_shapes,
        mean=mean, std=std, io_dtype=io_dtype, per_tensor=per_tensor, precision=precision, min_cosine=min_cosine,
        min_top1=min_top1, min_f1=min_f1, min_channel_cosine=min_channel_cosine, min_detection_f1=min_detection_f1,
        min_exact_match=min_exact_match, output_kinds=output_kinds, bench_on=bench_on, max_memory=max_memory,
        bench_python=bench_python,
        accept_low_fidelity=accept_low_fidelity, wheels=not no_wheels, verbose=verbose,
        require_edgetpu=require_edgetpu, sign=sign_key, input_format=input_format,
    )
    if strategy_timeout is not None:
        opts.strategy_timeout = strategy_timeout
    results = build_all(opts)
    from edge_runtime.describe import describe

    if len(results) == 1:
        click.echo(describe(results[0].manifest, full=False))
        click.echo(f"bundle     {results[0].bundle_dir}")
        click.echo(f"archive    {results[0].archive}")
    else:
        click.echo(summary_table(results))
    if results[0].signer:
        click.echo(f"signed     manifest.json.sig by {results[0].signer} ({sign_key}); "
                   f"pin it on the device: install.sh --trust {sign_key}.pub")


def summary_table(results) -> str:
    """One line per target of a multi-target build: what each bundle holds and how it fits."""
    rows = [("target", "cpu", "python", "precision", "model", "peak RSS / budget", "edge tpu", "archive")]
    for r in results:
        m = r.manifest
        memory = m.get("memory") or {}
        model_mb = m["sizes"]["model.tflite"] / 1e6
        edgetpu = m.get("edgetpu") or {}
        rows.append((
            m["target"]["name"], m["target"]["cpu"], m["target"]["os"]["python"], m["precision"]["chosen"],
            f"{model_mb:.2f} MB",
            f"{memory.get('peak_rss_mb', 0):.0f} / {memory.get('budget_mb', 0)} MB",
            f"{edgetpu.get('ops_edgetpu', 0)}/{edgetpu.get('ops_total', 0)} ops"
            if "edgetpu" in m["target"]["delegates"] else "-",
            str(r.archive),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in rows]
    first = results[0].manifest
    lines.append(f"one conversion ({first['converter']['strategy']}) and one {first['precision']['chosen']} model "
                 f"(sha256 {first['files']['model.tflite'][:16]}...) shared by {len(results)} bundles")
    return "\n".join(lines)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def targets(as_json):
    """List the device profiles."""
    from .profiles import NO_RUNTIME_WHEELS, all_profiles

    profiles = all_profiles()
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in profiles], indent=2))
        return
    header = (f"{'name':<13} {'arch':<8} {'cpu':<11} {'cores':>5} {'mem MB':>7} {'budget':>6} {'os':<26} "
              f"{'python':<6} {'runtime':<22} delegates")
    click.echo(header)
    for p in profiles:
        os_name = f"{p.os['name']} {p.os['debian_suite']}"
        runtime = f"{p.runtime['package']} {p.runtime['version']}"
        click.echo(
            f"{p.name:<13} {p.arch:<8} {p.cpu:<11} {p.cores:>5} {p.memory_mb:>7} {p.memory_budget_mb:>6} "
            f"{os_name:<26} {p.os['python']:<6} {runtime:<22} {','.join(p.delegates)}"
        )
    for arch, why in NO_RUNTIME_WHEELS.items():
        click.echo(f"not a target: {why}; use the 64-bit OS on the same board.")


@cli.command()
@click.argument("bundle", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest.")
def inspect(bundle, as_json):
    """Show a bundle's manifest, op report, fidelity report and Edge TPU compatibility."""
    from edge_runtime.bundle import open_bundle
    from edge_runtime.describe import describe
    from edge_runtime.trust import REBUILD, signature_of

    from .edgetpu import compatibility

    folder, manifest = open_bundle(bundle)
    # From the model itself: bundles built before the report existed get it too.
    edgetpu = compatibility((folder / "model.tflite").read_bytes())
    signature = signature_of(folder)
    if as_json:
        click.echo(json.dumps({**manifest, "edgetpu": edgetpu, "signature": signature}, indent=2))
    else:
        click.echo(describe(manifest))
        if signature["signed"]:
            click.echo(f"signed     yes, by {signature['fingerprint']} ({signature['key_type']}): runs on devices "
                       "that pinned this key, or none")
        else:
            click.echo(f"signed     no ({signature['problem']}): devices that pinned a key refuse it; {REBUILD}")
        click.echo(f"edgetpu    {edgetpu['summary']}")
        compiled = (manifest.get("edgetpu") or {}).get("compiled")
        if isinstance(compiled, dict):  # what edgetpu_compiler made of it, when the build had the compiler
            click.echo(f"           compiled by edgetpu_compiler {compiled.get('version')}: "
                       f"{compiled.get('ops_edgetpu')} of {compiled.get('ops_total')} ops in {compiled.get('file')}, "
                       f"on-chip {compiled.get('on_chip_used')}, off-chip {compiled.get('off_chip_used')}, "
                       f"needs runtime >= {compiled.get('min_runtime')}")


@cli.command()
@click.argument("bundle", type=click.Path())
@click.option("--data", required=True,
              help="Samples: image folder (flat, or one sub-folder per class: labelled), .npy or .npz.")
@click.option("--labels", default=None, help="Class ids, one per sample (.npy); not with class sub-folders. "
                                             "Without labels: the bundle against the float model, per output kind.")
@click.option("--model", default=None,
              help="The float .onnx the bundle was built from (default: its file name next to the bundle or here).")
@click.option("--output", default=None,
              help="Output to score (default: the first classes output; without labels, every output).")
@click.option("--mean", callback=_floats, help="Image folders: per-channel mean, as given to the build.")
@click.option("--std", callback=_floats, help="Image folders: per-channel std, as given to the build.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def evaluate(bundle, data, labels, model, output, mean, std, as_json):
    """Float ONNX model vs BUNDLE on your data: accuracy and per-class figures with labels, else each output
    judged by what it means (top-1, strings, detections, score maps, cosine)."""
    from .evaluate import evaluate as run_evaluate
    from .evaluate import format_report

    report = run_evaluate(bundle, data, labels=labels, model=model, output=output, mean=mean, std=std)
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("bundle", type=click.Path())
@click.option("--target", default=None, help="Device profile to emulate (default: the bundle's own target).")
@click.option("--fresh-env", is_flag=True,
              help="Install the bundle's wheels afresh on the emulated board (default: reuse the board's "
                   "environment for the same wheels from an earlier run; install.sh checks it first).")
@click.argument("edge_run_args", nargs=-1, type=click.UNPROCESSED)
def emulate(bundle, target, fresh_env, edge_run_args):
    """Install BUNDLE on the emulated device and run edge-run there.

    \b
    edgepack emulate dist/model-rpi4 -- run --input x.npy --output y.npz
    edgepack emulate dist/model-rpi4 -- bench --runs 20
    """
    from edge_runtime.bundle import open_bundle

    from .emulator import emulate as run_emulated
    from .profiles import bundle_profile, load_profile

    folder, manifest = open_bundle(bundle)
    profile = load_profile(target) if target else bundle_profile(manifest, bundle)
    code = run_emulated(profile, folder, list(edge_run_args), fresh_env=fresh_env)
    if code:
        raise click.exceptions.Exit(code)


@cli.command()
@click.argument("bundle", type=click.Path())
@click.option("-o", "--out-dir", default="dist", show_default=True,
              help="Where the image layout folder (<name>-oci/) and its archive (<name>-oci.tar) go.")
def oci(bundle, out_dir):
    """Write BUNDLE as an OCI image running edge-run serve, for its target's architecture.

    \b
    The image holds Debian's python3 (no shell), the bundle's environment
    installed from its own wheels on the emulated board, and the bundle;
    it is checked there (edge-run health, as its unprivileged user) before
    anything is written. Needs umoci and skopeo (make oci-tools).
    """
    from .oci.image import build_image

    click.echo(build_image(bundle, out_dir).summary())


@cli.group()
def fleet():
    """Fleets of boards, reached with Ansible (the edgepack.fleet collection in deploy/ansible)."""


@fleet.command("inventory")
@click.option("--model", required=True, help="The model's stem: a build's bundles are DIST/<model>-<target>.tar.gz.")
@click.option("--dist", default="dist", show_default=True, type=click.Path(file_okay=False),
              help="Where the multi-target build wrote its bundles (edgepack build -o).")
@click.option("--board", "boards", multiple=True, required=True, metavar="NAME=TARGET@[USER@]HOST[:PORT]",
              help="A board, its target profile and its SSH address (repeatable).")
@click.option("--canary", default=None, help="The board a rollout updates first (default: the first --board).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write the inventory here (default: standard output).")
def inventory(model, dist, boards, canary, output):
    """An Ansible inventory mapping boards to targets, so each board gets its target's bundle.

    \b
    edgepack build digits.onnx --target rpi4,zero2w --calibration cal.npy
    edgepack fleet inventory --model digits --board pi-01=rpi4@pi@10.0.0.21 \\
        --board zero-01=zero2w@pi@10.0.0.31 -o inventory.yml
    ansible-playbook -i inventory.yml edgepack.fleet.rollout
    """
    from pathlib import Path

    from .fleet import check_bundles, inventory as make_inventory, parse_board

    dist_dir = Path(dist).resolve()
    parsed = check_bundles([parse_board(b) for b in boards], model, dist_dir)
    text = make_inventory(parsed, model, dist_dir, canary)
    if output:
        Path(output).write_text(text)
        click.echo(f"wrote {output}: {len(parsed)} board(s) of {len({b.target for b in parsed})} target(s)", err=True)
    else:
        click.echo(text, nl=False)


def main(argv: list[str] | None = None) -> int:
    from .stopping import Stopped, stop_on_signals

    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv or "--verbose" in argv
    if not verbose:  # before TensorFlow loads, here and in every process the build starts (they inherit it)
        quiet_process()
    try:
        with stop_on_signals():
            cli.main(args=argv, prog_name="edgepack", standalone_mode=False)
    except Stopped as stop:
        click.echo(f"error: stopped by {stop.name}: every worker was ended and the temp folders and partial "
                   "output removed; nothing was written", err=True)
        return 128 + stop.signum
    except UserError as exc:
        if verbose:
            raise
        click.echo(f"error: {exc}", err=True)
        return EXIT_USER_ERROR
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:  # Ctrl-C (click turns KeyboardInterrupt into Abort)
        click.echo("error: interrupted (SIGINT): every worker was ended and the temp folders and partial output "
                   "removed; nothing was written", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
