"""The scaling mode runs every app at 1 and 2 ranks (tiny sizes here) and prints figures that agree
with each other; the scaling model's parts agree with hand computations."""
import re

import pytest

from conftest import REPO, run_ranks

NUMBER = r"([0-9.]+)"
TINY = {
    "cosmoflow": ["--set", "data.resolution=8", "--set", "model.width_scale=0.125"],
    "deepcam": ["--set", "data.shape=[32,48]", "--set", "model.width=0.125",
                "--set", "model.middle_blocks=0"],
    "edsr": ["--set", "data.crop=8", "--set", "model.layers=2", "--set", "model.filters=8"],
}


def figure(name, unit, text):
    """(median, min, max) of a printed line `name  median unit  [min - max]`."""
    found = re.search(re.escape(name) + rf"\s+{NUMBER} {re.escape(unit)}\s+\[{NUMBER} - {NUMBER}\]",
                      text)
    assert found, f"{name!r} missing from:\n{text[-3000:]}"
    mid, low, high = map(float, found.groups())
    assert 0 < low <= mid <= high, found.group(0)
    return mid


def ratio(name, text):
    """A printed ratio `name  value  [min - max]`."""
    found = re.search(re.escape(name) + rf"\s+{NUMBER}\s+\[{NUMBER} - {NUMBER}\]", text)
    assert found, f"{name!r} missing from:\n{text[-3000:]}"
    value, low, high = map(float, found.groups())
    assert value > 0 and 0 < low <= high, found.group(0)
    return value


@pytest.mark.parametrize("app", sorted(TINY))
def test_scaling_mode_prints_consistent_figures(app):
    result = run_ranks(1, [REPO / "scripts" / "benchmark.py", "--app", app, "--scaling",
                           *TINY[app], "--local-batch", "2", "--steps", "5", "--repeats", "2",
                           "--rounds", "1", "--allreduce-repeats", "2"], timeout=300)
    out = result.stdout
    assert result.returncode == 0, out[-4000:]
    one = figure("1 rank, local batch 2", "samples/s", out)
    two = figure("2 ranks, local batch 2", "samples/s", out)
    two_half = figure("2 ranks, local batch 1", "samples/s", out)
    alone = figure("2 ranks, local batch 2, no allreduce", "samples/s", out)
    weak, machine, allreduce, strong = (ratio(name, out) for name in (
        "weak-scaling efficiency (local batch 2)", "of which the machine (no allreduce)",
        "of which allreduce and waits", "strong-scaling speed-up (global batch 2)"))
    # printed to 2 decimals (throughputs) and 3 (ratios)
    assert weak == pytest.approx(two / (2 * one), rel=0.01, abs=2e-3)
    assert machine == pytest.approx(alone / (2 * one), rel=0.01, abs=2e-3)
    assert allreduce == pytest.approx(two / alone, rel=0.01, abs=2e-3)
    assert weak == pytest.approx(machine * allreduce, rel=0.02, abs=2e-3)
    assert strong == pytest.approx(two_half / one, rel=0.01, abs=2e-3)
    for name in ("measured network", "full-size network"):
        line = re.search(rf"allreduce, {name} \({NUMBER} MB\)\s+{NUMBER} ms\s+\[{NUMBER} - "
                         rf"{NUMBER}\]\s+bus bandwidth {NUMBER} GB/s", out)
        assert line, f"allreduce of the {name} missing from:\n{out[-3000:]}"
        mb, ms, low, high, bus = map(float, line.groups())
        assert 0 < low <= ms <= high and mb > 0
        # at 2 ranks the bus bandwidth is bytes / time (2(p-1)/p = 1); MB is printed to two
        # decimals, so a tiny network's 0.09 MB may stand for 0.094: allow half a last digit
        assert bus == pytest.approx(mb / ms, rel=0.02, abs=0.005 / ms + 1e-3)


