"""One-off conversion of DeepCAM HDF5 files to the raw layout read without h5py (data.format:
raw), so input runs in parallel instead of one read at a time under the GIL.

    python -m deepcam.convert --src data/deepcam --dst data/deepcam-raw

For each <src>/<split>/data-*.h5 writes <dst>/<split>/data-*.data (float32 little-endian,
H x W x C) and data-*.label (uint8, h x w), a meta.json of the shapes per split, and copies
every stats.h5.
"""
import argparse
import glob
import json
import os
import shutil

import numpy as np

from deepcam.h5io import read_sample


def convert(src, dst):
    for stats in glob.glob(os.path.join(src, "stats.h5")) + glob.glob(
            os.path.join(src, "*", "stats.h5")):
        target = os.path.join(dst, os.path.relpath(stats, src))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(stats, target)
    for split in ("train", "validation", "test"):
        paths = sorted(glob.glob(os.path.join(src, split, "data-*.h5")))
        if not paths:
            continue
        os.makedirs(os.path.join(dst, split), exist_ok=True)
        shapes = None
        for path in paths:
            data, labels = read_sample(path)
            data, labels = data.astype("<f4"), np.rint(labels).astype(np.uint8)
            if shapes not in (None, (data.shape, labels.shape)):
                raise ValueError(f"{path}: shapes {data.shape}, {labels.shape} differ from the "
                                 f"split's first file {shapes}")
            shapes = (data.shape, labels.shape)
            stem = os.path.join(dst, split, os.path.basename(path)[:-3])
            data.tofile(stem + ".data")
            labels.tofile(stem + ".label")
        with open(os.path.join(dst, split, "meta.json"), "w") as f:
            json.dump({"data_shape": list(shapes[0]), "label_shape": list(shapes[1])}, f)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True)
    a = p.parse_args(argv)
    convert(a.src, a.dst)
    print(f"wrote the raw layout of {a.src} to {a.dst}")


if __name__ == "__main__":
    main()
