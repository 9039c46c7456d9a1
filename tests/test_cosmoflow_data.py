"""CosmoFlow readers on tiny synthetic data in all three real formats: exact round trips, rank
sharding, up-front and run-time errors that name the file, and learnable targets."""
import hashlib
import os
import re

import h5py
import numpy as np
import pytest
import tensorflow as tf
import yaml

import cosmoflow.make_data as gen
from common.distributed import World
from cosmoflow.data import make_datasets, sample_shape

D = 16
N_TRAIN, N_VAL = 4, 5  # odd validation count: 2 ranks get uneven shards and need padding


def data_cfg(fmt, root, **overrides):
    cfg = dict(format=fmt, root=str(root), resolution=D, compression="auto",
               split_file="split.yaml", prefix="cosmo", count_scale=1.0, log_transform=True,
               max_train=None, max_val=None)
    return {**cfg, **overrides}


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """One tiny dataset per format; tests that damage data copy or rebuild their own."""
    base = tmp_path_factory.mktemp("cosmo")
    gen.write_tfrecord(base / "tfrecord", D, N_TRAIN, N_VAL, seed=1)
    gen.write_tfrecord(base / "gzip", D, N_TRAIN, N_VAL, seed=1, gzip=True)
    gen.write_hdf5(base / "hdf5", D, N_TRAIN, N_VAL, 2, seed=1, samples_per_file=2)
    gen.write_raw(base / "raw", 2 * D, 1, 1, seed=1)  # 8 sub-volumes per universe
    return {name: base / name for name in ("tfrecord", "gzip", "hdf5", "raw")}


def read_all(dataset, epoch=0):
    """Concatenated (x, y, weight) numpy arrays of one epoch."""
    batches = list(dataset.epoch(epoch))
    return tuple(np.concatenate([b[i].numpy() for b in batches]) for i in range(3))


def expected_samples(split, n, size=D, seed=1):
    return list(gen.draw_samples(n, size, seed, split))


def fingerprint(x):
    return hashlib.sha1(x.tobytes()).hexdigest()


@pytest.mark.parametrize("fmt,root_name", [("tfrecord", "tfrecord"), ("tfrecord", "gzip"),
                                           ("hdf5", "hdf5")])
def test_cube_formats_round_trip(roots, fmt, root_name):
    train, val = make_datasets(data_cfg(fmt, roots[root_name]), local_batch=2)
    assert (train.num_samples, val.num_samples) == (N_TRAIN, N_VAL)
    x, y, w = read_all(val)
    for i, (counts, unit_par) in enumerate(expected_samples("validation", N_VAL)):
        np.testing.assert_allclose(x[i], np.log1p(counts.astype(np.float32)), rtol=1e-6)
        np.testing.assert_array_equal(y[i], unit_par)
    assert w.tolist() == [1.0] * N_VAL
    x_train, _, _ = read_all(train)
    assert x_train.shape == (N_TRAIN,) + sample_shape(data_cfg(fmt, roots[root_name]))


def test_plain_and_gzip_tfrecords_read_the_same(roots):
    plain = read_all(make_datasets(data_cfg("tfrecord", roots["tfrecord"]), 2)[1])
    for compression in ("auto", "gzip"):
        cfg = data_cfg("tfrecord", roots["gzip"], compression=compression)
        gzipped = read_all(make_datasets(cfg, 2)[1])
        for a, b in zip(plain, gzipped):
            np.testing.assert_array_equal(a, b)


def test_raw_universes_are_cut_into_sub_volumes(roots):
    _, val = make_datasets(data_cfg("raw", roots["raw"], log_transform=False), local_batch=4)
    x, y, _ = read_all(val)
    counts, unit_par = expected_samples("validation", 1, size=2 * D)[0]
    corners = [(i, j, k) for i in (0, D) for j in (0, D) for k in (0, D)]
    assert len(x) == len(corners)
    for cube, (i, j, k) in zip(x, corners):
        np.testing.assert_array_equal(cube, counts[i:i + D, j:j + D, k:k + D])
    np.testing.assert_array_equal(y, np.tile(unit_par, (len(corners), 1)))


