"""The README's sample outputs are what its commands print today (examples/digits/readme_samples.py runs them;
`make readme` rewrites the samples)."""

import importlib.util
import tempfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

FIX = "the README's samples drifted from what the commands print now: run `make readme` and commit README.md"


@pytest.fixture(scope="module")
def samples():
    """examples/digits/readme_samples.py, the script `make readme` runs."""
    spec = importlib.util.spec_from_file_location("readme_samples", ROOT / "examples" / "digits" / "readme_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def work(samples, tmp_path) -> Path:
    return Path(tempfile.mkdtemp(prefix=samples.WORK_PREFIX, dir=tmp_path))


def readme(samples) -> dict:
    return samples.readme_samples((ROOT / "README.md").read_text(encoding="utf-8"))


def test_every_sample_has_its_place_in_the_readme(samples):
    assert set(readme(samples)) == set(samples.SAMPLES)
    for name, text in readme(samples).items():
        assert text.startswith(f"$ {samples.SAMPLES[name][0]}\n"), name


def test_only_what_varies_is_normalised(samples):
    """Times, timings, thread counts, the temp folder and digests vary; a figure or a word that changes is drift."""
    first = ("bundle     digits-rpi4 (edgepack 0.1.0, 2026-12-07T05:35:47+00:00)\n"
             "float      /tmp/edgepack-readme-8u3fbvbx/digits.onnx (sha256 matches the bundle's source)\n"
             "source     digits.onnx sha256 1243f5a4066bacaf...\n"
             "runtime    ai_edge_litert 2.3.0, 2 threads (the target's default 4, capped at the 2 cores here)\n"
             "latency    min 0.006 ms  median 0.007 ms  p90 0.007 ms  max 0.009 ms\n"
             "throughput 153162.8 inferences/s\n"
             "peak RSS   53.0 MB\n"
             "      int8, min/max   cos 1.0000; 44 KB, 0.01 ms on this host (1.00x int8), 0.6 s: holds the bar\n"
             "           * int8, min/max int8        1.0000   top-1 100.0%         0       44    0.005        -     1  "
             "holds the bar")
    second = ("bundle     digits-rpi4 (edgepack 0.1.0, 2027-01-02T10:00:00+00:00)\n"
              "float      /var/tmp/pytest-3/test_x0/edgepack-readme-q1w2e3/digits.onnx (sha256 matches the bundle's "
              "source)\n"
              "source     digits.onnx sha256 9f86d081884c7d65...\n"
              "runtime    ai_edge_litert 2.3.0, 4 threads\n"
              "latency    min 0.019 ms  median 0.021 ms  p90 0.022 ms  max 0.067 ms\n"
              "throughput 47898.5 inferences/s\n"
              "peak RSS   59.6 MB\n"
              "      int8, min/max   cos 1.0000; 44 KB, 0.11 ms on this host (1.25x int8), 12 s: holds the bar\n"
              "           * int8, min/max int8        1.0000   top-1 100.0%         0       44    0.105        -     1  "
              "holds the bar")
    assert samples.normalise(first) == samples.normalise(second)
    assert not samples.drift({"info": first}, {"info": second})
    for changed in (first.replace("cos 1.0000", "cos 0.9990"), first.replace("44 KB", "45 KB"),
                    first.replace("top-1 100.0%", "top-1 99.0%"), first.replace("digits-rpi4 (", "digits-rpi5 (")):
        assert samples.drift({"info": first}, {"info": changed})


@pytest.mark.slow
def test_the_build_sample_is_what_the_build_prints(samples, digits, work):
    fresh = samples.run_samples(digits, work, ["build"])
    assert_current(samples, fresh)


@pytest.mark.slow
def test_the_run_and_serve_samples_are_what_edge_run_prints(samples, digits, digits_bundle, work):
    """edge-run info, run, bench and serve (with curl, and the request file the sample writes), edgepack evaluate."""
    names = [name for name in samples.SAMPLES if name != "build"]
    fresh = samples.run_samples(digits, work, names, bundle=digits_bundle)
    assert (work / "request.json").is_file()  # the serve sample writes the file it posts
    assert_current(samples, fresh)


def assert_current(samples, fresh: dict) -> None:
    found = samples.drift(readme(samples), fresh)
    assert not found, f"{FIX}\n{found}"
