"""Coarse copies of a DeepCAM data set for the first stage of multi-resolution training.

    python -m deepcam.coarsen --src data/deepcam --dst data/deepcam-coarse [--labels pooled|full]

Data are averaged over 2x2 pixel blocks. Labels are majority-pooled to the coarse grid
(`pooled`; a tie goes to the rarer class: cyclone, then river, then background), or kept at
full resolution (`full`), in which case training scores the coarse logits upsampled x2. stats.h5
is recomputed from the coarse training files.
"""
import argparse
import glob
import os

import numpy as np

from deepcam import stats
from deepcam.h5io import read_sample, write_sample

PRIORITY = np.array([0, 2, 1])  # tie-break rank of background, cyclone, river


def average_pool(data):
    rows, cols = data.shape[:2]
    if rows % 2 or cols % 2:
        raise ValueError(f"shape {data.shape[:2]} is not divisible by 2")
    return data.reshape(rows // 2, 2, cols // 2, 2, -1).mean(axis=(1, 3), dtype=np.float64
                                                             ).astype(data.dtype)


def majority_pool(labels):
    """Most frequent class of each 2x2 block; ties to the rarer class."""
    rows, cols = labels.shape
    blocks = labels.reshape(rows // 2, 2, cols // 2, 2).transpose(0, 2, 1, 3).reshape(
        rows // 2, cols // 2, 4).astype(np.int64)
    counts = np.stack([(blocks == c).sum(axis=-1) for c in range(3)], axis=-1)
    return np.argmax(counts * 4 + PRIORITY, axis=-1).astype(np.uint8)


def coarsen_dataset(src, dst, labels="pooled"):
    for split in ("train", "validation", "test"):
        paths = sorted(glob.glob(os.path.join(src, split, "data-*.h5")))
        if paths:
            os.makedirs(os.path.join(dst, split), exist_ok=True)
        for path in paths:
            data, label = read_sample(path)
            coarse = majority_pool(np.rint(label).astype(np.uint8)) if labels == "pooled" \
                else label
            write_sample(os.path.join(dst, split, os.path.basename(path)), average_pool(data),
                         coarse)
    stats.write_stats(os.path.join(dst, "stats.h5"), stats.compute(dst))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True)
    p.add_argument("--labels", choices=("pooled", "full"), default="pooled")
    a = p.parse_args(argv)
    coarsen_dataset(a.src, a.dst, a.labels)
    print(f"wrote 2x coarsened data to {a.dst} (labels {a.labels})")


if __name__ == "__main__":
    main()
