"""Coarsening sums 2x2x2 voxel blocks: counts and layout survive, overflow is refused."""
import os

import numpy as np
import pytest
import yaml

import cosmoflow.coarsen as coarsen
import cosmoflow.make_data as gen
from cosmoflow.data import make_datasets

D = 16


def read_split(fmt, root, resolution, split_index):
    """All (x, y) of one split as numpy, counts untransformed."""
    cfg = dict(format=fmt, root=str(root), resolution=resolution, compression="auto",
               split_file="split.yaml", prefix="cosmo", count_scale=1.0, log_transform=False,
               max_train=None, max_val=None)
    dataset = make_datasets(cfg, local_batch=1)[split_index]
    batches = list(dataset.epoch(0))
    return (np.concatenate([b[0].numpy() for b in batches]),
            np.concatenate([b[1].numpy() for b in batches]))


def assert_coarsened(fine, coarse):
    (x_fine, y_fine), (x_coarse, y_coarse) = fine, coarse
    assert x_coarse.shape == (len(x_fine), D // 2, D // 2, D // 2, 4)
    np.testing.assert_array_equal(x_coarse.sum(axis=(1, 2, 3)), x_fine.sum(axis=(1, 2, 3)))
    np.testing.assert_array_equal(x_coarse[:, 0, 0, 0], x_fine[:, :2, :2, :2].sum(axis=(1, 2, 3)))
    np.testing.assert_array_equal(y_coarse, y_fine)


@pytest.mark.parametrize("gzip", [False, True])
def test_tfrecord_coarsening_keeps_counts_layout_and_compression(tmp_path, gzip):
    gen.write_tfrecord(tmp_path / "full", D, 3, 2, gzip=gzip)
    done = coarsen.coarsen_tfrecord_dataset(tmp_path / "full", tmp_path / "coarse")
    assert len(done) == 5
    for split_index in (0, 1):
        assert_coarsened(read_split("tfrecord", tmp_path / "full", D, split_index),
                         read_split("tfrecord", tmp_path / "coarse", D // 2, split_index))
    with open(tmp_path / "coarse" / "validation" / "univ_00001.tfrecord", "rb") as f:
        assert (f.read(2) == coarsen.GZIP_MAGIC) == gzip


def test_hdf5_coarsening_keeps_counts_and_copies_the_split_file(tmp_path):
    gen.write_hdf5(tmp_path / "full", D, 3, 2, 1, samples_per_file=2)
    coarsen.main(["--format", "hdf5", "--src", str(tmp_path / "full"),
                  "--dst", str(tmp_path / "coarse")])
    split = yaml.safe_load((tmp_path / "coarse" / "split.yaml").read_text())
    assert split == {"train": [0, 1], "validation": [2], "test": [3]}
    for split_index in (0, 1):
        assert_coarsened(read_split("hdf5", tmp_path / "full", D, split_index),
                         read_split("hdf5", tmp_path / "coarse", D // 2, split_index))


def test_shards_split_the_files_between_processes(tmp_path):
    gen.write_hdf5(tmp_path / "full", 4, 3, 0, samples_per_file=1)
    shares = [coarsen.coarsen_hdf5_dataset(tmp_path / "full", tmp_path / "coarse", 2, shard, 2)
              for shard in (0, 1)]
    assert sorted(os.path.basename(p) for p in shares[0] + shares[1]) == \
        ["cosmo-rec0.h5", "cosmo-rec1.h5", "cosmo-rec2.h5"]
    assert sorted(os.listdir(tmp_path / "coarse")) == \
        ["cosmo-rec0.h5", "cosmo-rec1.h5", "cosmo-rec2.h5", "split.yaml"]


def test_int16_overflow_is_refused_and_names_the_file(tmp_path):
    (tmp_path / "full" / "train").mkdir(parents=True)
    dense = np.full((4, 4, 4, 4), 5000, np.int16)  # 8 * 5000 > 32767
    gen.write_tfrecord_sample(tmp_path / "full" / "train" / "dense.tfrecord", dense, np.zeros(4))
    with pytest.raises(OverflowError, match=r"dense.tfrecord.*40000.*int16"):
        coarsen.coarsen_tfrecord_dataset(tmp_path / "full", tmp_path / "coarse")
    assert not (tmp_path / "coarse" / "train" / "dense.tfrecord").exists()


def test_odd_cube_edge_is_refused():
    with pytest.raises(ValueError, match="not divisible by factor 2"):
        coarsen.coarsen_cube(np.zeros((5, 5, 5, 4), np.int16))
