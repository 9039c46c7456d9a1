"""DeepCAM pieces on tiny shapes: the model at two resolutions, class weights, loss and IoU
against hand values, the HDF5 reader (float and int labels), the stats tool, the coarsener and
the raw fast path."""
import subprocess
import sys

import h5py
import numpy as np
import pytest
import tensorflow as tf

from common.hdf5 import open_h5
from conftest import REPO, launch_env
from common.multires import transfer_weights
from deepcam import data, stats
from deepcam.coarsen import average_pool, coarsen_dataset, majority_pool
from deepcam.convert import convert
from deepcam.make_data import write_dataset
from deepcam.metrics import class_weights, iou, make_loss
from deepcam.model import Subsample, build_model

TINY = {"width": 0.0625, "middle_blocks": 1, "aspp_rates": [1, 2, 3]}
ROWS, COLS = 32, 48


def data_cfg(root, **overrides):
    cfg = dict(format="hdf5", root=str(root), shape=[ROWS, COLS], num_channels=16, channels=None,
               max_train=None, max_val=None, preview_samples=1)
    return {**cfg, **overrides}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("deepcam")
    write_dataset(str(path), ROWS, COLS, train=4, val=3, seed=1)
    return path


def test_same_weights_run_at_two_resolutions_and_all_carry_over():
    coarse, full = build_model(TINY), build_model(TINY)
    report = transfer_weights(coarse, full)
    assert report.reinitialised == [] and len(report.carried) > 40
    for shape in ((1, 16, 24, 16), (2, 32, 48, 16)):
        x = tf.random.normal(shape)
        assert full(x).shape == shape[:3] + (3,)
        np.testing.assert_allclose(coarse(x).numpy(), full(x).numpy(), atol=1e-5)
    assert build_model(TINY, channels=4)(tf.zeros((1, 32, 32, 4))).shape == (1, 32, 32, 3)


