"""Coarsen a CosmoFlow dataset by summing factor^3 voxel blocks (2: 128^3 -> 64^3).

Summing keeps the cubes particle counts, so the coarse set is what a coarser simulation grid would
have produced and the usual log(x + 1) input transform still applies.

    python -m cosmoflow.coarsen --format tfrecord --src data/cosmo128 --dst data/cosmo64
    python -m cosmoflow.coarsen --format hdf5 --src data/seed128 --dst data/seed64

tfrecord: every <src>/<split>/*.tfrecord is rewritten at the same relative path with the same
compression; features other than x are kept as they are.
hdf5: every <src>/*.h5 is rewritten with 3Dmap coarsened and its other datasets copied; the YAML
split files are copied. Integer cubes whose sums would overflow their type are refused.
Large sets: run N copies with --shard i --num-shards N (e.g. one per SLURM task).
"""
import argparse
import glob
import os
import shutil

import h5py
import numpy as np

GZIP_MAGIC = b"\x1f\x8b"
PARTIAL = ".partial"  # written under this suffix, renamed when complete: no half files on errors


def coarsen_cube(cube, factor=2, where="cube"):
    """Sums factor^3 blocks over the three spatial axes of (..., D, D, D, C)."""
    *lead, d1, d2, d3, c = cube.shape
    if d1 % factor or d2 % factor or d3 % factor:
        raise ValueError(f"{where}: shape {cube.shape} is not divisible by factor {factor}")
    coarse_dims = (d1 // factor, factor, d2 // factor, factor, d3 // factor, factor)
    blocks = cube.reshape(*lead, *coarse_dims, c)
    axes = tuple(len(lead) + a for a in (1, 3, 5))
    if not np.issubdtype(cube.dtype, np.integer):
        return blocks.sum(axis=axes, dtype=cube.dtype)
    sums = blocks.sum(axis=axes, dtype=np.int64)
    limits = np.iinfo(cube.dtype)
    if sums.max(initial=0) > limits.max or sums.min(initial=0) < limits.min:
        raise OverflowError(f"{where}: coarsened counts span [{sums.min()}, {sums.max()}], "
                            f"outside {cube.dtype} [{limits.min}, {limits.max}]")
    return sums.astype(cube.dtype)


def my_share(paths, shard, num_shards):
    return sorted(paths)[shard::num_shards]


def coarsen_tfrecord_dataset(src, dst, factor=2, shard=0, num_shards=1):
    """Rewrites every <src>/<split>/*.tfrecord under <dst>; returns the source files done."""
    import tensorflow as tf  # imported here: slow to load and only this format needs it

    paths = my_share(glob.glob(os.path.join(src, "*", "*.tfrecord")), shard, num_shards)
    if not paths:
        raise FileNotFoundError(f"{src}: no <split>/*.tfrecord files")
    for path in paths:
        out = os.path.join(dst, os.path.relpath(path, src))
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(path, "rb") as f:
            compression = "GZIP" if f.read(2) == GZIP_MAGIC else ""
        records = tf.data.TFRecordDataset(path, compression_type=compression)
        options = tf.io.TFRecordOptions(compression_type=compression)
        with tf.io.TFRecordWriter(out + PARTIAL, options) as writer:
            for record in records:
                writer.write(coarsen_example(record.numpy(), factor, path))
        os.replace(out + PARTIAL, out)
    return paths


def coarsen_example(serialized, factor, where):
    """A serialized tf.train.Example with its int16 (D,D,D,4) `x` summed over factor^3 blocks."""
    import tensorflow as tf  # already loaded by the caller; imported lazily for the hdf5 path

    example = tf.train.Example.FromString(serialized)
    x = np.frombuffer(example.features.feature["x"].bytes_list.value[0], "<i2")
    edge = round((x.size / 4) ** (1 / 3))
    if edge ** 3 * 4 != x.size:
        raise ValueError(f"{where}: x holds {x.size} int16 values, not a (D,D,D,4) cube")
    coarse = coarsen_cube(x.reshape(edge, edge, edge, 4), factor, where)
    example.features.feature["x"].bytes_list.value[0] = coarse.astype("<i2").tobytes()
    return example.SerializeToString()


def coarsen_hdf5_dataset(src, dst, factor=2, shard=0, num_shards=1):
    """Rewrites every <src>/*.h5 (3Dmap coarsened) under <dst>, copies *.yaml; returns the
    source files done."""
    paths = my_share(glob.glob(os.path.join(src, "*.h5")), shard, num_shards)
    if not paths:
        raise FileNotFoundError(f"{src}: no *.h5 files")
    os.makedirs(dst, exist_ok=True)
    if shard == 0:
        for split_file in glob.glob(os.path.join(src, "*.y*ml")):
            shutil.copy(split_file, dst)
    for path in paths:
        out = os.path.join(dst, os.path.basename(path))
        coarsen_hdf5_file(path, out + PARTIAL, factor)
        os.replace(out + PARTIAL, out)
    return paths


def coarsen_hdf5_file(path, out, factor):
    with h5py.File(path, "r") as fin:
        if "3Dmap" not in fin:
            raise ValueError(f"{path}: no 3Dmap dataset")
        maps = fin["3Dmap"]
        rows, edge, _, _, channels = maps.shape
        coarse_shape = (edge // factor,) * 3 + (channels,)
        with h5py.File(out, "w") as fout:
            for name in fin:
                if name != "3Dmap":
                    fin.copy(name, fout)
            coarse = fout.create_dataset("3Dmap", (rows,) + coarse_shape, maps.dtype,
                                         chunks=(1,) + coarse_shape)
            for row in range(rows):  # a row at a time: 128 full cubes would not fit in RAM
                coarse[row] = coarsen_cube(maps[row], factor, f"{path} 3Dmap[{row}]")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--format", required=True, choices=("tfrecord", "hdf5"))
    p.add_argument("--src", required=True, help="full-resolution dataset root")
    p.add_argument("--dst", required=True, help="coarse dataset root (created)")
    p.add_argument("--factor", type=int, default=2, help="block edge summed into one voxel")
    p.add_argument("--shard", type=int, default=0, help="this process's share of the files")
    p.add_argument("--num-shards", type=int, default=1, help="processes sharing the work")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    coarsen = coarsen_tfrecord_dataset if a.format == "tfrecord" else coarsen_hdf5_dataset
    done = coarsen(a.src, a.dst, a.factor, a.shard, a.num_shards)
    print(f"coarsened {len(done)} files by {a.factor} into {a.dst}")


if __name__ == "__main__":
    main()
