"""No hang, no lost run, under mpiexec -n 2 at tiny sizes: collectives entered on rank 0's
decision, a full disk at a checkpoint, a stalled rank, a kill between the checkpoint and its
pointer. Faults come from TRAIN_FAULTS (common/faults.py)."""
import json
import os

from conftest import REPO, read_metrics, run_ranks, write_config
from edsr.make_data import write_dataset

EDSR = REPO / "edsr" / "train.py"


def edsr_config(tmp_path, root, epochs=1, stages=None, **train):
    return write_config(tmp_path / "c.yaml", {
        "output_dir": str(tmp_path / "out"), "seed": 1,
        "data": {"root": str(root), "num_rows": 16, "num_cols": 16, "crops_per_image": 2,
                 "crop": 8, "eval_batch": 2, "preview_images": 0},
        "model": {"layers": 1, "filters": 4},
        "train": {"local_batch": 2, "epochs": epochs, **train}, "log": {"progress": False},
        **({"stages": stages} if stages else {})})


def edsr_data(tmp_path):
    root = tmp_path / "data"
    if root.exists():
        return root
    write_dataset(str(root), 16, 16, train=4, val=2, test=2, seed=3)
    return root


def test_list_written_while_a_rank_is_late_does_not_split_the_collective(tmp_path):
    """Rank 1 reaches the ids after rank 0 wrote list.txt: deciding by the file's existence,
    it skipped the broadcast rank 0 waited in, and the job hung."""
    root = edsr_data(tmp_path)
    (root / "train" / "list.txt").unlink()
    result = run_ranks(2, [EDSR, "--config", edsr_config(tmp_path, root)], timeout=120,
                       env={"TRAIN_FAULTS": "edsr.list_ids:sleep=4,rank=1,at=1"})
    assert result.returncode == 0, result.stdout[-3000:]
    assert (root / "train" / "list.txt").read_text().split() == ["1", "2", "3", "4"]
    assert len(read_metrics(tmp_path / "out")) == 1
    assert not (tmp_path / "out" / "run.lock").exists()  # released at exit
