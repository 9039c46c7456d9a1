"""EDSR throughput on this machine: training samples/s of the seed network (16 blocks x 256
filters) and a thin one at the seed's crop and local batch, the random-crop input pipeline alone
and its ratio to training, and full-image evaluation images/s.

    python scripts/benchmark.py --app edsr [--data-dir ROOT] [--crop 32] [--local-batch 16]
        [--nets seed thin] [--steps 2] [--eval-steps 1] [--repeats 3]

ROOT holds the real layout ({train,val}/{HR,LR}/<id>.png); without it a synthetic 640x312 set is
written to a temporary folder.
"""
import argparse
import tempfile

import numpy as np

from benchmarks.bench import endless, load_config, measure, print_rates, ratio, stepper, training
from benchmarks.scaling import ScalingApp
from common.distributed import init_world
from common.steps import make_eval_step
from edsr import data, make_data
from edsr.train import APP, DEFAULTS, make_task

NETS = {"seed": {"layers": 16, "filters": 256}, "thin": {"layers": 4, "filters": 32}}


def random_batch(stage, local_batch, rng):
    """JPEG crops and (HR, JPEG) targets as the crop pipeline yields them: a step's cost
    depends on shapes only."""
    crop, depth = stage.data["crop"], stage.data["depth"]
    x = rng.integers(0, 256, (local_batch, crop, crop, depth)).astype(np.float32)
    hr = rng.integers(0, 256, x.shape).astype(np.float32)
    return x, np.concatenate([hr, x], axis=-1), np.ones(local_batch, np.float32)


# The scaling mode measures the thin network at the seed's 32x32 crops and local batch 16 (the
# seed's whole batch on each rank); the full network is the seed's 16 x 256.
SCALING = ScalingApp(DEFAULTS, make_task, APP.full_size_config, random_batch,
                     modest=[f"model.{key}={value}" for key, value in NETS["thin"].items()],
                     local_batch=16,
                     overlap=(0.57, "the demo network in 5 buckets of 0.05 MB on 2 CPU ranks, "
                                    "Eigen, 2 inter-op threads (docs/performance.md)"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=APP.full_size_config)
    p.add_argument("--data-dir", help="image root (default: a synthetic set written here)")
    p.add_argument("--shape", type=int, nargs=2, default=[312, 640], metavar=("ROWS", "COLS"),
                   help="image size of the synthetic set")
    p.add_argument("--images", type=int, default=32, help="synthetic training images")
    p.add_argument("--crop", type=int, default=32)
    p.add_argument("--local-batch", type=int, default=16)
    p.add_argument("--eval-batch", type=int, default=1, help="full images per evaluation step")
    p.add_argument("--nets", nargs="*", choices=sorted(NETS), default=["seed", "thin"])
    p.add_argument("--steps", type=int, default=2, help="training steps per repeat")
    p.add_argument("--pipeline-steps", type=int, default=50, help="pipeline batches per repeat")
    p.add_argument("--eval-steps", type=int, default=1, help="evaluation steps per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    return p.parse_args(argv)


def evaluation(task, stage, batches):
    """fn(n): n full-image evaluation steps (loss and every metric, summed as validation does)."""
    model = task.build_model(stage)
    step = make_eval_step(model, task.loss, list(task.metrics.values()))

    def run(n):
        for _ in range(n):
            step(*next(batches)).numpy()
    return run


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edsr-bench-") as work:
        return benchmark(args, work)


def benchmark(args, work):
    cfg, stage = load_config(DEFAULTS, args.config, args.set)
    world = init_world()
    if args.data_dir:
        stage.data["root"] = args.data_dir
    else:
        stage.data.update(root=work, num_rows=args.shape[0], num_cols=args.shape[1])
        print(f"writing {args.images} synthetic {args.shape[1]}x{args.shape[0]} image pairs "
              f"to {stage.data['root']}")
        make_data.write_dataset(stage.data["root"], *args.shape, train=args.images, val=8, test=0)
    stage.data.update(crop=args.crop, eval_batch=args.eval_batch, max_train=None, max_val=None)
    batch = args.local_batch
    train_data, val_data = data.make_datasets(stage.data, batch, world, 0)
    x, y, w = next(endless(train_data))
    file_batches = endless(train_data)

    fns, evals = {}, {}
    for net in args.nets:
        stage.model.update(NETS[net])
        task = make_task(cfg)
        fns[f"train {net}, in-memory batch"] = (training(task, stage, world, lambda: (x, y, w)),
                                               batch)
        fns[f"train {net}, crop pipeline"] = (
            training(task, stage, world, lambda: next(file_batches)), batch)
        evals[f"evaluate {net}, full images"] = (
            evaluation(task, stage, endless(val_data)), args.eval_batch)
    rates = measure({"crop pipeline only": (stepper(endless(train_data)), batch)},
                    args.pipeline_steps, args.repeats)
    rates.update(measure(fns, args.steps, args.repeats))
    print_rates(f"edsr training, crop {args.crop}, local batch {batch}, {world.size} rank(s), "
                f"{args.steps} steps (pipeline: {args.pipeline_steps} batches) x {args.repeats} "
                "repeats, median [min - max]:", rates)
    eval_rates = measure(evals, args.eval_steps, args.repeats)
    print_rates(f"edsr evaluation, full {stage.data['num_cols']}x{stage.data['num_rows']} "
                f"images, {args.eval_batch} per step, {args.eval_steps} step(s) x "
                f"{args.repeats} repeats, median [min - max]:", eval_rates, unit="images/s")
    rates.update(eval_rates)
    ratios = {f"crop pipeline / training {net}": ratio(rates, "crop pipeline only",
                                                       f"train {net}, crop pipeline")
              for net in args.nets}
    for name, value in ratios.items():
        print(f"  {name:40s} {value:10.2f} x")
    return rates, ratios


if __name__ == "__main__":
    main()