@pytest.mark.parametrize("fmt", ["tfrecord", "hdf5", "raw"])
def test_two_ranks_see_every_validation_sample_once(roots, fmt):
    cfg = data_cfg(fmt, roots[fmt])
    everything = read_all(make_datasets(cfg, local_batch=2)[1])[0]
    seen, batch_counts = [], []
    for rank in (0, 1):
        val = make_datasets(cfg, local_batch=2, world=World(rank, 2))[1]
        batch_counts.append(len(list(val.epoch(0))))
        x, _, w = read_all(val)
        seen += [fingerprint(cube) for cube, weight in zip(x, w) if weight == 1.0]
    assert batch_counts[0] == batch_counts[1]  # same collective step count on both ranks
    assert sorted(seen) == sorted(fingerprint(cube) for cube in everything)


def test_two_ranks_train_on_disjoint_samples(roots):
    cfg = data_cfg("hdf5", roots["hdf5"])
    per_rank = [{fingerprint(c) for c in read_all(make_datasets(cfg, 1, World(rank, 2))[0])[0]}
                for rank in (0, 1)]
    assert len(per_rank[0]) == len(per_rank[1]) == N_TRAIN // 2
    assert not per_rank[0] & per_rank[1]


def test_max_train_and_max_val_take_the_first_samples(roots):
    cfg = data_cfg("tfrecord", roots["tfrecord"], max_train=2, max_val=3)
    train, val = make_datasets(cfg, 1)
    assert (train.num_samples, val.num_samples) == (2, 3)
    _, y, _ = read_all(val)
    np.testing.assert_array_equal(y, [p for _, p in expected_samples("validation", 3)])


def test_generator_is_deterministic_given_the_seed():
    a, b, c = (list(gen.draw_samples(2, 8, seed, "train")) for seed in (3, 3, 4))
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0][0], c[0][0])


def test_generator_cli_writes_the_seed_layout(tmp_path):
    gen.main(["--format", "hdf5", "--out", str(tmp_path), "--size", "8", "--train", "3",
              "--val", "1", "--test", "1", "--samples-per-file", "2"])
    split = yaml.safe_load((tmp_path / "split.yaml").read_text())
    assert split == {"train": [0, 1], "validation": [2], "test": [3]}
    train, val = make_datasets(data_cfg("hdf5", tmp_path, resolution=8), 1)
    assert (train.num_samples, val.num_samples) == (3, 1)


def test_targets_are_as_learnable_as_the_readme_says():
    """Least squares on per-channel mean, variance and gradient variance of log(1 + x), against
    predicting the mean on held-out cubes: Omega_m is read off the mean count almost exactly,
    sigma_8 (clumping) well, n_s (spread over scales) in part, and H_0 hardly at all (its one
    trace, the transfer function's shape, is too faint here)."""
    features, targets = [], []
    for counts, unit_par in gen.draw_samples(96, 32, seed=7, split="train"):
        logx = np.log1p(counts.astype(np.float32))
        features.append(np.concatenate([logx.mean((0, 1, 2)), logx.var((0, 1, 2)),
                                         np.diff(logx, axis=0).var((0, 1, 2)), [1.0]]))
        targets.append(unit_par)
    features, targets = np.array(features), np.array(targets)
    fit, held_out = slice(0, 72), slice(72, None)
    coef, *_ = np.linalg.lstsq(features[fit], targets[fit], rcond=None)
    mae = np.abs(features[held_out] @ coef - targets[held_out]).mean(axis=0)
    baseline = np.abs(targets[held_out] - targets[fit].mean(axis=0)).mean(axis=0)
    ratio = mae / baseline
    assert ratio[0] < 0.1 and ratio[1] < 0.3 and ratio[2] < 0.7 and ratio[3] > 0.8, ratio


# ---------------------------------------------------------------------------------------------
# Bad inputs: each error names the offending file (and dataset where relevant)

def truncate(path, keep):
    data = open(path, "rb").read()
    open(path, "wb").write(data[:keep])


