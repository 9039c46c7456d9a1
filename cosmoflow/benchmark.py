"""CosmoFlow throughput on this machine: training samples/s on an in-memory batch and on real
files, the input pipeline alone, Keras model.fit on the same network and batch, and over whole
runs our Trainer against the MLPerf reference (stock Keras layers, its own input pipeline,
model.fit) on the same files (cosmoflow/epochs_bench.py).

    python scripts/benchmark.py --app cosmoflow [--config cosmoflow/configs/mlperf.yaml]
        [--data-dir DIR] [--local-batch 4] [--steps 10] [--repeats 3] [--epochs 4]
        [--set KEY=VALUE] [--staging [--stage-dir /dev/shm/NAME]]

Without --data-dir it writes synthetic TFRecords at the config's last-stage resolution, GZIP
compressed when the config says so. --staging instead compares reading GZIP files, the same
files plain, and the GZIP files staged (decompressed) to --stage-dir by data.stage_dir: the
input pipeline alone and training, each from all three.
"""
import argparse
import dataclasses
import glob
import gzip
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from benchmarks.bench import endless, load_config, measure, print_rates, ratio, stepper, training
from benchmarks.scaling import ScalingApp
from common.distributed import init_world
from common.logs import get_logger
from common.optimizers import make_optimizer
from cosmoflow import make_data
from cosmoflow.data import sample_shape
from cosmoflow.epochs_bench import compare_epochs
from cosmoflow.train import APP, DEFAULTS, make_task


def random_batch(stage, local_batch, rng):
    """log(counts + 1) cubes and parameters in [-1, 1]: a step's cost does not depend on the
    values, only on their shapes."""
    counts = rng.poisson(3.0, (local_batch, *sample_shape(stage.data)))
    return (np.log1p(counts).astype(np.float32),
            rng.uniform(-1, 1, (local_batch, 4)).astype(np.float32),
            np.ones(local_batch, np.float32))


