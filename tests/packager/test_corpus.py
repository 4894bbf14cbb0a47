"""The corpus: each model builds, its float conversion reproduces onnxruntime,
the precision ladder ships a model that holds the fidelity bar (never a
collapsed int8), and the bundle holds it again through `edge-run run` on
samples the build never saw. Figures are recorded (`-rA` shows them).

`make test` builds the entries of tier "test" (the fixtures of each failure
class, and the real models nothing else covers); `make corpus` builds all of
them and prints the table (benchmarks/corpus.py). EDGEPACK_CORPUS=all makes
this test take every entry.
"""

import os

import numpy as np
import pytest

from packager.fidelity import Bar, compare, criteria
from packager.kinds import OutputKind

from tests.conftest import ROOT
from tests.fixtures.corpus import CORPUS
from tests.fixtures.corpus_run import build_and_compare

pytestmark = pytest.mark.slow


ENTRIES = [e for e in CORPUS if e.tier == "test" or os.environ.get("EDGEPACK_CORPUS") == "all"]


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
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
        assert got.shape == ref.shape and got.shape[0] == entry.counts[1]
        assert np.isfinite(got).all()
    if entry.kinds:
        assert [o["kind"]["kind"] for o in manifest["outputs"]] == list(entry.kinds)
    precision = manifest["precision"]
    assert precision["meets_bar"] and not precision["accepted_low_fidelity"], precision["shortfalls"]
    steps = precision["steps"]
    chosen = next(i for i, s in enumerate(steps) if s["step"] == precision["step"])
    assert chosen == len(steps) - 1 and steps[chosen]["meets_bar"]  # the ladder stops at the first that holds
    assert all(not s["meets_bar"] or s["passed_over"] for s in steps[:chosen])
    # New samples (another seed): the shipped model holds the bar there too, within sampling slack.
    kinds = {o["name"]: OutputKind.from_dict(o["kind"]) for o in manifest["outputs"]}
    fresh = compare(result.reference, {n: result.int8[n] for n in result.reference}, entry.counts[1], kinds)
    slack = Bar(min_cosine=0.98, min_top1=0.95, min_f1=0.9, min_detection_f1=0.95, min_exact_match=0.95)
    # the slack is the sampling allowance: the figures as measured, not at one standard error below them
    below = [c.text for name, m in fresh["outputs"].items() for c in criteria(name, m, slack) if not c.value >= c.bar]
    assert below == []
    worst = result.worst_cosine()
    record_property("precision", precision["chosen"])
    record_property("worst_cosine", worst)
    record_property("top1", result.top1())
    print(f"{entry.name}: strategy {conversion['strategy']}, precision {precision['chosen']} ({precision['step']}), "
          f"worst cosine {worst:.4f}, top-1 {result.top1()}")