def test_missing_root_and_split_folder_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        make_datasets(data_cfg("tfrecord", tmp_path / "nowhere"), 1)
    gen.write_tfrecord(tmp_path / "only_train", 8, 2, 0)
    with pytest.raises(FileNotFoundError, match=r"only_train/validation"):
        make_datasets(data_cfg("tfrecord", tmp_path / "only_train", resolution=8), 1)


@pytest.mark.parametrize("fmt", ["tfrecord", "raw"])
def test_empty_folder_is_named(tmp_path, fmt):
    for split in ("train", "validation"):
        (tmp_path / split).mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path}/train: no")):
        make_datasets(data_cfg(fmt, tmp_path), 1)


def test_file_missing_from_split_yaml_is_named(tmp_path):
    gen.write_hdf5(tmp_path, 8, 2, 1, samples_per_file=1)
    os.remove(tmp_path / "cosmo-rec1.h5")
    with pytest.raises(FileNotFoundError, match="cosmo-rec1.h5"):
        make_datasets(data_cfg("hdf5", tmp_path, resolution=8), 1)


def test_missing_split_yaml_and_split_key_are_named(tmp_path):
    gen.write_hdf5(tmp_path, 8, 2, 1)
    with pytest.raises(FileNotFoundError, match="other.yaml"):
        make_datasets(data_cfg("hdf5", tmp_path, resolution=8, split_file="other.yaml"), 1)
    (tmp_path / "split.yaml").write_text("train: [0]\n")
    with pytest.raises(ValueError, match="split.yaml: no file indices under key 'validation'"):
        make_datasets(data_cfg("hdf5", tmp_path, resolution=8), 1)


def test_truncated_hdf5_is_named(tmp_path):
    gen.write_hdf5(tmp_path, 8, 2, 1, samples_per_file=1)
    path = tmp_path / "cosmo-rec2.h5"
    truncate(path, os.path.getsize(path) // 2)
    with pytest.raises(ValueError, match="cosmo-rec2.h5: cannot open as HDF5"):
        make_datasets(data_cfg("hdf5", tmp_path, resolution=8), 1)


def test_hdf5_missing_dataset_is_named(tmp_path):
    gen.write_hdf5(tmp_path, 8, 2, 1, samples_per_file=1)
    with h5py.File(tmp_path / "cosmo-rec0.h5", "a") as f:
        del f["unitPar"]
    with pytest.raises(ValueError, match=r"cosmo-rec0.h5: missing dataset\(s\) \['unitPar'\]"):
        make_datasets(data_cfg("hdf5", tmp_path, resolution=8), 1)


@pytest.mark.parametrize("fmt,root_name,message", [
    ("hdf5", "hdf5", r"cosmo-rec0.h5: dataset 3Dmap has shape \(2, 16, 16, 16, 4\), "
                     r"expected \(2, 8, 8, 8, 4\)"),
    ("raw", "raw", r"univ_00000.h5: dataset full has shape \(32, 32, 32, 4\)"),
    ("tfrecord", "tfrecord", r"univ_00000.tfrecord: x: expected 8\^3\*4 = 2048"),
])
def test_wrong_resolution_is_named_before_training(roots, fmt, root_name, message):
    resolution = 12 if fmt == "raw" else 8  # raw: 32 is a multiple of 8, so ask for 12
    with pytest.raises(ValueError, match=message):
        make_datasets(data_cfg(fmt, roots[root_name], resolution=resolution), 1)


@pytest.mark.parametrize("gzip", [False, True])
def test_truncated_first_tfrecord_fails_up_front(tmp_path, gzip):
    gen.write_tfrecord(tmp_path, 8, 2, 2, gzip=gzip)
    path = tmp_path / "validation" / "univ_00000.tfrecord"
    truncate(path, os.path.getsize(path) - 50)
    with pytest.raises(ValueError, match="univ_00000.tfrecord: truncated"):
        make_datasets(data_cfg("tfrecord", tmp_path, resolution=8), 1)
    truncate(path, 10)
    with pytest.raises(ValueError, match="univ_00000.tfrecord: 10 bytes"):
        make_datasets(data_cfg("tfrecord", tmp_path, resolution=8), 1)


def test_bad_later_tfrecords_are_named_at_run_time(tmp_path):
    gen.write_tfrecord(tmp_path, 8, 2, 3)
    truncated = tmp_path / "validation" / "univ_00001.tfrecord"
    truncate(truncated, os.path.getsize(truncated) - 50)
    _, val = make_datasets(data_cfg("tfrecord", tmp_path, resolution=8), 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="univ_00001.tfrecord.*truncated"):
        read_all(val)
    counts, unit_par = next(gen.draw_samples(1, 4, 0, "validation"))
    gen.write_tfrecord_sample(truncated, counts, unit_par)  # a 4^3 cube among 8^3 ones
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"univ_00001.tfrecord.*expected 8\^3\*4 = 2048 int16 values"):
        read_all(val)


