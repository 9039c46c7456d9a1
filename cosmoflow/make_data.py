"""Synthetic CosmoFlow universes written in the three real on-disk formats.

Each sample draws unitPar uniformly in [-1, 1]^4, maps it to (Omega_m, sigma_8, n_s, H_0), and
builds one Gaussian random field by FFT with a BBKS-like power spectrum normalised to sigma_8. The
four channels are that field at four redshifts (growth amplitudes from the Carroll-Press-Turner
formula), made log-normal and Poisson-sampled into integer counts whose mean tracks the matter
density per (Mpc/h)^3 voxel, which is proportional to Omega_m alone (h cancels in these units).
What each target leaves, from easiest to hardest to learn (README, "What the synthetic cubes
encode"): Omega_m the mean count and the growth between channels; sigma_8 the clumping; n_s how
power spreads over scales; H_0 only the transfer function's shape through Omega_m*h, a trace
too faint for these small cubes. Omega_m spans 0.20-0.40, sigma_8 0.60-1.00 and n_s 0.80-1.10,
wider than real surveys allow, so that their imprints stand out of the shot noise of small
cubes from the first epochs on.

    python -m cosmoflow.make_data --format tfrecord --out data/cosmo --size 32 \
        --train 64 --val 16 [--gzip]
    python -m cosmoflow.make_data --format hdf5 --out data/seed --size 32 --train 256 \
        --val 64 --test 64 --samples-per-file 128
    python -m cosmoflow.make_data --format raw --out data/raw --size 64 --train 4 --val 1

Layouts: tfrecord -> <out>/{train,validation}/univ_<i>.tfrecord (one Example each);
hdf5 -> <out>/<prefix>-rec<idx>.h5 plus <out>/split.yaml (file indices per split);
raw -> <out>/{train,validation}/univ_<i>.h5 where --size is the universe edge.
"""
import argparse
import os

import h5py
import numpy as np
import yaml

from common.demo import write_once

PARAM_CENTRE = np.array([0.30, 0.80, 0.95, 70.0])
PARAM_HALF_RANGE = np.array([0.10, 0.20, 0.15, 10.0])
REDSHIFTS = (0.0, 0.5, 1.5, 3.0)  # the four CosmoFlow snapshots, one per channel
VOXEL_MPC_H = 8.0  # voxel edge in Mpc/h: keeps the log-normal tails (and 2x2x2 sums) within int16
MEAN_COUNT = 4.0  # tracers per voxel at Omega_m = 0.3
SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}
INT16_MAX = np.iinfo(np.int16).max


def physical_params(unit_par):
    """unitPar in [-1, 1]^4 -> (Omega_m, sigma_8, n_s, H_0)."""
    return PARAM_CENTRE + PARAM_HALF_RANGE * np.asarray(unit_par, np.float64)


def bbks_transfer(k, gamma):
    q = np.maximum(k, 1e-12) / gamma
    poly = 1 + 3.89 * q + (16.1 * q) ** 2 + (5.46 * q) ** 3 + (6.71 * q) ** 4
    return np.log1p(2.34 * q) / (2.34 * q) * poly ** -0.25


def shape_of_spectrum(k, omega_m, n_s, h):
    """Un-normalised linear P(k) (k in h/Mpc)."""
    return k ** n_s * bbks_transfer(k, omega_m * h) ** 2


def sigma_r_squared(omega_m, n_s, h, radius=8.0):
    """Variance in top-hat spheres of `radius` Mpc/h for the un-normalised spectrum."""
    k = np.logspace(-4, 2, 2000)
    x = k * radius
    window = 3 * (np.sin(x) - x * np.cos(x)) / x ** 3
    integrand = k ** 3 * shape_of_spectrum(k, omega_m, n_s, h) * window ** 2 / (2 * np.pi ** 2)
    return integrand.sum() * np.log(k[1] / k[0])  # uniform log grid; the ends are negligible


def growth_factor(z, omega_m):
    """Linear growth D(z)/D(0) in flat LambdaCDM (Carroll, Press & Turner 1992)."""
    def g(om, ol):
        return 2.5 * om / (om ** (4 / 7) - ol + (1 + om / 2) * (1 + ol / 70))

    e2 = omega_m * (1 + z) ** 3 + 1 - omega_m
    om_z, ol_z = omega_m * (1 + z) ** 3 / e2, (1 - omega_m) / e2
    return g(om_z, ol_z) / (1 + z) / g(omega_m, 1 - omega_m)


