"""DeepCAM input: climate fields and their segmentation masks as rank-sharded tf.data pipelines.

- hdf5 (the real layout): <root>/{train,validation}/data-*.h5 with climate/data (H, W, 16)
  float32 and climate/labels_0 (H, W), stored as float or int: 0 background, 1 tropical cyclone,
  2 atmospheric river. Read through h5py, which holds the GIL: one read at a time.
- raw (the fast path, python -m deepcam.convert): <root>/{train,validation}/<name>.data (float32
  little-endian, H x W x C) and <name>.label (uint8, h x w) with meta.json giving the shapes;
  read with tf.io.read_file + decode_raw, which run in parallel.
Both normalise (x - minval) / (maxval - minval) with climate/{minval,maxval} of stats.h5 (in the
split folder, else at the root) and keep the channels listed in data.channels. Labels may be at
the data's resolution or at twice it (a coarse stage scored against full-resolution labels).
Everything is checked up front from headers and sizes, so errors name the file or key.
"""
import glob
import json
import os

import numpy as np
import tensorflow as tf

from common.data import ShardedDataset
from common.distributed import World
from common.hdf5 import H5Reader, h5_shapes, open_h5
from common.staging import SplitFiles, stage_inputs
from deepcam.h5io import DATA, LABELS

SPLITS = ("train", "validation")


def make_datasets(data_cfg, local_batch, world=None, seed=0):
    """(train, validation) ShardedDatasets of (x (H, W, C), labels (h, w) int32, weight) for
    this rank of `world` (default: a world of one), read from data.stage_dir when it is set."""
    world = world or World()
    listed = {split: READERS[data_cfg["format"]](data_cfg, split, limit)
              for split, limit in zip(SPLITS, (data_cfg["max_train"], data_cfg["max_val"]))}
    located = stage_inputs(data_cfg, world, {split: files for split, (files, _) in listed.items()},
                           seed)
    return tuple(sharded(data_cfg, split, build(located[split]), local_batch, world.rank,
                         world.size, seed) for split, (_, build) in listed.items())


def split_dataset(data_cfg, split, local_batch, rank=0, size=1, seed=0, limit=None):
    """One split read from data.root (no staging: no collectives, any rank may call it)."""
    files, build = READERS[data_cfg["format"]](data_cfg, split, limit)
    return sharded(data_cfg, split, build(files.paths), local_batch, rank, size, seed)


def sharded(data_cfg, split, reader, local_batch, rank, size, seed):
    keys, load, label_shape = reader
    return ShardedDataset(keys, normalised(load, data_cfg, split, label_shape), local_batch,
                          rank, size, training=split == "train", seed=seed,
                          name=f"deepcam {split}", shuffle=data_cfg.get("shuffle", "global"))


def split_folder(root, split):
    folder = os.path.join(root, split)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: missing; expected folders {SPLITS} under {root}")
    return folder


def list_files(folder, pattern, limit):
    paths = sorted(glob.glob(os.path.join(folder, pattern)))  # the same order on every rank
    if not paths:
        raise FileNotFoundError(f"{folder}: no {pattern} files")
    return paths if limit is None else paths[:int(limit)]


def channel_indices(data_cfg):
    channels = data_cfg["channels"]
    if channels is None:
        return list(range(data_cfg["num_channels"]))
    for index in channels:
        if not 0 <= index < data_cfg["num_channels"]:
            raise ValueError(f"config key 'data.channels': index {index} is out of range for "
                             f"data.num_channels {data_cfg['num_channels']}")
    return list(channels)


def check_shapes(path, data_shape, label_shape, data_cfg):
    """Data (H, W, num_channels) as configured; labels (H, W) or (2H, 2W)."""
    height, width = data_cfg["shape"]
    want = (height, width, data_cfg["num_channels"])
    if tuple(data_shape) != want:
        raise ValueError(f"{path}: {DATA} has shape {tuple(data_shape)}, expected {want} "
                         "(data.shape and data.num_channels)")
    if tuple(label_shape) not in ((height, width), (2 * height, 2 * width)):
        raise ValueError(f"{path}: {LABELS} has shape {tuple(label_shape)}, which matches "
                         f"neither the data's {(height, width)} nor twice it")
    return tuple(label_shape)