def test_compression_mismatch_is_named(roots):
    with pytest.raises(ValueError, match="univ_00000.tfrecord.*not GZIP"):
        make_datasets(data_cfg("tfrecord", roots["tfrecord"], compression="gzip"), 1)


def test_hdf5_read_error_at_run_time_names_the_file(tmp_path):
    gen.write_raw(tmp_path, 16, 1, 1)
    _, val = make_datasets(data_cfg("raw", tmp_path, resolution=8), 1)
    os.rename(tmp_path / "validation" / "univ_00000.h5", tmp_path / "moved.h5")
    with pytest.raises(tf.errors.OpError, match="validation/univ_00000.h5: cannot read"):
        read_all(val)


def test_raw_reads_nested_hdf5_and_h5_universes_in_sorted_order(tmp_path):
    gen.write_raw(tmp_path / "flat", D, 1, 3, seed=2)  # one sub-volume per universe
    flat = sorted((tmp_path / "flat" / "validation").glob("*.h5"))
    nested = tmp_path / "nested" / "validation"
    for path, rel in zip(flat, ["b/2019/univ_a.hdf5", "a/univ_b.h5", "univ_c.hdf5"]):
        (nested / rel).parent.mkdir(parents=True, exist_ok=True)
        path.rename(nested / rel)
    (tmp_path / "nested" / "train").mkdir()
    (tmp_path / "nested" / "train" / "x").mkdir()
    (tmp_path / "nested" / "train" / "x" / "univ.hdf5").write_bytes(
        (nested / "univ_c.hdf5").read_bytes())
    _, val = make_datasets(data_cfg("raw", tmp_path / "nested", log_transform=False), 1)
    x, _, _ = read_all(val)
    samples = expected_samples("validation", 3, seed=2)
    # sorted by path: a/univ_b.h5 (2nd written), b/2019/univ_a.hdf5 (1st), univ_c.hdf5 (3rd)
    for cube, i in zip(x, (1, 0, 2)):
        np.testing.assert_array_equal(cube, samples[i][0])


def test_the_seeds_split_yaml_works_unchanged(tmp_path):
    prefix = "PeterA_2019_05_4parE"
    gen.write_hdf5(tmp_path, D, N_TRAIN, N_VAL, 2, seed=1, samples_per_file=2, prefix=prefix)
    (tmp_path / "seed_split.yaml").write_text(
        "splitIdx:\n  train: [0, 1]\n  val: [2, 3, 4]\n  test: [5]\n"
        f"fnameTmpl: {prefix}-rec*.h5\n")
    cfg = data_cfg("hdf5", tmp_path, split_file="seed_split.yaml", prefix="ignored")
    train, val = make_datasets(cfg, local_batch=2)
    assert (train.num_samples, val.num_samples) == (N_TRAIN, N_VAL)
    _, y, _ = read_all(val)
    np.testing.assert_array_equal(y, [u for _, u in expected_samples("validation", N_VAL)])
    (tmp_path / "seed_split.yaml").write_text("splitIdx: {train: [0]}\nfnameTmpl: rec.h5\n")
    with pytest.raises(ValueError, match="fnameTmpl 'rec.h5' must hold one"):
        make_datasets(cfg, local_batch=2)
