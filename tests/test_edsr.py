"""EDSR pieces on tiny images: the model, metrics against hand values, the PNG reader with its
errors, aligned reproducible crops, and the seed's command-line flags."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import REPO
from common.config import COMMON_DEFAULTS, load_config, merge_defaults
from common.distributed import World
from common.lr import batch_sizes
from common.multires import plan_stages
from edsr import data
from edsr.make_data import write_dataset
from edsr.metrics import make_metrics, psnr
from edsr.model import build_model, clip_pixels
from edsr.seed_flags import translate
from edsr.train import DEFAULTS

TINY = {"layers": 2, "filters": 8, "res_scale": 0.1}
ROWS, COLS = 20, 36


def data_cfg(root, **overrides):
    cfg = dict(root=str(root), num_rows=ROWS, num_cols=COLS, depth=1, crop=8, crops_per_image=3,
               eval_batch=2, max_train=None, max_val=None, preview_images=2)
    return {**cfg, **overrides}


@pytest.fixture()
def root(tmp_path):
    write_dataset(str(tmp_path), ROWS, COLS, train=5, val=3, test=2, seed=2)
    return tmp_path


def test_model_keeps_the_shape_at_any_size_and_starts_as_the_identity():
    model = build_model(TINY)
    for shape in ((2, 16, 24, 1), (1, 31, 17, 1)):
        x = tf.random.uniform(shape, 0, 255)
        np.testing.assert_allclose(model(x).numpy(), x.numpy(), atol=1e-3)
    model.get_layer("output").set_weights([w + 0.01 for w in model.get_layer("output").get_weights()])
    assert model(tf.zeros((1, 9, 9, 1))).shape == (1, 9, 9, 1)
    assert build_model(TINY, depth=3)(tf.zeros((1, 8, 8, 3))).shape == (1, 8, 8, 3)
    assert clip_pixels(tf.constant([-4.0, 12.0, 300.0])).numpy().tolist() == [0.0, 12.0, 255.0]


def test_psnr_and_l1_against_hand_values_with_the_input_as_baseline():
    hr = np.full((1, 2, 2, 1), 100.0, np.float32)
    lr = hr + np.array([10, -10, 10, -10], np.float32).reshape(1, 2, 2, 1)  # MSE 100
    pred = hr + 5.0                                                          # MSE 25
    y = tf.constant(np.concatenate([hr, lr], -1))
    loss, metrics = make_metrics(1)
    assert float(loss(y, tf.constant(pred))[0]) == pytest.approx(5.0)
    assert float(metrics["psnr_jpeg"](y, pred)[0]) == pytest.approx(10 * np.log10(255 ** 2 / 100))
    assert float(metrics["psnr"](y, pred)[0]) == pytest.approx(10 * np.log10(255 ** 2 / 25))
    assert float(metrics["psnr_gain"](y, pred)[0]) == pytest.approx(10 * np.log10(4))
    over = tf.constant(np.full((1, 2, 2, 1), 300.0, np.float32))  # clipped to 255 first
    white = tf.constant(np.concatenate([np.full_like(hr, 255.0), lr], -1))
    perfect = 10 * np.log10(255 ** 2 / 1e-10)  # identical images: MSE floored at 1e-10
    assert float(metrics["psnr"](white, over)[0]) == pytest.approx(perfect, rel=1e-5)
    assert float(psnr(tf.constant(hr), tf.constant(hr))[0]) == pytest.approx(perfect, rel=1e-5)


def test_missing_list_txt_is_written_from_the_hr_folder_in_natural_order(root):
    (root / "train" / "list.txt").unlink()
    for i in (10, 9):
        for sub in ("HR", "LR"):
            (root / "train" / sub / f"{i}.png").write_bytes((root / "train" / sub / "1.png")
                                                            .read_bytes())
    ids = data.split_ids(str(root), "train", World())
    assert ids == ["1", "2", "3", "4", "5", "9", "10"]
    assert (root / "train" / "list.txt").read_text().split() == ids
    assert data.split_ids(str(root), "val") == ["6", "7", "8"]  # val: no list, the HR folder


def test_crops_are_aligned_and_reproducible_per_seed_and_epoch(tmp_path):
    for split in ("train", "val"):
        for sub in ("HR", "LR"):
            (tmp_path / split / sub).mkdir(parents=True)
        rows, cols = np.mgrid[:ROWS, :COLS]
        for i in (1, 2):
            hr = ((rows * 7 + cols * 3 + 50 * i) % 200).astype(np.uint8)
            Image.fromarray(hr).save(tmp_path / split / "HR" / f"{i}.png")
            Image.fromarray(hr + 40).save(tmp_path / split / "LR" / f"{i}.png")

    def crops(epoch, seed=4):
        train, _ = data.make_datasets(data_cfg(tmp_path), 2, World(), seed)
        return np.concatenate([x.numpy() for x, _, _ in train.epoch(epoch)]), \
            np.concatenate([y.numpy() for _, y, _ in train.epoch(epoch)])
    x, y = crops(0)
    assert x.shape == (6, 8, 8, 1) and y.shape == (6, 8, 8, 2)
    np.testing.assert_array_equal(y[..., 1:], x)        # the label carries the same LR window
    np.testing.assert_array_equal(y[..., :1] + 40, x)   # and the HR window at the same place
    np.testing.assert_array_equal(crops(0)[0], x)
    assert not np.array_equal(crops(1)[0], x) and not np.array_equal(crops(0, seed=5)[0], x)


@pytest.mark.parametrize("damage, overrides, message", [
    ("size", {}, "LR/2.png: 36x19 pixels, but its HR image"),
    ("missing_lr", {}, "LR/3.png: missing; it is the LR image of"),
    ("corrupt", {}, "HR/4.png: cannot decode as PNG"),
    ("empty", {}, "train/HR: no .png images"),
    (None, {"crop": 21}, "data.crop 21 is larger than the 36x20 images"),
    (None, {"depth": 3}, "HR/1.png: image mode L (1 channel(s)) does not match data.depth 3"),
    (None, {"num_cols": 40}, "HR/1.png: 36x20 pixels, expected data.num_cols x data.num_rows"),
])
def test_bad_input_names_the_file_or_key(root, damage, overrides, message):
    train = root / "train"
    if damage == "size":
        Image.new("L", (COLS, ROWS - 1)).save(train / "LR" / "2.png")
    elif damage == "missing_lr":
        (train / "LR" / "3.png").unlink()
    elif damage == "corrupt":
        (train / "HR" / "4.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    elif damage == "empty":
        for path in list((train / "HR").iterdir()) + [train / "list.txt"]:
            path.unlink()
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        data.make_datasets(data_cfg(root, **overrides), 2, World(), 0)
    assert message in str(err.value)


SCHEMA = merge_defaults(COMMON_DEFAULTS, DEFAULTS)


@pytest.mark.parametrize("argv, test", [([], False), (["--test"], True), (["--test", "1"], True),
                                        (["--test", "False"], False)])
def test_the_seeds_flags_keep_their_meanings(argv, test):
    cfg = load_config(SCHEMA, translate([
        "--dataset", "/data/climate", "--batchsize", "32", "--cropsize", "48", "--layers", "8",
        "--filters", "64", "--num_rows", "100", "--num_cols", "200", "--imgdepth", "3",
        "--epochs", "7", *argv]))
    (stage,) = plan_stages(cfg)
    assert cfg["test"] is test and cfg["data"]["root"] == "/data/climate"
    assert batch_sizes(stage.train["scaling"], stage.train["local_batch"],
                       stage.train["global_batch"], 2) == (16, 32)
    assert (stage.data["crop"], stage.data["num_rows"], stage.data["num_cols"],
            stage.data["depth"]) == (48, 100, 200, 3)
    assert (stage.model["layers"], stage.model["filters"], stage.epochs) == (8, 64, 7)
    assert cfg["output_dir"] == "runs/edsr-seed"  # the seed's defaults without --config


def test_help_lists_the_seeds_flags_with_their_meanings_and_config_as_optional():
    result = subprocess.run([sys.executable, str(REPO / "edsr" / "train.py"), "--help"],
                            cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-2000:]
    text = " ".join(result.stdout.split())  # argparse wraps lines
    usage, options = text.split(" options: ")
    assert "[--config CONFIG]" in usage and "--config CONFIG scenario YAML file (default: " \
        "edsr/configs/seed.yaml)" in options
    for flag, meaning in (("--dataset DIR", "data folder"), ("--num_rows N", "image height"),
                          ("--num_cols N", "image width"), ("--imgdepth N", "channels: 1 grayscale, 3 RGB"),
                          ("--cropsize N", "edge of the random aligned training crops"), ("--layers N", "residual blocks"),
                          ("--filters N", "filters of every convolution"), ("--batchsize N", "GLOBAL batch, split "
                                                       "across the ranks (strong scaling"),
                          ("--test [BOOL]", "a boolean"), ("--epochs EPOCHS", "epochs"),
                          ("--resume", "continue from the latest checkpoint"),
                          ("--set KEY=VALUE", "override any config key")):
        assert f"{flag} {meaning}" in options, flag
