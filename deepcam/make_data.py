"""Synthetic climate fields in the real DeepCAM HDF5 layout, with physics-like extreme events.

    python -m deepcam.make_data --out data/deepcam --rows 768 --cols 1152 --train 16 --val 4
    python -m deepcam.make_data --demo data/deepcam-demo

Each sample has the 16 channels [TMQ, U850, V850, UBOT, VBOT, QREFHT, PS, PSL, T200, T500, PRECT,
TS, TREFHT, Z1000, Z200, ZBOT] as smooth large-scale fields around typical values, plus tropical
cyclones (compact vortices: high TMQ and PRECT, low PS/PSL, winds rotating about the centre) and
atmospheric rivers (long bent filaments of high TMQ with winds blowing along them). Labels come
from the generating masks (1 cyclone, 2 river, 0 background, by far the most pixels).
Writes <out>/{train,validation,test}/data-NNNNN.h5 and <out>/stats.h5 from the training files.
"""
import argparse
import os

import numpy as np

from common.demo import write_once
from common.fields import red_field
from deepcam import stats
from deepcam.coarsen import coarsen_dataset
from deepcam.h5io import write_sample

# Typical value and large-scale spread of each channel.
BACKGROUND = [(25, 10), (0, 8), (0, 8), (0, 6), (0, 6), (0.01, 0.004), (1.0e5, 800),
              (1.01e5, 800), (220, 5), (260, 5), (2e-5, 1e-5), (290, 10), (288, 10), (100, 50),
              (1.2e4, 200), (60, 20)]
TMQ, U850, V850, UBOT, VBOT, PS, PSL, PRECT = 0, 1, 2, 3, 4, 6, 7, 10
DEMO = dict(rows=96, cols=144, train=64, val=16, test=0, seed=0)


def sample(rng, rows, cols):
    """(data (rows, cols, 16) float32, labels (rows, cols) uint8)."""
    data = np.stack([mean + spread * red_field(rng, rows, cols) for mean, spread in BACKGROUND],
                    axis=-1)
    labels = np.zeros((rows, cols), np.uint8)
    yy, xx = np.mgrid[:rows, :cols].astype(np.float64)
    for _ in range(rng.integers(0, 3)):
        add_river(rng, data, labels, yy, xx)
    for _ in range(rng.integers(1, 4)):
        add_cyclone(rng, data, labels, yy, xx)
    return data.astype(np.float32), labels


def add_cyclone(rng, data, labels, yy, xx):
    rows, cols = labels.shape
    cy, cx = rng.uniform(0.1, 0.9) * rows, rng.uniform(0, cols)
    radius = rng.uniform(0.04, 0.07) * rows
    dy, dx = yy - cy, xx - cx
    dist = np.hypot(dy, dx)
    core = np.exp(-(dist / radius) ** 2)
    data[..., TMQ] += 30 * core
    data[..., PRECT] += 5e-4 * core
    data[..., PS] -= 3000 * core
    data[..., PSL] -= 3000 * core
    swirl = 45 * core * dist / radius / np.maximum(dist, 1e-6)  # tangential wind
    for u, v, factor in ((U850, V850, 1.0), (UBOT, VBOT, 0.8)):
        data[..., u] += -factor * swirl * dy
        data[..., v] += factor * swirl * dx
    labels[dist < 1.5 * radius] = 1


def add_river(rng, data, labels, yy, xx):
    rows, cols = labels.shape
    start = np.array([rng.uniform(0.2, 0.8) * rows, rng.uniform(0, cols)])
    angle = rng.uniform(-np.pi / 3, np.pi / 3)
    direction = np.array([np.sin(angle), np.cos(angle)])
    normal = np.array([direction[1], -direction[0]])
    length, width = rng.uniform(0.4, 0.6) * cols, rng.uniform(0.03, 0.05) * rows
    t = np.linspace(0, 1, 48)[:, None]
    path = start + t * length * direction + rng.uniform(-0.15, 0.15) * length * np.sin(
        np.pi * t) * normal
    dist = np.full(labels.shape, np.inf)
    for y, x in path:
        dist = np.minimum(dist, np.hypot(yy - y, xx - x))
    band = np.exp(-(dist / width) ** 2)
    data[..., TMQ] += 20 * band
    for u, v in ((U850, V850), (UBOT, VBOT)):
        data[..., u] += 15 * band * direction[1]
        data[..., v] += 15 * band * direction[0]
    labels[(dist < 1.5 * width) & (labels == 0)] = 2


def write_dataset(out, rows, cols, train, val, test=0, seed=0, int_labels=False):
    for split_id, (split, n) in enumerate((("train", train), ("validation", val),
                                           ("test", test))):
        if not n:
            continue
        os.makedirs(os.path.join(out, split), exist_ok=True)
        for i in range(n):
            rng = np.random.default_rng([seed, split_id, i])
            write_sample(os.path.join(out, split, f"data-{i:05d}.h5"),
                         *sample(rng, rows, cols), int_labels)
    stats.write_stats(os.path.join(out, "stats.h5"), stats.compute(out))


def write_demo(out):
    """The data configs/demo.yaml reads: <out>/full (96x144) and <out>/coarse (48x72 data,
    labels kept at 96x144); skipped when a previous call completed."""
    write_once(out, _write_demo)


def _write_demo(out):
    print(f"writing synthetic {DEMO['cols']}x{DEMO['rows']} climate samples to {out}/full")
    write_dataset(os.path.join(out, "full"), **DEMO)
    print(f"coarsening them to {out}/coarse (labels kept at full resolution)")
    coarsen_dataset(os.path.join(out, "full"), os.path.join(out, "coarse"), labels="full")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo", metavar="OUT", help="write the demo's data set to OUT")
    p.add_argument("--out")
    p.add_argument("--rows", type=int, default=768)
    p.add_argument("--cols", type=int, default=1152)
    p.add_argument("--train", type=int, default=16)
    p.add_argument("--val", type=int, default=4)
    p.add_argument("--test", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--int-labels", action="store_true", help="store labels as int32")
    a = p.parse_args(argv)
    if a.demo:
        return write_demo(a.demo)
    if not a.out:
        p.error("--out (or --demo) is required")
    write_dataset(a.out, a.rows, a.cols, a.train, a.val, a.test, a.seed, a.int_labels)
    print(f"wrote {a.train}+{a.val}+{a.test} samples of {a.cols}x{a.rows} to {a.out}")


if __name__ == "__main__":
    main()