def gaussian_field(rng, size, omega_m, sigma_8, n_s, h):
    """Unit-cell Gaussian density field on a periodic size^3 grid with the sigma_8-normed P(k)."""
    k1 = 2 * np.pi * np.fft.fftfreq(size, d=VOXEL_MPC_H)
    kz = 2 * np.pi * np.fft.rfftfreq(size, d=VOXEL_MPC_H)
    k = np.sqrt(k1[:, None, None] ** 2 + k1[None, :, None] ** 2 + kz[None, None, :] ** 2)
    power = sigma_8 ** 2 * shape_of_spectrum(k, omega_m, n_s, h) / sigma_r_squared(omega_m, n_s, h)
    power[0, 0, 0] = 0.0  # the box mean is fixed by the tracer density, not the field
    # White noise times sqrt(P / V_cell) gives the continuum variance sum_k P(k) / V_box.
    noise = np.fft.rfftn(rng.standard_normal((size,) * 3))
    return np.fft.irfftn(noise * np.sqrt(power / VOXEL_MPC_H ** 3), s=(size,) * 3)


def universe(rng, size, unit_par):
    """Integer counts (size, size, size, 4) for one draw of the cosmology `unit_par`."""
    omega_m, sigma_8, n_s, h0 = physical_params(unit_par)
    field = gaussian_field(rng, size, omega_m, sigma_8, n_s, h0 / 100)
    var = field.var()
    # Not times h^2 (a density per Mpc^3): that ties Omega_m and H_0 into one trace, which a
    # network learnt first before a plateau at MAE 0.42 (README, "What the synthetic cubes
    # encode").
    mean_count = MEAN_COUNT * (omega_m / 0.3)
    channels = []
    for z in REDSHIFTS:
        d = growth_factor(z, omega_m)
        density = np.exp(d * field - d ** 2 * var / 2)  # log-normal with mean 1
        channels.append(rng.poisson(mean_count * density))
    counts = np.stack(channels, axis=-1)
    if counts.max() > INT16_MAX:
        raise OverflowError(f"counts reach {counts.max()} > int16 max; lower MEAN_COUNT")
    return counts.astype(np.int16)


def draw_samples(n, size, seed, split):
    """Yields (counts int16 (size,size,size,4), unitPar float32 (4,)) deterministically."""
    for i in range(n):
        rng = np.random.default_rng([seed, SPLIT_IDS[split], i])
        unit_par = rng.uniform(-1, 1, 4)
        yield universe(rng, size, unit_par), unit_par.astype(np.float32)


def split_counts(train, val, test):
    return {name: n for name, n in (("train", train), ("validation", val), ("test", test)) if n}


def write_tfrecord(out, size, train, val, test=0, seed=0, gzip=False):
    """MLPerf layout: <out>/<split>/univ_<i>.tfrecord, one Example with x (int16 bytes) and y."""
    for split, n in split_counts(train, val, test).items():
        os.makedirs(os.path.join(out, split), exist_ok=True)
        for i, (counts, unit_par) in enumerate(draw_samples(n, size, seed, split)):
            write_tfrecord_sample(os.path.join(out, split, f"univ_{i:05d}.tfrecord"),
                                  counts, unit_par, gzip)


def write_tfrecord_sample(path, counts, unit_par, gzip=False):
    """One tf.train.Example file: x = little-endian int16 bytes of `counts`, y = `unit_par`."""
    import tensorflow as tf  # imported here: slow to load and only this format needs it

    example = tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[np.asarray(counts).astype("<i2").tobytes()])),
        "y": tf.train.Feature(float_list=tf.train.FloatList(value=unit_par)),
    }))
    options = tf.io.TFRecordOptions(compression_type="GZIP" if gzip else "")
    with tf.io.TFRecordWriter(os.fspath(path), options) as writer:
        writer.write(example.SerializeToString())


