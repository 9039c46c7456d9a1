"""Per-channel statistics of the training files, written to stats.h5 as the reader expects.

    python -m deepcam.stats ROOT [--split train]          (one process)
    mpiexec -n 8 python -m deepcam.stats ROOT             (files split over the ranks)

Writes ROOT/stats.h5 with climate/{count,mean,sqmean,minval,maxval}, one value per channel,
over every pixel of every ROOT/<split>/data-*.h5. Under MPI each rank reads its share and the
partial sums, minima and maxima are combined on rank 0.
"""
import argparse
import glob
import os
from functools import partial

import h5py
import numpy as np

from common.hdf5 import open_h5
from deepcam.h5io import DATA


def partial_stats(paths):
    """(count, sum, sum of squares, min, max) per channel over `paths`, in float64."""
    count, total, squares, low, high = 0, 0.0, 0.0, np.inf, -np.inf
    for path in paths:
        with open_h5(path) as f:
            data = f[DATA][()].astype(np.float64)
        pixels = data.reshape(-1, data.shape[-1])
        count += len(pixels)
        total = total + pixels.sum(axis=0)
        squares = squares + (pixels ** 2).sum(axis=0)
        low, high = np.minimum(low, pixels.min(axis=0)), np.maximum(high, pixels.max(axis=0))
    return count, total, squares, low, high


def combine(parts):
    count = sum(p[0] for p in parts)
    if count == 0:
        raise ValueError("no pixels: no data-*.h5 files were read")
    total = sum(np.asarray(p[1]) for p in parts if p[0])
    squares = sum(np.asarray(p[2]) for p in parts if p[0])
    low = np.min([p[3] for p in parts if p[0]], axis=0)
    high = np.max([p[4] for p in parts if p[0]], axis=0)
    return {"count": np.full(len(total), count, np.float64), "mean": total / count,
            "sqmean": squares / count, "minval": low, "maxval": high}


def write_stats(path, stats):
    tmp = f"{path}.tmp"
    with h5py.File(tmp, "w") as f:
        for key, value in stats.items():
            f[f"climate/{key}"] = np.asarray(value, np.float64)
    os.replace(tmp, path)


def compute(root, split="train", rank=0, size=1, gather=None):
    """Stats of ROOT/<split>/data-*.h5; with several ranks `gather` collects the parts."""
    paths = sorted(glob.glob(os.path.join(root, split, "data-*.h5")))
    if not paths:
        raise FileNotFoundError(f"{os.path.join(root, split)}: no data-*.h5 files")
    part = partial_stats(paths[rank::size])
    parts = gather(part) if gather else [part]
    return combine(parts) if parts is not None else None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root")
    p.add_argument("--split", default="train")
    p.add_argument("--out", help="default ROOT/stats.h5")
    a = p.parse_args(argv)
    rank, size, gather = 0, 1, None
    if int(os.environ.get("OMPI_COMM_WORLD_SIZE", os.environ.get("PMI_SIZE", "1"))) > 1:
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        rank, size = comm.Get_rank(), comm.Get_size()
        gather = partial(comm.gather, root=0)
    stats = compute(a.root, a.split, rank, size, gather)
    if rank == 0:
        out = a.out or os.path.join(a.root, "stats.h5")
        write_stats(out, stats)
        print(f"wrote {out}: {int(stats['count'][0])} pixels x {len(stats['mean'])} channels")


if __name__ == "__main__":
    main()