def hdf5_split(data_cfg, split, limit):
    paths = list_files(split_folder(data_cfg["root"], split), "data-*.h5", limit)
    label_shapes = set()
    for path in paths:
        shapes = h5_shapes(path, (DATA, LABELS))
        label_shapes.add(check_shapes(path, shapes[DATA], shapes[LABELS], data_cfg))
    if len(label_shapes) > 1:
        raise ValueError(f"{split}: label shapes differ between files: {sorted(label_shapes)}")

    def read(f, where):
        return f[DATA][()], f[LABELS][()]
    label_shape = label_shapes.pop()

    def build(located):
        reader = H5Reader(located, [(i,) for i in range(len(located))], read)
        return np.arange(len(located), dtype=np.int64), reader.tf_load, label_shape
    return SplitFiles(paths, np.arange(len(paths))[:, None], split == "train"), build


def raw_split(data_cfg, split, limit):
    folder = split_folder(data_cfg["root"], split)
    meta_path = os.path.join(folder, "meta.json")
    if not os.path.isfile(meta_path):
        raise FileNotFoundError(f"{meta_path}: missing; write the raw layout with "
                                "python -m deepcam.convert")
    with open(meta_path) as f:
        meta = json.load(f)
    label_shape = check_shapes(meta_path, meta["data_shape"], meta["label_shape"], data_cfg)
    paths = list_files(folder, "*.data", limit)
    data_bytes, label_bytes = 4 * int(np.prod(meta["data_shape"])), int(np.prod(label_shape))
    for path in paths:
        for file, size in ((path, data_bytes), (path[:-5] + ".label", label_bytes)):
            if not os.path.isfile(file) or os.path.getsize(file) != size:
                found = os.path.getsize(file) if os.path.isfile(file) else "no file"
                raise ValueError(f"{file}: expected {size} bytes, found {found}")

    def load(path):
        data = read_raw(path, data_bytes, tf.float32, meta["data_shape"])
        label_path = tf.strings.regex_replace(path, r"\.data$", ".label")
        return data, read_raw(label_path, label_bytes, tf.uint8, label_shape)

    def build(located):  # the label file sits next to its data file, in the stage too
        return np.array(located[0::2]), load, label_shape
    pairs = [file for path in paths for file in (path, path[:-5] + ".label")]
    key_files = np.arange(len(pairs)).reshape(-1, 2)
    return SplitFiles(pairs, key_files, split == "train"), build


def read_raw(path, size, dtype, shape):
    """A raw little-endian array file; a truncated one fails naming the file."""
    raw = tf.io.read_file(path)
    ok = tf.debugging.Assert(tf.equal(tf.strings.length(raw), size),
                             [path, ": truncated, expected bytes:", size])
    with tf.control_dependencies([ok]):
        return tf.reshape(tf.io.decode_raw(raw, dtype, little_endian=True), shape)


# format -> (SplitFiles, build(paths to read) -> (keys, load, label shape))
READERS = {"hdf5": hdf5_split, "raw": raw_split}


def find_stats(root, split):
    for folder in (os.path.join(root, split), root):
        path = os.path.join(folder, "stats.h5")
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"stats.h5: not in {os.path.join(root, split)} nor in {root}; "
                            f"write it with python -m deepcam.stats {root}")


def read_stats(path, channels):
    """(minval, 1 / (maxval - minval)) of the selected channels; a flat channel keeps scale 1."""
    with open_h5(path) as f:
        for key in ("climate/minval", "climate/maxval"):
            if key not in f:
                raise ValueError(f"{path}: missing dataset {key}")
        low, high = f["climate/minval"][()], f["climate/maxval"][()]
    if len(low) <= max(channels):
        raise ValueError(f"{path}: stats for {len(low)} channels, data.channels asks for "
                         f"index {max(channels)}")
    span = (high - low)[channels]
    return low[channels].astype(np.float32), np.where(span > 0, 1.0 / np.where(span > 0, span, 1),
                                                      1.0).astype(np.float32)


def normalised(load, data_cfg, split, label_shape):
    channels = channel_indices(data_cfg)
    low, scale = read_stats(find_stats(data_cfg["root"], split), channels)
    shape = tuple(data_cfg["shape"]) + (len(channels),)

    every_channel = channels == list(range(data_cfg["num_channels"]))

    def load_fn(key):
        x, y = load(key)
        if not every_channel:  # a gather copies all 56.6 MB of a full sample
            x = tf.gather(x, channels, axis=-1)
        x = (x - low) * scale
        return tf.ensure_shape(x, shape), tf.ensure_shape(tf.cast(y, tf.int32), label_shape)
    return load_fn