def test_subsampled_pointwise_shortcut_equals_a_strided_one_and_trains_at_demo_size():
    x = tf.random.normal((2, 7, 10, 8))
    strided = tf.keras.layers.Conv2D(4, 1, strides=2, use_bias=False)
    expected = strided(x)
    np.testing.assert_allclose(expected.numpy(), tf.nn.conv2d(
        Subsample(2)(x), strided.kernel, 1, "VALID").numpy(), rtol=1e-6, atol=1e-6)
    # The demo's network on its 96x144 fields: a strided 1x1 convolution there (8 input
    # channels) crashed the process in its filter gradient. A crash must not take pytest along.
    script = ("import tensorflow as tf\nfrom deepcam.model import build_model\n"
              "m = build_model({'width': 0.125, 'middle_blocks': 1, 'aspp_rates': [2, 4, 6]})\n"
              "with tf.GradientTape() as t:\n"
              "    loss = tf.reduce_sum(m(tf.random.normal([2, 96, 144, 16]), training=True))\n"
              "grads = t.gradient(loss, m.trainable_variables)\n"
              "print('finite', all(bool(tf.reduce_all(tf.math.is_finite(g))) for g in grads))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=REPO, env=launch_env(), timeout=300)
    assert result.returncode == 0 and "finite True" in result.stdout, result.stderr[-2000:]


def test_class_weights_and_weighted_loss_against_hand_values():
    np.testing.assert_allclose(class_weights(0.125),
                               [0.98627 ** -0.125, 0.00045787 ** -0.125, 0.013274 ** -0.125])
    labels = tf.constant([[[0, 1], [2, 0]]])
    logits = tf.constant([[[[2.0, 0, 0], [0, 1.0, 0]], [[0, 0, 3.0], [0, 1.0, 0]]]])
    p = tf.nn.softmax(logits).numpy()[0]
    ce = -np.log([p[0, 0, 0], p[0, 1, 1], p[1, 0, 2], p[1, 1, 0]])
    w = class_weights(0.5)[[0, 1, 2, 0]]
    loss = make_loss(0.5)(labels, logits)
    assert float(loss[0]) == pytest.approx(float((w * ce).sum() / w.sum()), rel=1e-5)
    assert float(make_loss(0.0)(labels, logits)[0]) == pytest.approx(ce.mean(), rel=1e-5)


def test_iou_per_sample_with_absent_classes_counting_one():
    labels = tf.constant([[[0, 0], [1, 1]], [[0, 0], [0, 0]]])
    pred = np.array([[[0, 1], [1, 1]], [[0, 0], [0, 0]]])
    logits = tf.one_hot(pred, 3) * 5.0
    # sample 1: background 1/2, cyclone 2/3, river absent from both -> 1; sample 2: 1, 1, 1
    np.testing.assert_allclose(iou(labels, logits).numpy(), [(0.5 + 2 / 3 + 1) / 3, 1.0])


def test_coarse_logits_are_upsampled_to_full_resolution_labels():
    labels = tf.zeros((1, 4, 6), tf.int32)
    logits = tf.one_hot(tf.zeros((1, 2, 3), tf.int32), 3) * 5.0
    assert float(iou(labels, logits)[0]) == pytest.approx(1.0)
    assert make_loss(0.125)(labels, logits).shape == (1,)


@pytest.mark.parametrize("int_labels", [False, True])
def test_reader_normalises_selects_channels_and_reads_float_or_int_labels(tmp_path, int_labels):
    write_dataset(str(tmp_path), ROWS, COLS, train=2, val=3, seed=2, int_labels=int_labels)
    train, val = data.make_datasets(data_cfg(tmp_path, channels=[0, 7]), 2,
                                    type("W", (), {"rank": 0, "size": 1})(), 0)
    assert (train.num_samples, val.num_samples) == (2, 3)
    x, y, w = next(iter(val.epoch(0)))
    with open_h5(tmp_path / "validation" / "data-00000.h5") as f:  # the reader holds it open
        raw, labels = f["climate/data"][()], f["climate/labels_0"][()]
    with open_h5(tmp_path / "stats.h5") as f:
        low, high = f["climate/minval"][()], f["climate/maxval"][()]
    expected = (raw[..., [0, 7]] - low[[0, 7]]) / (high - low)[[0, 7]]
    np.testing.assert_allclose(x[0].numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(y[0].numpy(), labels.astype(np.int32))
    assert y.dtype == tf.int32 and w.numpy().tolist() == [1.0, 1.0]


def test_stats_tool_equals_numpy_and_splits_over_ranks(root):
    pixels = np.concatenate([h5py.File(p)["climate/data"][()].reshape(-1, 16) for p in
                             sorted((root / "train").glob("data-*.h5"))]).astype(np.float64)
    parts = [stats.partial_stats(sorted(map(str, (root / "train").glob("data-*.h5")))[r::3])
             for r in range(3)]
    combined = stats.combine(parts)
    np.testing.assert_allclose(combined["mean"], pixels.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(combined["sqmean"], (pixels ** 2).mean(axis=0), rtol=1e-10)
    np.testing.assert_array_equal(combined["minval"], pixels.min(axis=0))
    np.testing.assert_array_equal(combined["maxval"], pixels.max(axis=0))
    assert combined["count"][0] == len(pixels)
    with h5py.File(root / "stats.h5") as f:
        np.testing.assert_allclose(f["climate/mean"][()], pixels.mean(axis=0), rtol=1e-10)


def test_majority_pooling_against_hand_values_with_ties_to_the_rarer_class():
    labels = np.array([[0, 0, 1, 2, 2, 0],
                       [0, 1, 1, 0, 2, 1],
                       [2, 2, 0, 0, 1, 0],
                       [2, 0, 0, 0, 1, 0]], np.uint8)
    # blocks: {0,0,0,1}->0  {1,2,1,0}->1  {2,0,2,1}->2 | {2,2,2,0}->2  {0,0,0,0}->0  {1,0,1,0}->1
    np.testing.assert_array_equal(majority_pool(labels), [[0, 1, 2], [2, 0, 1]])
    data_in = np.arange(2 * 4 * 1, dtype=np.float32).reshape(2, 4, 1)
    np.testing.assert_allclose(average_pool(data_in)[..., 0], [[2.5, 4.5]])


def test_coarsener_and_fast_path_read_the_same_tensors_as_hdf5(root, tmp_path):
    coarsen_dataset(str(root), str(tmp_path / "coarse"), labels="full")
    with h5py.File(tmp_path / "coarse" / "train" / "data-00000.h5") as f:
        assert f["climate/data"].shape == (ROWS // 2, COLS // 2, 16)
        assert f["climate/labels_0"].shape == (ROWS, COLS)
    convert(str(root), str(tmp_path / "raw"))
    world = type("W", (), {"rank": 0, "size": 1})()
    h5 = data.make_datasets(data_cfg(root), 2, world, 5)
    raw = data.make_datasets(data_cfg(tmp_path / "raw", format="raw"), 2, world, 5)
    for a, b in zip(h5, raw):
        for (xa, ya, wa), (xb, yb, wb) in zip(a.epoch(1), b.epoch(1)):
            np.testing.assert_array_equal(xa.numpy(), xb.numpy())
            np.testing.assert_array_equal(ya.numpy(), yb.numpy())


@pytest.mark.parametrize("damage, overrides, message", [
    ("stats", {}, "stats.h5: not in"),
    ("labels", {}, "climate/labels_0 has shape (31, 48), which matches neither"),
    ("channels", {}, "climate/data has shape (32, 48, 15), expected (32, 48, 16)"),
    (None, {"channels": [0, 16]}, "'data.channels': index 16 is out of range"),
])
def test_bad_input_names_the_file_or_key(tmp_path, damage, overrides, message):
    write_dataset(str(tmp_path), ROWS, COLS, train=2, val=2, seed=3)
    victim = tmp_path / "train" / "data-00001.h5"
    if damage == "stats":
        (tmp_path / "stats.h5").unlink()
    elif damage in ("labels", "channels"):
        with h5py.File(victim, "a") as f:
            if damage == "labels":
                del f["climate/labels_0"]
                f["climate/labels_0"] = np.zeros((ROWS - 1, COLS), np.float32)
            else:
                del f["climate/data"]
                f["climate/data"] = np.zeros((ROWS, COLS, 15), np.float32)
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        data.make_datasets(data_cfg(tmp_path, **overrides), 2,
                           type("W", (), {"rank": 0, "size": 1})(), 0)
    assert message in str(err.value)
    if damage in ("labels", "channels"):
        assert str(victim) in str(err.value)
