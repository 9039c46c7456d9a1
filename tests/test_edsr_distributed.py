"""EDSR under mpiexec -n 2: list.txt written once, identical weights, beating the JPEG input,
--test on the trained checkpoint, and bad input stopping both ranks."""
import json

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, read_metrics, run_ranks, write_config
from edsr.make_data import write_dataset

TRAIN = REPO / "edsr" / "train.py"
DRIVER = REPO / "tests" / "mpi_driver.py"
ROWS, COLS = 24, 48


def config(tmp_path, root, **data):
    return write_config(tmp_path / "c.yaml", {
        "output_dir": str(tmp_path / "out"), "seed": 1,
        "data": {"root": str(root), "num_rows": ROWS, "num_cols": COLS, "crops_per_image": 8,
                 "eval_batch": 2, "preview_images": 2, **data},
        "model": {"layers": 2, "filters": 16},
        "train": {"local_batch": 8, "optimizer": "adam",
                  "lr": {"base": 0.001, "base_batch": 16, "decay": "cosine"}},
        "log": {"progress": False, "tensorboard": True},
        "stages": [{"name": "small", "data": {"crop": 8}, "train": {"epochs": 2}},
                   {"name": "large", "data": {"crop": 16}, "train": {"epochs": 3}}]})


def jpeg_psnr(root, split):
    values = []
    for hr_path in sorted((root / split / "HR").glob("*.png")):
        hr = np.asarray(Image.open(hr_path), np.float64)
        lr = np.asarray(Image.open(root / split / "LR" / hr_path.name), np.float64)
        values.append(10 * np.log10(255 ** 2 / np.mean((hr - lr) ** 2)))
    return float(np.mean(values))


def check_tensorboard(out, records):
    """Rank 0 alone wrote one event file holding every record's numbers at the epoch's step in
    the plan, and the PNG strips of both stages."""
    import tensorflow as tf

    files = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1, files
    scalars, images = {}, set()
    for event in tf.compat.v1.train.summary_iterator(str(files[0])):
        for value in event.summary.value:
            if value.tag.startswith("images/"):
                images.add((value.tag, event.step))
            else:
                scalars[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
    plan_step = {(0, 0): 0, (0, 1): 1, (1, 0): 2, (1, 1): 3, (1, 2): 4}
    for record in records:
        step = plan_step[(record["stage"], record["epoch"])]
        for tag in ("train_loss", "val_loss", "val_psnr", "val_psnr_jpeg", "val_ssim", "lr",
                    "samples_per_s"):
            assert scalars[(tag, step)] == pytest.approx(record[tag], rel=1e-5), tag
    assert images == {("images/small", 0), ("images/small", 1), ("images/large", 2),
                      ("images/large", 3), ("images/large", 4)}


def test_two_ranks_agree_beat_the_jpeg_input_and_test_the_checkpoint(tmp_path):
    root = tmp_path / "data"
    write_dataset(str(root), ROWS, COLS, train=16, val=5, test=3, quality=10, seed=3)
    (root / "train" / "list.txt").unlink()  # both ranks need it: rank 0 writes, rank 1 waits
    cfg = config(tmp_path, root)
    result = run_ranks(2, [DRIVER, "edsr", tmp_path, "--config", cfg])
    assert result.returncode == 0, result.stdout[-3000:]
    assert (root / "train" / "list.txt").read_text().split() == [str(i) for i in range(1, 17)]
    for dump in ["start-stage0", "start-stage1", "end"]:
        a, b = np.load(tmp_path / f"{dump}-rank0.npz"), np.load(tmp_path / f"{dump}-rank1.npz")
        assert len(a.files) > 0 and all(np.array_equal(a[k], b[k]) for k in a.files)
    # Every weight carries over, so the full stage keeps the model, Adam and the one trace.
    assert "continues training the same network" in result.stdout
    assert json.loads((tmp_path / "traces-rank0.json").read_text())["traces"] == 1
    records = read_metrics(tmp_path / "out")
    baseline = jpeg_psnr(root, "val")
    assert records[-1]["val_psnr_jpeg"] == pytest.approx(baseline, abs=1e-3)
    assert records[-1]["val_psnr"] > baseline + 0.1, (records[-1]["val_psnr"], baseline)
    assert (tmp_path / "out" / "images" / "large-epoch0003.png").exists()
    check_tensorboard(tmp_path / "out", records)

    tested = run_ranks(2, [TRAIN, "--config", cfg, "--test"])
    assert tested.returncode == 0, tested.stdout[-3000:]
    scores = json.loads((tmp_path / "out" / "test.json").read_text())
    assert scores["checkpoint"] == "stage1-epoch0002"
    assert scores["test_psnr_jpeg"] == pytest.approx(jpeg_psnr(root, "test"), abs=1e-3)
    assert scores["test_psnr"] > scores["test_psnr_jpeg"] and "test_ssim" in scores
    assert "test split, checkpoint stage1-epoch0002 (3 samples)" in tested.stdout
    assert (tmp_path / "out" / "images" / "test.png").exists()
    assert len(read_metrics(tmp_path / "out")) == 5  # --test trains nothing


@pytest.mark.parametrize("damage, message", [
    ("corrupt", "train/HR/2.png: cannot decode as PNG"),
    ("crop", "data.crop 30 is larger than the 48x24 images"),
])
def test_bad_input_stops_both_ranks_naming_the_file_or_key(tmp_path, damage, message):
    root = tmp_path / "data"
    write_dataset(str(root), ROWS, COLS, train=4, val=2, test=2, seed=3)
    if damage == "corrupt":
        (root / "train" / "HR" / "2.png").write_bytes(b"not a png")
    cfg = config(tmp_path, root, **({"crop": 30} if damage == "crop" else {}))
    args = ["--set", "stages.1.data.crop=30"] if damage == "crop" else []
    result = run_ranks(2, [TRAIN, "--config", cfg, *args], timeout=120)
    assert result.returncode != 0 and message in result.stdout, result.stdout[-3000:]
    assert not (tmp_path / "out" / "metrics.jsonl").exists()
