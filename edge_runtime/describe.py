"""A bundle described for people: `edge-run info` and `edgepack inspect` print this.

The manifest's contract, conversion, precision ladder, fidelity and ops,
and (edge-run info) which delegate runs the model on this machine.
"""

from __future__ import annotations

from .errors import UserError
from .model import fixed_inputs, precision_report


BAR_TERMS = (("min_top1", "top-1"), ("min_exact_match", "CTC strings"), ("min_f1", "score F1"),
             ("min_detection_f1", "detection F1"), ("min_cosine", "cosine"), ("min_channel_cosine", "worst channel"))
# A ladder row's task figure: the first of these the step has (packager.fidelity.summary's keys).
TASK_FIGURES = (("top1", "top-1", ".1%"), ("exact_match", "strings", ".1%"), ("detection_f1", "det F1", ".3f"),
                ("f1", "F1", ".3f"), ("channel_cosine", "worst ch", ".3f"))
MAX_FLOAT_OPS = 8  # float ops named on a build's console; inspect names them all


def _bar_text(bar: dict | None) -> str:
    """The fidelity bar in words; None criteria were switched off at build time."""
    if not bar:
        return "bar not recorded"
    terms = [f"{word} >= {bar[key]:g}" for key, word in BAR_TERMS if bar.get(key) is not None]
    return ", ".join(terms) if terms else "every criterion switched off"


def _precision_lines(manifest: dict) -> list[str]:
    """The chosen precision and whether it holds the bar; loud when it was shipped below it.

    Bundles built before the precision ladder have no such section: they are
    full int8 (the only thing edgepack built then) with no recorded bar.
    """
    prec = precision_report(manifest)
    if not prec:
        return ["precision  int8 (built before the precision ladder; fidelity bar not recorded)"]
    verdict = "holds the bar" if prec.get("meets_bar") else "BELOW the bar"
    lines = [f"precision  {prec.get('chosen')} (step '{prec.get('step')}'; requested {prec.get('requested')}): "
             f"{verdict} ({_bar_text(prec.get('bar'))})"]
    if prec.get("why"):
        lines.append(f"           why: {prec['why']}")
    if not prec.get("meets_bar"):
        how = ", shipped with --accept-low-fidelity" if prec.get("accepted_low_fidelity") else ""
        lines.append(f"WARNING    below the fidelity bar{how}: {'; '.join(prec.get('shortfalls') or []) or '?'}")
    lines += _ladder_table(prec.get("steps") or [], prec.get("step"))
    return lines


