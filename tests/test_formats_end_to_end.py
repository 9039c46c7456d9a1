"""train.py on each on-disk format: the readers wired through the Trainer, one rank each."""
import numpy as np
import pytest

from conftest import REPO, read_metrics, run_ranks, write_config
from cosmoflow.make_data import write_hdf5, write_raw

WRITERS = {
    "hdf5": lambda root: write_hdf5(root, size=8, train=12, val=4, seed=6, samples_per_file=5),
    "raw": lambda root: write_raw(root, size=16, train=2, val=1, seed=6),  # 8 sub-volumes each
}


@pytest.mark.parametrize("fmt, train_samples", [("hdf5", 12), ("raw", 16)])
def test_format_trains_through_train_py(tmp_path, fmt, train_samples):
    WRITERS[fmt](str(tmp_path / "d"))
    cfg = write_config(tmp_path / "c.yaml", {
        "output_dir": str(tmp_path / "out"),
        "model": {"name": "seed7", "head": "flatten", "width_scale": 0.0625},
        "data": {"format": fmt, "root": str(tmp_path / "d"), "resolution": 8},
        "train": {"epochs": 2, "local_batch": 4}, "log": {"metrics_format": "jsonl"}})
    result = run_ranks(1, [REPO / "cosmoflow" / "train.py", "--config", cfg], 120)
    assert result.returncode == 0, result.stdout[-3000:]
    assert f"{train_samples} train / " in result.stdout
    records = read_metrics(tmp_path / "out")
    assert [r["epoch"] for r in records] == [0, 1]
    assert all(np.isfinite(r["val_mae"]) and r["val_mae"] > 0 for r in records)
