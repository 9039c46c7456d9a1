"""CosmoFlow input: the three real on-disk formats as rank-sharded tf.data pipelines.

- tfrecord (MLPerf HPC): <root>/{train,validation}/*.tfrecord, one tf.train.Example per file
  (optionally GZIP) with x = int16 bytes of (D,D,D,4) and y = 4 float32. Read with TF ops only.
- hdf5 (multi-resolution seed): <root>/<prefix>-rec<idx>.h5 with 3Dmap (N,D,D,D,4) and unitPar
  (N,4); a split YAML lists the file indices of train/validation/test (ours, or the seed's own
  splitIdx/fnameTmpl file unchanged).
- raw (ExaLearn): <root>/{train,validation}/**/*.hdf5 (or *.h5, in nested folders) with full
  (S,S,S,4) counts and unitPar (4,); each universe is cut into (S/D)^3 non-overlapping sub-volumes.

Every split is validated up front on every rank, cheaply (headers and sizes), so a wrong path or
a broken file fails before training with a message naming the file and what was expected. Errors
while reading at run time name the file too: they surface as tf.errors.OpError from the iterator.
"""
import glob
import os

import numpy as np
import tensorflow as tf
import yaml

from common.data import ShardedDataset
from common.distributed import World
from common.hdf5 import H5Reader, h5_shapes
from common.staging import SplitFiles, stage_inputs

SPLITS = ("train", "validation")
CHANNELS = 4
NUM_TARGETS = 4
GZIP_MAGIC = b"\x1f\x8b"
TFRECORD_HEADER_BYTES = 12  # uint64 payload length + its 4-byte masked CRC
TFRECORD_MIN_BYTES = 16  # header + payload CRC: even an empty record is this long


def sample_shape(data_cfg):
    d = int(data_cfg["resolution"])
    return (d, d, d, CHANNELS)


def make_datasets(data_cfg, local_batch, world=None, seed=0):
    """(train, validation) ShardedDatasets yielding (x, y, weight) batches for this rank of
    `world` (default: a world of one).

    Each reader lists and checks a split's source files, then builds its loader on the paths to
    read: the sources, or their copies when data.stage_dir is set (staging needs the `world`)."""
    readers = {"tfrecord": tfrecord_split, "hdf5": seed_hdf5_split, "raw": raw_split}
    if data_cfg["format"] not in readers:
        raise ValueError(f"data.format {data_cfg['format']!r}: expected one of {sorted(readers)}")
    if not os.path.isdir(data_cfg["root"]):
        raise FileNotFoundError(f"data.root {data_cfg['root']}: no such folder")
    world = world or World()
    listed = {split: readers[data_cfg["format"]](data_cfg, split, limit)
              for split, limit in zip(SPLITS, (data_cfg["max_train"], data_cfg["max_val"]))}
    located = stage_inputs(data_cfg, world, {split: files for split, (files, _) in listed.items()},
                           seed)
    datasets = []
    for split, (_, build) in listed.items():
        keys, load = build(located[split])
        datasets.append(ShardedDataset(
            keys, to_model_input(load, data_cfg), local_batch, world.rank, world.size,
            training=split == "train", seed=seed, name=f"cosmoflow {split}",
            shuffle=data_cfg.get("shuffle", "global")))
    return tuple(datasets)


def to_model_input(load, data_cfg):
    """Wraps a raw loader: float32 x, scaled by count_scale, then optionally log(x + 1) as in
    the MLPerf reference."""
    shape = sample_shape(data_cfg)

    def load_fn(key):
        x, y = load(key)
        x = tf.cast(x, tf.float32)
        if data_cfg["count_scale"] != 1.0:
            x = x * data_cfg["count_scale"]
        if data_cfg["log_transform"]:
            x = tf.math.log1p(x)
        return tf.ensure_shape(x, shape), tf.ensure_shape(y, [NUM_TARGETS])
    return load_fn


def first(items, limit):
    return items if limit is None else items[:int(limit)]


def split_folder(root, split):
    folder = os.path.join(root, split)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: missing; expected folders {SPLITS} under {root}")
    return folder


def list_files(folder, pattern):
    # Sorted so that every rank builds the same key list, whatever the file system's order.
    paths = sorted(glob.glob(os.path.join(folder, pattern)))
    if not paths:
        raise FileNotFoundError(f"{folder}: no {pattern} files")
    return paths


