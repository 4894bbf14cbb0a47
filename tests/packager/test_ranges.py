"""Per-tensor activation ranges: the candidates and the search judged by outputs (no converter)."""

from __future__ import annotations

import numpy as np

from packager.ladder import margin
from packager.fidelity import Bar, compare
from packager.kinds import OutputKind
from packager.ranges import BINS, Histogram, candidates, override, search


def _hist(values: np.ndarray) -> Histogram:
    lo, hi = float(values.min()), float(values.max())
    return Histogram(lo, hi, np.histogram(values, bins=BINS, range=(lo, hi))[0])


def test_heavy_tail_is_clipped_by_mse_but_kept_by_minmax():
    values = np.random.default_rng(0).laplace(0, 1, 1_000_000)  # max ~14; 8-bit MSE-optimal clip ~10 (ACIQ)
    c = candidates(_hist(values))
    assert c["minmax"][1] == values.max()
    assert 8 < c["mse"][1] < 0.9 * values.max()
    assert c["p99.9"][1] < c["p99.99"][1] < c["minmax"][1]


def test_one_huge_spike_is_kept_by_mse_because_its_error_would_dominate():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1, 200_000), [400.0]])
    assert candidates(_hist(values))["mse"][1] == 400.0


def test_uniform_values_keep_their_whole_range_under_mse():
    values = np.random.default_rng(1).uniform(-3, 5, 100_000)
    lo, hi = candidates(_hist(values))["mse"]
    assert lo < -2.9 and hi > 4.9


def test_every_candidate_holds_zero():
    values = np.random.default_rng(2).uniform(2, 9, 50_000)  # all positive: the range still spans 0
    for lo, hi in candidates(_hist(values)).values():
        assert lo <= 0 <= hi


def test_override_replaces_only_the_named_tensors():
    qsv = {"a": {"min": np.array([[-1.0]]), "max": np.array([[1.0]])},
           "b": {"min": np.array([[0.0]]), "max": np.array([[6.0]])}}
    new = override(qsv, {"a": (-0.5, 0.25)})
    assert new["a"]["min"].shape == (1, 1) and new["a"]["max"].item() == 0.25
    assert new["b"] is qsv["b"] and qsv["a"]["min"].item() == -1.0  # the original is untouched


def test_search_keeps_a_block_change_only_when_the_outputs_improve():
    order = [f"t{i}" for i in range(8)]
    cands = {t: {"minmax": (0, 10), "mse": (0, 5), "p99.99": (0, 9), "p99.9": (0, 4)} for t in order}
    needs_tail = {"t6", "t7"}  # clipping these hurts; clipping the others helps

    def judge(ranges):
        return sum((1 if ranges[t][1] == 10 else -1) if t in needs_tail else (1 if ranges[t][1] <= 5 else 0)
                   for t in order)

    choice = search(order, cands, judge, blocks=4)
    assert all(choice.rules[t] == "minmax" for t in needs_tail)
    assert all(choice.rules[t] in ("mse", "p99.9") for t in order if t not in needs_tail)
    assert choice.score == 8
    assert choice.trials[0][0] == "all minmax"


def test_search_stops_when_good_enough():
    order = ["a", "b"]
    cands = {t: {r: (0, 1) for r in ("minmax", "mse", "p99.99", "p99.9")} for t in order}
    calls = []

    def judge(ranges):
        calls.append(1)
        return 1.0

    search(order, cands, judge, good_enough=1.0)
    assert len(calls) == 1


def test_margin_is_the_worst_criterion_relative_to_the_bar():
    n = 20
    ref = np.random.default_rng(3).normal(size=(n, 1, 10)).astype(np.float32)
    report = compare({"scores": ref}, {"scores": ref}, n)
    assert margin(report, Bar()) >= 1
    wrong = ref.copy()
    wrong[:, 0, :] = -ref[:, 0, :]  # every sample's top-1 lost, cosine -1
    assert margin(compare({"scores": ref}, {"scores": wrong}, n), Bar()) == 0  # logits: judged by top-1
    regression = {"scores": OutputKind("regression")}
    assert margin(compare({"scores": ref}, {"scores": wrong}, n, regression), Bar()) < 0  # judged by cosine
