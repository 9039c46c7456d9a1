"""The README's benchmark command runs for every app (at tiny sizes here) and prints every figure
it promises as a positive number; timings themselves are the benchmark's business, not a test's."""
import re

import pytest

from conftest import REPO, run_ranks

FIGURE = r"\s+([0-9.]+) {unit}"
TINY = {
    "cosmoflow": (["--set", "data.resolution=8", "--set", "model.width_scale=0.125",
                   "--local-batch", "2", "--steps", "1", "--repeats", "2", "--epochs", "2"],
                  {"input pipeline only": "samples/s", "train, in-memory batch": "samples/s",
                   "train, real files": "samples/s", "keras model.fit, in-memory": "samples/s",
                   "pipeline / training from files": "x", "trainer / keras fit": "x",
                   # whole runs against the MLPerf reference (stock Keras layers, model.fit)
                   "trainer, epochs 2-2": "samples/s", "keras fit reference, epochs 2-2":
                   "samples/s", "trainer, whole run": "s", "keras fit reference, whole run": "s",
                   "trainer / keras fit reference, epochs": "x",
                   "trainer / keras fit reference, whole run": "x",
                   "trainer epoch spread (max / min)": "x"}),
    "deepcam": (["--shape", "32", "48", "--samples", "2", "--nets", "thin", "--steps", "1",
                 "--pipeline-steps", "2", "--repeats", "2"],
                {"pipeline, hdf5": "samples/s", "pipeline, raw": "samples/s",
                 "page-cache read, hdf5 files": "samples/s",
                 "page-cache read, raw files": "samples/s",
                 "train thin, in-memory batch": "samples/s", "train thin, hdf5 files": "samples/s",
                 "train thin, raw files": "samples/s",
                 "raw pipeline / page-cache read of its files": ""}),
    "edsr": (["--shape", "24", "40", "--images", "4", "--crop", "8", "--local-batch", "4",
              "--eval-batch", "2", "--nets", "thin", "--steps", "1", "--pipeline-steps", "2",
              "--repeats", "2"],
             {"crop pipeline only": "samples/s", "train thin, in-memory batch": "samples/s",
              "train thin, crop pipeline": "samples/s", "evaluate thin, full images": "images/s",
              "crop pipeline / training thin": "x"}),
}


@pytest.mark.parametrize("app", sorted(TINY))
def test_benchmark_prints_every_figure(app, tmp_path):
    args, figures = TINY[app]
    result = run_ranks(1, [REPO / "scripts" / "benchmark.py", "--app", app, *args],
                       timeout=300, env={"TMPDIR": str(tmp_path)})
    assert result.returncode == 0, result.stdout[-4000:]
    for name, unit in figures.items():
        found = re.search(re.escape(name) + FIGURE.format(unit=re.escape(unit)).rstrip(" "),
                          result.stdout)
        assert found, f"{name!r} missing from:\n{result.stdout[-3000:]}"
        assert float(found.group(1)) > 0
    assert not list(tmp_path.iterdir()), "the benchmark left its synthetic data behind"
    if app == "deepcam":  # MB/s: samples/s times the bytes of one sample's files
        raw_mb = (32 * 48 * 16 * 4 + 32 * 48) / 1e6
        line = re.search(r"pipeline, raw\s+([0-9.]+) samples/s.*?([0-9.]+) MB/s", result.stdout)
        assert float(line.group(2)) == pytest.approx(float(line.group(1)) * raw_mb, rel=0.02,
                                                     abs=0.06)