# The scaling mode measures the MLPerf network on 32^3 cubes (1.5M of its 5.6M parameters)
SCALING = ScalingApp(DEFAULTS, make_task, APP.full_size_config, random_batch,
                     modest=["data.resolution=32"], local_batch=4,
                     overlap=(0.427, "the demo network in 3 buckets of 0.25 MB on 2 CPU ranks, "
                                     "oneDNN, 2 inter-op threads (docs/performance.md)"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=APP.full_size_config)
    parser.add_argument("--data-dir", help="real files (default: synthetic files written here)")
    parser.add_argument("--local-batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10,
                        help="timed steps per repeat (0: skip the per-step table)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4,
                        help="epochs of each whole run against the MLPerf reference (0: skip "
                             "those runs; at least 2: the first epoch holds the trace)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--staging", action="store_true",
                        help="GZIP files vs plain files vs GZIP files staged to --stage-dir")
    parser.add_argument("--pipeline-steps", type=int, default=24,
                        help="--staging: timed batches per pipeline repeat (well past the "
                             "prefetch buffer, which fills while other figures are measured)")
    parser.add_argument("--stage-dir", help="data.stage_dir of --staging (default: a temporary "
                                            "folder next to the synthetic data)")
    args = parser.parse_args(argv)
    if args.epochs == 1 or args.epochs < 0:
        parser.error("--epochs: 0 (skip the whole runs) or at least 2")
    if args.steps < 0 or not (args.steps or args.epochs or args.staging):
        parser.error("--steps 0 --epochs 0: nothing to measure")
    if args.staging and args.data_dir:
        parser.error("--staging writes its own synthetic files; drop --data-dir")
    return args


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cosmoflow-bench-") as work:
        return benchmark(args, work)


def benchmark(args, work):
    cfg, stage = load_config(DEFAULTS, args.config, args.set)
    world = init_world()
    batch = args.local_batch
    if args.staging:
        return staging_benchmark(args, work, cfg, stage, world)
    if args.data_dir:
        stage.data["root"] = args.data_dir
    else:
        stage.data["root"] = work
        size = stage.data["resolution"]
        print(f"writing {8 * batch} synthetic {size}^3 samples to {stage.data['root']}")
        make_data.write_tfrecord(stage.data["root"], size=size, train=8 * batch, val=2, seed=0,
                                 gzip=stage.data["compression"] == "gzip")
    rates, ratios = step_table(args, cfg, stage, world) if args.steps else ({}, {})
    if args.epochs:
        epoch_rates, epoch_ratios = compare_epochs(args, stage, world, os.path.join(work, "runs"))
        rates.update(epoch_rates)
        ratios.update(epoch_ratios)
    return rates, ratios


def step_table(args, cfg, stage, world):
    """Training steps on an in-memory batch, from files and through Keras fit; the pipeline."""
    batch, task = args.local_batch, make_task(cfg)
    train_data, _ = task.make_datasets(stage, batch, world, 0)
    file_batches = endless(train_data)
    x, y, w = next(endless(train_data))

    keras_model = task.build_model(stage)
    keras_model.compile(make_optimizer(stage.train, stage.train["lr"]["base"]),
                        loss=lambda yt, yp: task.loss(yt, yp))
    in_memory = tf.data.Dataset.from_tensors((x, y)).repeat()

    def keras_fit(n):
        keras_model.fit(in_memory, steps_per_epoch=n, epochs=1, verbose=0)

    rates = measure({
        "input pipeline only": (stepper(endless(train_data)), batch),
        "train, in-memory batch": (training(task, stage, world, lambda: (x, y, w)), batch),
        "train, real files": (training(task, stage, world, lambda: next(file_batches)), batch),
        "keras model.fit, in-memory": (keras_fit, batch)}, args.steps, args.repeats)
    shape = "x".join(map(str, x.shape[1:]))
    print_rates(f"cosmoflow {stage.model['name']} network, input {shape}, local batch {batch}, "
                f"{world.size} rank(s), {args.steps} steps x {args.repeats} repeats, "
                "median [min - max]:", rates)
    ratios = {"pipeline / training from files": ratio(rates, "input pipeline only",
                                                      "train, real files"),
              "trainer / keras fit": ratio(rates, "train, in-memory batch",
                                           "keras model.fit, in-memory")}
    for name, value in ratios.items():
        print(f"  {name:40s} {value:10.2f} x")
    return rates, ratios


def gzip_copy(plain_root, gzip_root):
    """The same TFRecord files GZIP compressed, as the MLPerf dataset ships them (zlib's default
    level, as TFRecordWriter's GZIP option)."""
    for path in glob.glob(os.path.join(plain_root, "*", "*.tfrecord")):
        target = os.path.join(gzip_root, os.path.relpath(path, plain_root))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(path, "rb") as src, gzip.open(target, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst)


def staging_benchmark(args, work, cfg, stage, world):
    """Pipeline and training samples/s from GZIP files, plain files and the staged GZIP files."""
    batch, size = args.local_batch, stage.data["resolution"]
    roots = {"GZIP files": os.path.join(work, "gzip"), "plain files": os.path.join(work, "plain")}
    print(f"writing {8 * batch} synthetic {size}^3 samples, plain and GZIP, to {work}")
    make_data.write_tfrecord(roots["plain files"], size=size, train=8 * batch, val=2, seed=0)
    gzip_copy(roots["plain files"], roots["GZIP files"])
    get_logger(world)  # prints the staging line: files, bytes, seconds
    stage_dir = args.stage_dir or os.path.join(work, "stage")
    sources = {name: {"root": root, "compression": "auto", "stage_dir": ""}
               for name, root in roots.items()}
    sources["staged files"] = {"root": roots["GZIP files"], "compression": "auto",
                               "stage_dir": stage_dir}
    task = make_task(cfg)
    data = {name: task.make_datasets(dataclasses.replace(stage, data={**stage.data, **over}),
                                     batch, world, 0)[0] for name, over in sources.items()}
    rates = measure({f"pipeline, {name}": (stepper(endless(ds)), batch)
                     for name, ds in data.items()}, args.pipeline_steps, args.repeats)
    train_fns = {}
    for name, ds in data.items():
        batches = endless(ds)
        train_fns[f"train, {name}"] = (training(task, stage, world, lambda b=batches: next(b)),
                                       batch)
    rates.update(measure(train_fns, args.steps, args.repeats))
    print_rates(f"cosmoflow {stage.model['name']} network, input {size}^3x4, local batch "
                f"{batch}, {world.size} rank(s), {args.pipeline_steps} pipeline / {args.steps} "
                f"training steps x {args.repeats} repeats, median [min - max]:", rates, scale={
                    name: size ** 3 * 4 * 2 / 1e6 for name in rates if name.startswith("pipe")})
    ratios = {"pipeline staged / GZIP": ratio(rates, "pipeline, staged files",
                                              "pipeline, GZIP files"),
              "train staged / GZIP": ratio(rates, "train, staged files", "train, GZIP files")}
    for name, value in ratios.items():
        print(f"  {name:40s} {value:10.2f} x")
    if args.stage_dir:
        print(f"staged copies left in {stage_dir} (reused by the next run)")
    return rates, ratios


if __name__ == "__main__":
    main()