def raw_files(folder):
    """ExaLearn universes: *.hdf5 (as the reference tools name them) or *.h5, in nested folders,
    sorted by path so every rank lists the same order."""
    paths = sorted(p for pattern in ("*.hdf5", "*.h5")
                   for p in glob.glob(os.path.join(folder, "**", pattern), recursive=True))
    if not paths:
        raise FileNotFoundError(f"{folder}: no *.hdf5 or *.h5 files (searched sub-folders too)")
    return paths


# ---------------------------------------------------------------------------------------------
# MLPerf TFRecord

def tfrecord_split(cfg, split, limit):
    """(SplitFiles, build(paths) -> (keys, load)); staging decompresses GZIP files."""
    paths = first(list_files(split_folder(cfg["root"], split), "*.tfrecord"), limit)
    for path in paths:
        if os.path.getsize(path) < TFRECORD_MIN_BYTES:
            raise ValueError(f"{path}: {os.path.getsize(path)} bytes, shorter than any "
                             f"TFRecord ({TFRECORD_MIN_BYTES}); truncated?")
    gzip = is_gzip(paths[0]) if cfg["compression"] == "auto" else cfg["compression"] == "gzip"
    resolution = int(cfg["resolution"])

    def load(path):
        return read_tfrecord(path, resolution, gzip)
    try:  # the first file fully, so a wrong resolution or compression fails before training
        load(tf.constant(paths[0]))
    except tf.errors.OpError as e:  # checks raise ValueError themselves; this is for TF's own
        raise ValueError(f"{paths[0]}: cannot decode: {e.message}") from e
    staged_gzip = gzip and not cfg.get("stage_dir")  # the stage holds them decompressed

    def build(located):
        return np.array(located), lambda path: read_tfrecord(path, resolution, staged_gzip)
    files = SplitFiles(paths, np.arange(len(paths))[:, None], split == "train", gunzip=True)
    return files, build


def is_gzip(path):
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def check(condition, path, *parts):
    """Asserts `condition` with a message that starts with the file name.

    Returns the assert op for control dependencies in tf.data graphs; run eagerly (the up-front
    check of the first file) it raises a plain ValueError instead of TF's wrapped message.
    """
    text = [p if isinstance(p, str) else tf.strings.as_string(p) for p in parts]
    message = tf.strings.join([path, ": ", *text])
    if not tf.executing_eagerly():
        return tf.debugging.Assert(condition, [message])
    if not condition:
        raise ValueError(message.numpy().decode())
    return None


def read_tfrecord(path, resolution, gzip):
    """First record of a TFRecord file -> (x int16 (D,D,D,4), y float32 (4,)), TF ops only."""
    data = tf.io.read_file(path)
    if gzip:
        magic_ok = tf.equal(tf.strings.substr(data, 0, 2), GZIP_MAGIC)
        with tf.control_dependencies([check(magic_ok, path, "not GZIP; check data.compression")]):
            data = tf.io.decode_compressed(data, "GZIP")
    # Framing: uint64 little-endian payload length, masked CRC, payload, masked CRC.
    size = tf.strings.length(data, unit="BYTE")
    with tf.control_dependencies([check(size >= TFRECORD_MIN_BYTES, path, "truncated TFRecord: ",
                                        size, " bytes")]):
        length = tf.io.decode_raw(tf.strings.substr(data, 0, 8), tf.int64, little_endian=True)[0]
    complete = (length >= 0) & (tf.cast(size, tf.int64) >= length + TFRECORD_MIN_BYTES)
    with tf.control_dependencies([check(
            complete, path, "truncated TFRecord (or compression mismatch): record of ", length,
            " payload bytes, file holds ", size)]):
        payload = tf.strings.substr(data, TFRECORD_HEADER_BYTES, tf.cast(length, tf.int32))
    features = tf.io.parse_single_example(payload, {
        "x": tf.io.FixedLenFeature([], tf.string),
        "y": tf.io.VarLenFeature(tf.float32)})
    x = tf.io.decode_raw(features["x"], tf.int16, little_endian=True)
    y = tf.sparse.to_dense(features["y"])
    want = resolution ** 3 * CHANNELS
    x_ok = check(tf.equal(tf.size(x), want), path, f"x: expected {resolution}^3*{CHANNELS} = "
                 f"{want} int16 values (resolution {resolution}), got ", tf.size(x))
    y_ok = check(tf.equal(tf.size(y), NUM_TARGETS), path,
                 f"y: expected {NUM_TARGETS} float32 values, got ", tf.size(y))
    with tf.control_dependencies([x_ok, y_ok]):
        return tf.reshape(x, (resolution,) * 3 + (CHANNELS,)), tf.reshape(y, [NUM_TARGETS])


