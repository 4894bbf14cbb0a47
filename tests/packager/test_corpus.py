"""The real-model corpus: each model builds, its float conversion reproduces
onnxruntime, the precision ladder ships a model that holds the fidelity bar
(never a collapsed int8), and the bundle holds it again through `edge-run run`
on samples the build never saw. Figures are recorded (`-rA` shows them).
"""

import dataclasses

import numpy as np
import pytest

from packager.fidelity import Bar, compare, shortfalls
from packager.kinds import OutputKind

from tests.conftest import ROOT
from tests.fixtures.corpus import CORPUS, HELD_OUT, build_and_compare

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("entry", CORPUS, ids=[e.name for e in CORPUS])
def test_corpus_model_builds_and_runs(entry, tmp_path, record_property):
    result = build_and_compare(entry, tmp_path, ROOT)
    manifest = result.manifest
    assert min(manifest["float_conversion_cosine"].values()) >= 0.999
    conversion = manifest["conversion"]
    assert conversion["strategy"] == manifest["converter"]["strategy"]
    assert conversion["attempts"][-1] == {**conversion["attempts"][-1], "strategy": conversion["strategy"], "ok": True}
    assert all(not a["ok"] for a in conversion["attempts"][:-1])
    for name, ref in result.reference.items():
        got = result.int8[name]
        assert got.shape == ref.shape and got.shape[0] == HELD_OUT
        assert np.isfinite(got).all()
    precision = manifest["precision"]
    assert precision["meets_bar"] and not precision["accepted_low_fidelity"], precision["shortfalls"]
    steps = precision["steps"]
    chosen = next(i for i, s in enumerate(steps) if s["step"] == precision["step"])
    assert chosen == len(steps) - 1 and steps[chosen]["meets_bar"]  # the ladder stops at the first that holds
    assert all(not s["meets_bar"] or "slower than float32" in s["note"] for s in steps[:chosen])
    # New samples (another seed): the shipped model holds the bar there too, within sampling slack.
    fields = {f.name for f in dataclasses.fields(OutputKind)}  # the manifest's kinds, as the build judged them
    kinds = {o["name"]: OutputKind(**{k: v for k, v in o["kind"].items() if k in fields}) for o in manifest["outputs"]}
    fresh = compare(result.reference, {n: result.int8[n] for n in result.reference}, HELD_OUT, kinds)
    slack = Bar(min_cosine=0.98, min_top1=0.95, min_f1=0.9, min_channel_cosine=0.85)
    assert shortfalls(fresh, slack) == []
    worst = result.worst_cosine()
    record_property("precision", precision["chosen"])
    record_property("worst_cosine", worst)
    record_property("top1", result.top1())
    print(f"{entry.name}: strategy {conversion['strategy']}, precision {precision['chosen']} ({precision['step']}), "
          f"worst cosine {worst:.4f}, top-1 {result.top1()}")