def test_ring_allreduce_matches_hand_computation():
    from benchmarks.scaling_model import ring_allreduce_seconds
    # 100 MB over 4 ranks at 25 GB/s and 5 us: 2*3/4 * 100e6 / 25e9 + 2*3 * 5e-6
    assert ring_allreduce_seconds(100e6, 4, 25e9, 5e-6) == pytest.approx(6.0e-3 + 30e-6)
    # 1024 ranks: 2*1023/1024 * 100e6 / 25e9 + 2*1023 * 5e-6
    assert ring_allreduce_seconds(100e6, 1024, 25e9, 5e-6) == pytest.approx(
        7.9921875e-3 + 10.23e-3)
    assert ring_allreduce_seconds(100e6, 1, 25e9, 5e-6) == 0


def test_efficiency_with_and_without_overlap():
    from benchmarks.scaling_model import efficiency
    assert efficiency(30e-3, 10e-3) == pytest.approx(0.75)
    assert efficiency(30e-3, 10e-3, overlappable=20e-3) == 1.0
    assert efficiency(30e-3, 10e-3, overlappable=4e-3) == pytest.approx(30 / 36)


def test_training_flops_match_hand_count():
    import tensorflow as tf
    from benchmarks.scaling_model import training_flops
    inputs = tf.keras.Input((5, 6, 2))
    x = tf.keras.layers.Conv2D(4, 3, padding="same")(inputs)
    outputs = tf.keras.layers.Dense(3)(tf.keras.layers.Flatten()(x))
    forward, backward = training_flops(tf.keras.Model(inputs, outputs), (2, 5, 6, 2))
    conv = 2 * (2 * 5 * 6 * 4) * (3 * 3 * 2)   # outputs x kernel products, 2 FLOPs each
    dense = 2 * (2 * 3) * 120
    assert forward == conv + dense
    # dense: weight and input gradients; conv: weight gradient only (its input is the image)
    assert backward == 2 * dense + conv


def test_model_counts_parameters_and_gradient_of_the_built_network():
    from benchmarks.bench import load_config
    from benchmarks.scaling import load_app
    from benchmarks.scaling_model import parse_args, predict, ring_allreduce_seconds
    sets = ["data.resolution=16", "model.width_scale=0.125"]
    args = parse_args([f"--set={kv}" for kv in sets] + ["--gpus", "4", "64", "--latency-us", "7"])
    r = predict("cosmoflow", args)
    app = load_app("cosmoflow")
    cfg, stage = load_config(app.defaults, app.config, sets)
    model = app.make_task(cfg).build_model(stage)
    assert r["params"] == model.count_params()
    trainable = sum(v.shape.num_elements() for v in model.trainable_weights)
    assert r["gradient_bytes"] == 4 * trainable
    assert r["local_batch"] == 4  # the MLPerf config's
    for row in r["rows"]:
        assert row["allreduce_s"] == pytest.approx(
            ring_allreduce_seconds(4 * trainable, row["gpus"], 25e9, 7e-6))
        assert row["efficiency"] == pytest.approx(
            r["compute_s"] / (r["compute_s"] + row["allreduce_s"]))
        assert row["efficiency"] <= row["efficiency_overlap"] <= 1
        # K micro-batches of the local batch: K x compute per allreduce, at least 0.9
        k = row["accumulate_for_90"]
        assert k * r["compute_s"] / (k * r["compute_s"] + row["allreduce_s"]) >= 0.9
        assert k == 1 or (k - 1) * r["compute_s"] / (
            (k - 1) * r["compute_s"] + row["allreduce_s"]) < 0.9


def test_strong_scaling_config_puts_its_global_batch_on_one_gpu():
    from benchmarks.scaling_model import full_size_local_batch
    assert full_size_local_batch({"scaling": "strong", "global_batch": 16,
                                  "local_batch": 8}) == 16
    assert full_size_local_batch({"scaling": "weak", "global_batch": None,
                                  "local_batch": 4}) == 4