# ---------------------------------------------------------------------------------------------
# HDF5 formats, read through h5py in tf.numpy_function

def expect_shape(path, name, shape, expected, resolution):
    if shape != expected:
        raise ValueError(f"{path}: dataset {name} has shape {shape}, expected {expected} "
                         f"for resolution {resolution}")


def seed_hdf5_split(cfg, split, limit):
    resolution = int(cfg["resolution"])
    paths = split_file_paths(cfg, split)
    table = []
    for file_index, path in enumerate(paths):
        shapes = h5_shapes(path, ("3Dmap", "unitPar"))
        rows = shapes["3Dmap"][0] if shapes["3Dmap"] else 0
        expect_shape(path, "3Dmap", shapes["3Dmap"], (rows,) + sample_shape(cfg), resolution)
        expect_shape(path, "unitPar", shapes["unitPar"], (rows, NUM_TARGETS), resolution)
        table += [(file_index, row) for row in range(rows)]

    def read(f, where):
        return f["3Dmap"][where[0]], f["unitPar"][where[0]]
    return h5_split_files(paths, first(table, limit), read, split)


def h5_split_files(paths, table, read, split):
    """(SplitFiles, build) of an HDF5 split whose table rows start with the file index."""
    def build(located):
        return np.arange(len(table), dtype=np.int64), H5Reader(located, table, read).tf_load
    key_files = np.array([row[0] for row in table], np.int64)[:, None]
    return SplitFiles(paths, key_files, split == "train"), build


def split_file_paths(cfg, split):
    """The HDF5 files of `split` named by the split YAML, in one of two layouts:
    ours, `{train: [idx...], validation: [...], test: [...]}` with files <prefix>-rec<idx>.h5; or
    the seed's, `{splitIdx: {train, val, test}, fnameTmpl: NAME-rec*.h5}` where * is the index."""
    path = cfg["split_file"]
    path = path if os.path.isabs(path) else os.path.join(cfg["root"], path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: split file not found")
    with open(path) as f:
        splits = yaml.safe_load(f) or {}
    template = f"{cfg['prefix']}-rec*.h5"
    if "splitIdx" in splits:
        template = splits.get("fnameTmpl", template)
        if template.count("*") != 1:
            raise ValueError(f"{path}: fnameTmpl {template!r} must hold one '*' for the index")
        splits = {"validation": splits["splitIdx"].get("val"), **splits["splitIdx"]}
    if not splits.get(split):
        raise ValueError(f"{path}: no file indices under key '{split}'")
    return [os.path.join(cfg["root"], template.replace("*", str(int(index))))
            for index in splits[split]]


def raw_split(cfg, split, limit):
    resolution = int(cfg["resolution"])
    paths = raw_files(split_folder(cfg["root"], split))
    table = []
    for file_index, path in enumerate(paths):
        shapes = h5_shapes(path, ("full", "unitPar"))
        edge = shapes["full"][0] if shapes["full"] else 0
        if edge % resolution or edge == 0:
            raise ValueError(f"{path}: dataset full has shape {shapes['full']}, expected a cube "
                             f"(S,S,S,{CHANNELS}) with S a multiple of resolution {resolution}")
        expect_shape(path, "full", shapes["full"], (edge,) * 3 + (CHANNELS,), resolution)
        expect_shape(path, "unitPar", shapes["unitPar"], (NUM_TARGETS,), resolution)
        corners = range(0, edge, resolution)
        table += [(file_index, i, j, k) for i in corners for j in corners for k in corners]

    def read(f, where):
        i, j, k = where
        cube = f["full"][i:i + resolution, j:j + resolution, k:k + resolution]
        return cube, f["unitPar"][:]
    return h5_split_files(paths, first(table, limit), read, split)