def _figure(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _task(step: dict) -> str:
    """A ladder row's task figure, e.g. 'top-1 99.2%' ('-' for none)."""
    for key, label, spec in TASK_FIGURES:
        if step.get(key) is not None:
            return f"{label} {format(step[key], spec)}"
    return "-"


def _verdict(step: dict) -> str:
    if step.get("meets_bar") and step.get("passed_over"):
        return f"held, passed over: {step['passed_over']}"
    if step.get("meets_bar") and "slower than float32" in (step.get("note") or ""):
        return "holds the bar, slower than float32"  # a bundle from before the board-speed rule
    return "holds the bar" if step.get("meets_bar") else "below the bar"


def _ladder_table(steps: list[dict], chosen: str | None) -> list[str]:
    """Every precision step the build tried, one row each; '*' marks the one shipped."""
    if not steps:
        return []
    width = max(4, *(len(str(s.get("step"))) for s in steps))
    lines = [f"ladder     {'  step':<{width + 2}} {'precision':<10} {'cosine':>7} {'task':>14} {'float ops':>9} "
             f"{'size KB':>8} {'host ms':>8} {'board ms':>8} {'parts':>5}  verdict"]
    for s in steps:
        mark = "* " if s.get("step") == chosen else "  "
        size = None if s.get("size") is None else s["size"] / 1024
        floats = s.get("float_compute_ops", s.get("float_ops"))
        lines.append(
            f"           {mark}{str(s.get('step')):<{width}} {str(s.get('precision')):<10} "
            f"{_figure(s.get('cosine'), '.4f'):>7} {_task(s):>14} {_figure(floats, 'd'):>9} {_figure(size, '.0f'):>8} "
            f"{_figure(s.get('latency_ms'), '.3f'):>8} {_figure(s.get('board_ms'), '.3f'):>8} "
            f"{_figure(s.get('xnnpack_partitions'), 'd'):>5}  {_verdict(s)}"
        )
    return lines


def _output_task(m: dict) -> str:
    """One output's task figures in words (the kinds of packager.kinds); '' for a bundle from before kinds."""
    kind = m.get("kind")
    if kind in ("classes", "tags") and m.get("top1_agreement") is not None:
        return f"  {kind}: top-1 {m['top1_agreement'] * 100:.1f}%"
    if kind == "ctc":
        return f"  ctc: strings {m['exact_match'] * 100:.1f}%, CER {m['cer'] * 100:.2f}%"
    if kind == "detections":
        return "  detections: none" if m.get("f1") is None else (
            f"  detections: F1 {m['f1']:.3f} ({m['matched']} of {m['detections']} matched)")
    if kind == "scores":
        judged = [c for c in m.get("channels", []) if c.get("f1") is not None]
        worst = min(judged, key=lambda c: c["f1"]) if judged else None
        return f"  scores: F1 {worst['f1']:.3f} [ch {worst['index']}]" if worst else "  scores: no positives"
    return f"  {kind}: rel err {m['relative_error']:.3g}" if kind and "relative_error" in m else (
        f"  {kind}" if kind else "")


def _fidelity_lines(manifest: dict) -> list[str]:
    """Held-out fidelity per output: float ONNX against the model in the bundle (whatever its precision)."""
    fid = manifest.get("fidelity", {})
    if not fid:
        return []
    chosen = (manifest.get("precision") or {}).get("chosen", "int8")
    lines = [f"fidelity   on {fid.get('samples')} held-out samples, float ONNX vs bundle ({chosen}):"]
    for name, m in fid.get("outputs", {}).items():
        extra = _output_task(m)
        if m.get("worst_channel") and not m.get("kind"):
            ch = m["worst_channel"]
            extra += f"  worst ch {ch['cosine']:.4f} [{ch['index']}, axis {ch['axis']}]"
        if m.get("top1_agreement") is not None and not m.get("kind"):
            extra += f"  top1 {m['top1_agreement'] * 100:.1f}%"
        f1 = (m.get("score_map") or {}).get("f1")
        if f1 is not None:
            extra += f"  F1 {f1:.3f}"
        lines.append(
            f"           {name}: cosine {m['cosine']:.5f}  max|err| {m['max_abs_error']:.5g}  "
            f"mean|err| {m['mean_abs_error']:.5g}{extra}"
        )
    return lines


def describe(manifest: dict, full: bool = True) -> str:
    """A human summary of a manifest (shared with `edgepack inspect`); ``full=False`` (the build's console)
    names only the first few float ops."""
    precision_report(manifest)  # checked by type first: every section below reads it
    lines = [
        f"bundle     {manifest['name']} (edgepack {manifest.get('edgepack_version')}, {manifest.get('created_at')})",
        f"target     {manifest['target']['name']}: {manifest['target']['human_name']}",
        f"source     {manifest['source']['file']} sha256 {manifest['source']['sha256'][:16]}...",
    ]
    for kind in ("inputs", "outputs"):
        for s in manifest[kind]:
            q = f" scale {s['scale']:.6g} zp {s['zero_point']}" if s.get("scale") else ""
            meaning = f" ({s['kind']['kind']})" if isinstance(s.get("kind"), dict) else ""
            lines.append(
                f"{kind[:-1]:<10} {s['name']} {s['shape']} {s['dtype']}{meaning} -> tflite {s['tflite_shape']} "
                f"{s['tflite_dtype']} perm {s['permutation']}{q}"
            )
            if s.get("format"):
                from .tensors import pixel_mode

                norm = s.get("normalisation", {})
                how = {"copy": "copied as they are", "flip": "copied, top bit flipped",
                       "quantize": "quantized on the way in"}[pixel_mode(s)]
                lines.append(f"           camera frames: uint8 HxWxC {s['shape'][1]}x{s['shape'][2]}x{s['shape'][3]} "
                             f"({how}); (x/255 - {norm.get('mean')}) / {norm.get('std')} runs in the model")
    for name, value in fixed_inputs(manifest).items():
        lines.append(f"fixed      {name} = {value.tolist()} (set when built; no other value)")
    if "conversion" in manifest:
        changes = manifest.get("preparation", {}).get("changes", [])
        lines.append(f"converted  by strategy {manifest['conversion']['strategy']} "
                     f"({len(manifest['conversion']['attempts'])} tried); graph preparation: {len(changes)} change(s)")
        lines.extend(f"           {c}" for c in changes)
    lines += _precision_lines(manifest)
    lines += _fidelity_lines(manifest)
    ops = manifest.get("ops", {})
    if ops:
        counts = ", ".join(f"{op}/{dt} {n}" for op, per in sorted(ops["counts"].items()) for dt, n in sorted(per.items()))
        lines.append(f"ops        {ops['total']} ops: {counts}")
        lines.append(_float_ops_line(ops.get("float_ops", []), full))
    return "\n".join(lines)


def _float_ops_line(floats: list[dict], full: bool) -> str:
    if not floats:
        return "float ops  none"
    if full or len(floats) <= MAX_FLOAT_OPS:
        return "float ops  " + "; ".join(f"{f['type']} ({f['output']})" for f in floats)
    counts: dict[str, int] = {}
    for f in floats:
        counts[f["type"]] = counts.get(f["type"], 0) + 1
    listed = ", ".join(f"{t} x{n}" for t, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"float ops  {len(floats)}: {listed} (edgepack inspect names each)"


def engine_report(bundle, threads: int | None, delegate: str | None, delegate_options: list[str]) -> dict:
    """Load the model as run, bench and serve would: which delegate runs it, its share, why not the one wanted.

    A bundle is still described when its model cannot be loaded here (no
    runtime on a workstation, say): the report then says why.
    """
    from . import load

    try:
        engine = load(bundle, threads=threads, delegate=delegate, delegate_options=delegate_options).engine
    except UserError as exc:
        if "--delegate" in str(exc):  # a mistake on this command line, not a property of the device
            raise
        return {"loaded": False, "error": str(exc)}
    return {"loaded": True, "runtime": f"{engine.runtime} {engine.runtime_version}", "threads": engine.threads,
            **engine.report(), "summary": engine.summary()}


def engine_lines(report: dict) -> list[str]:
    if not report["loaded"]:
        return [f"engine     not loaded here: {report['error']}"]
    threads = report["threads"]
    lines = [f"engine     {report['runtime']}, {threads} thread{'s' * (threads != 1)}, {report['summary']}"]
    if report["fallback"]:
        lines.append(f"fallback   {report['fallback']}")
    return lines
