"""DeepCAM throughput on this machine: the input pipeline from HDF5 and from the raw fast path
(samples/s and MB/s, and as a fraction of reading the same files from the page cache), and
training samples/s of the full network and a thin one, on an in-memory batch and from files.

    python scripts/benchmark.py --app deepcam [--data-dir ROOT] [--shape 768 1152]
        [--nets full thin] [--steps 1] [--repeats 3] [--samples 8]

ROOT holds the HDF5 layout (train/data-*.h5 and stats.h5); without it synthetic samples are
written to a temporary folder. The raw copy is written next to them with deepcam.convert.
"""
import argparse
import glob
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from benchmarks.bench import endless, load_config, measure, print_rates, ratio, stepper, training
from benchmarks.scaling import ScalingApp
from common.distributed import init_world
from deepcam import convert, data, make_data
from deepcam.train import APP, DEFAULTS, make_task

NETS = {"full": {"width": 1.0, "middle_blocks": 16},   # the reference network
        "thin": {"width": 0.25, "middle_blocks": 4}}
H100_SAMPLES_PER_S = 82  # one GPU's training rate in the MLPerf HPC v3.0 results


def random_batch(stage, local_batch, rng):
    """Normalised fields and labels of the 3 classes: a step's cost depends on shapes only."""
    rows, cols = stage.data["shape"]
    channels = len(data.channel_indices(stage.data))
    return (rng.standard_normal((local_batch, rows, cols, channels)).astype(np.float32),
            rng.integers(0, 3, (local_batch, rows, cols)).astype(np.int32),
            np.ones(local_batch, np.float32))


# The scaling mode measures the thin network on 96x144 fields; the full one is the config's.
SCALING = ScalingApp(DEFAULTS, make_task, APP.full_size_config, random_batch,
                     modest=["model.width=0.25", "model.middle_blocks=4", "data.shape=[96,144]"],
                     local_batch=2,
                     overlap=(0.387, "the demo network in 5 buckets of 0.25 MB on 2 CPU ranks, "
                                     "oneDNN, 2 inter-op threads (docs/performance.md)"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=APP.full_size_config)
    p.add_argument("--data-dir", help="HDF5 root (default: synthetic samples written here)")
    p.add_argument("--shape", type=int, nargs=2, default=[768, 1152], metavar=("H", "W"))
    p.add_argument("--samples", type=int, default=8, help="synthetic training samples")
    p.add_argument("--nets", nargs="*", choices=sorted(NETS), default=["full", "thin"])
    p.add_argument("--pipeline-steps", type=int, default=8, help="samples per pipeline repeat")
    p.add_argument("--steps", type=int, default=1, help="training steps per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    return p.parse_args(argv)


def file_reader(samples, threads):
    """fn(n): read the files of n samples (cycling) into memory with `threads` threads: the
    page cache's rate, the limit for any pipeline once the files are cached."""
    cursor = [0]

    def read(path):
        with open(path, "rb") as f:
            return len(f.read())

    def run(n):
        chosen = [path for i in range(n) for path in samples[(cursor[0] + i) % len(samples)]]
        cursor[0] += n
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(read, chosen))
    return run


def write_synthetic(root, shape, samples):
    print(f"writing {samples} synthetic {shape[1]}x{shape[0]} samples to {root}")
    make_data.write_dataset(root, shape[0], shape[1], train=samples, val=1)
    return root


def pipelines(stage, root, raw_root, args):
    """Pipeline rates for both formats and the page cache's rate on the same files."""
    datasets, files, sample_mb = {}, {}, {}
    roots = {"hdf5": root, "raw": raw_root}
    for fmt, folder in roots.items():
        cfg = dict(stage.data, format=fmt, root=folder)
        datasets[fmt] = data.split_dataset(cfg, "train", 1)
        if fmt == "hdf5":
            files[fmt] = [sorted(glob.glob(os.path.join(folder, "train", "data-*.h5")))]
        else:
            paths = sorted(glob.glob(os.path.join(folder, "train", "*.data")))
            files[fmt] = [paths, [p[:-5] + ".label" for p in paths]]
        sample_mb[fmt] = sum(os.path.getsize(group[0]) for group in files[fmt]) / 1e6
    threads = os.cpu_count()
    fns, scale = {}, {}
    for fmt in datasets:
        fns[f"pipeline, {fmt}"] = (stepper(endless(datasets[fmt])), 1)
        fns[f"page-cache read, {fmt} files"] = (file_reader(list(zip(*files[fmt])), threads), 1)
        scale[f"pipeline, {fmt}"] = scale[f"page-cache read, {fmt} files"] = sample_mb[fmt]
    rates = measure(fns, args.pipeline_steps, args.repeats)
    print_rates(f"deepcam input pipeline, {stage.data['shape'][0]}x{stage.data['shape'][1]}x"
                f"{stage.data['num_channels']} samples, local batch 1, {threads} cores, "
                f"{args.pipeline_steps} samples x {args.repeats} repeats, median [min - max]:",
                rates, scale=scale)
    fractions = {fmt: ratio(rates, f"pipeline, {fmt}", f"page-cache read, {fmt} files")
                 for fmt in datasets}
    for fmt, value in fractions.items():
        print(f"  {fmt} pipeline / page-cache read of its files  {value:6.2f}")
    for fmt in datasets:
        per_core = np.median(rates[f"pipeline, {fmt}"]) / threads
        print(f"  cores to feed one H100 ({H100_SAMPLES_PER_S} samples/s) from {fmt}: "
              f"{H100_SAMPLES_PER_S / per_core:.0f} at this machine's per-core rate")
    return datasets, rates, fractions


def train_rates(cfg, stage, world, datasets, net, args):
    stage.model.update(NETS[net])
    task = make_task(cfg)
    x, y, w = next(endless(datasets["raw"]))
    sources = {"in-memory batch": lambda: (x, y, w)}
    for fmt in datasets:
        batches = endless(datasets[fmt])
        sources[f"{fmt} files"] = lambda batches=batches: next(batches)
    rates = measure({f"train {net}, {name}": (training(task, stage, world, source), 1)
                     for name, source in sources.items()}, args.steps, args.repeats)
    print_rates(f"deepcam {net} network (width {NETS[net]['width']}, "
                f"{NETS[net]['middle_blocks']} middle blocks), local batch 1, {args.steps} "
                f"step(s) x {args.repeats} repeats, median [min - max]:", rates)
    for name, values in rates.items():
        print(f"  {name}: {H100_SAMPLES_PER_S / np.median(values):.0f}x slower than one H100")
    return rates


def main(argv=None):
    args = parse_args(argv)
    cfg, stage = load_config(DEFAULTS, args.config, args.set)
    stage.data.update(shape=list(args.shape), max_train=None)
    world = init_world()
    with tempfile.TemporaryDirectory(prefix="deepcam-bench-") as work:
        root = args.data_dir or write_synthetic(os.path.join(work, "hdf5"), args.shape,
                                                args.samples)
        convert.convert(root, os.path.join(work, "raw"))
        datasets, rates, fractions = pipelines(stage, root, os.path.join(work, "raw"), args)
        for net in args.nets:
            rates.update(train_rates(cfg, stage, world, datasets, net, args))
    return rates, fractions


if __name__ == "__main__":
    main()
