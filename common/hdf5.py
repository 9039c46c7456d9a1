"""HDF5 inputs shared by the apps: header checks that name the file, and a thread-safe reader
for tf.data. h5py holds the GIL, so reads inside a parallel map run one at a time: fine for small
samples, a bottleneck for large ones (see DeepCAM's raw fast path)."""
import os
import threading

import h5py
import numpy as np
import tensorflow as tf


def open_h5(path):
    # No locking: inputs are read-only, and HDF5's flock fails on Lustre mounts that lack it.
    return h5py.File(path, "r", locking=False)


def h5_shapes(path, names):
    """{dataset: shape} from the file's header; errors name the file and the dataset."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with open_h5(path) as f:
            missing = [name for name in names if name not in f]
            if missing:
                raise ValueError(f"{path}: missing dataset(s) {missing}; expected {list(names)}")
            return {name: f[name].shape for name in names}
    except OSError as e:
        raise ValueError(f"{path}: cannot open as HDF5 (truncated or not HDF5?): {e}") from e


class H5Reader:
    """Sample key -> (x, y) numpy float32 via h5py, keeping one open handle per file.

    table[key] = (file index, *where); read(h5file, where) returns (x, y). tf.data calls this
    from several threads (not processes), so shared handles are safe; opening is locked.
    """

    def __init__(self, paths, table, read):
        self.paths, self.table, self.read = paths, np.asarray(table, np.int64), read
        self.handles, self.lock = {}, threading.Lock()

    def handle(self, path):
        with self.lock:
            if path not in self.handles:
                self.handles[path] = open_h5(path)
            return self.handles[path]

    def __call__(self, key):
        file_index, *where = self.table[key]
        path = self.paths[file_index]
        try:
            x, y = self.read(self.handle(path), where)
        except Exception as e:  # re-raised with the file name, which TF alone would lose
            raise IOError(f"{path}: cannot read sample at {where}: {e}") from e
        return np.asarray(x, np.float32), np.asarray(y, np.float32)

    def tf_load(self, key):
        return tf.numpy_function(self, [key], (tf.float32, tf.float32), stateful=False)