def write_hdf5(out, size, train, val, test=0, seed=0, samples_per_file=128, prefix="cosmo"):
    """Seed layout: <out>/<prefix>-rec<idx>.h5 with 3Dmap (N,D,D,D,4) float32 counts and unitPar
    (N,4), files numbered consecutively over train, validation, test; split.yaml lists them."""
    os.makedirs(out, exist_ok=True)
    split_files, next_idx = {}, 0
    for split, n in split_counts(train, val, test).items():
        samples = draw_samples(n, size, seed, split)
        split_files[split] = []
        for start in range(0, n, samples_per_file):
            rows = min(samples_per_file, n - start)
            path = os.path.join(out, f"{prefix}-rec{next_idx}.h5")
            with h5py.File(path, "w") as f:
                # One chunk per sample so the loader reads a row without touching its neighbours.
                maps = f.create_dataset("3Dmap", (rows, size, size, size, 4), np.float32,
                                        chunks=(1, size, size, size, 4))
                pars = f.create_dataset("unitPar", (rows, 4), np.float32)
                for row in range(rows):
                    maps[row], pars[row] = next(samples)
            split_files[split].append(next_idx)
            next_idx += 1
    with open(os.path.join(out, "split.yaml"), "w") as f:
        yaml.safe_dump(split_files, f, default_flow_style=None)


def write_raw(out, size, train, val, test=0, seed=0):
    """ExaLearn layout: <out>/<split>/univ_<i>.h5 with full (S,S,S,4) int16 and unitPar (4,)."""
    for split, n in split_counts(train, val, test).items():
        os.makedirs(os.path.join(out, split), exist_ok=True)
        for i, (counts, unit_par) in enumerate(draw_samples(n, size, seed, split)):
            with h5py.File(os.path.join(out, split, f"univ_{i:05d}.h5"), "w") as f:
                f["full"], f["unitPar"] = counts, unit_par


def write_demo(out):
    """The data configs/demo.yaml reads: 256 + 64 cubes of 32^3 in <out>/full, 16^3 copies in
    <out>/coarse. Skipped when a previous call completed."""
    write_once(out, _write_demo)


def _write_demo(out):
    from cosmoflow.coarsen import coarsen_tfrecord_dataset

    print(f"writing synthetic 32^3 cubes (MLPerf TFRecord) to {out}/full")
    write_tfrecord(os.path.join(out, "full"), size=32, train=256, val=64, seed=0)
    print(f"coarsening them to 16^3 in {out}/coarse")
    coarsen_tfrecord_dataset(os.path.join(out, "full"), os.path.join(out, "coarse"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo", metavar="OUT",
                   help="write the dataset of configs/demo.yaml to OUT; other options ignored")
    p.add_argument("--format", choices=("tfrecord", "hdf5", "raw"))
    p.add_argument("--out", help="output folder (created)")
    p.add_argument("--size", type=int,
                   help="cube edge D; for raw the universe edge, which the loader cuts into "
                        "(size/resolution)^3 sub-volumes")
    p.add_argument("--train", type=int, help="training samples (raw: universes)")
    p.add_argument("--val", type=int, help="validation samples (raw: universes)")
    p.add_argument("--test", type=int, default=0, help="test samples (raw: universes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gzip", action="store_true", help="tfrecord: GZIP-compress each file")
    p.add_argument("--samples-per-file", type=int, default=128, help="hdf5: rows per file")
    p.add_argument("--prefix", default="cosmo", help="hdf5: files are <prefix>-rec<idx>.h5")
    args = p.parse_args(argv)
    missing = [f"--{k}" for k in ("format", "out", "size", "train", "val")
               if getattr(args, k) is None]
    if not args.demo and missing:
        p.error(f"the following arguments are required: {', '.join(missing)}")
    return args


def main(argv=None):
    a = parse_args(argv)
    if a.demo:
        write_demo(a.demo)
        return
    common = dict(out=a.out, size=a.size, train=a.train, val=a.val, test=a.test, seed=a.seed)
    if a.format == "tfrecord":
        write_tfrecord(gzip=a.gzip, **common)
    elif a.format == "hdf5":
        write_hdf5(samples_per_file=a.samples_per_file, prefix=a.prefix, **common)
    else:
        write_raw(**common)
    print(f"wrote {a.format} data to {a.out}")


if __name__ == "__main__":
    main()
