"""One DeepCAM sample file in the real HDF5 layout: climate/data (H, W, 16) float32 and
climate/labels_0 (H, W), float or int. The data generator, the coarsener, the converter, the
statistics and the reader all go through these names."""
import h5py
import numpy as np

from common.hdf5 import open_h5

DATA, LABELS = "climate/data", "climate/labels_0"


def write_sample(path, data, labels, int_labels=False):
    with h5py.File(path, "w") as f:
        f[DATA] = data
        f[LABELS] = labels.astype(np.int32 if int_labels else np.float32)


def read_sample(path):
    """(data, labels) as stored."""
    with open_h5(path) as f:
        return f[DATA][()], f[LABELS][()]
