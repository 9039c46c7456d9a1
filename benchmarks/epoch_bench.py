"""Step-speed settings measured the way users train: whole epochs of the Trainer, several of them,
each setting in turn, round-robin over repeats so that a noisy neighbour slows them alike.

    python -m benchmarks.epoch_bench --app cosmoflow [--epochs 4] [--repeats 3]

Trains the app's single-stage config (App.single_stage_config, common/apps.py) on its demo data
(written to a temporary folder) once per setting and repeat, on one process, and reports per
setting the median [min - max] of the training samples/s of every epoch after the first (the
first holds the trace), the ratio to the default Trainer (median of per-repeat ratios), and the
last validation metric. Keras `model.fit` on the same network, data, batch and optimizer is the
reference a user would reach for first.

TensorFlow is imported by the functions that train, after main has loaded the app: the app picks
TensorFlow's CPU kernels before TensorFlow loads (common/cpu_kernels.py), as when users train.
"""
import argparse
import logging
import os
import statistics
import tempfile
import time

from benchmarks.bench import load_config, number, spread
from common import apps

SETTINGS = {  # name -> config assignments (None: Keras model.fit)
    "trainer (defaults)": [],
    "loss read back every step": ["log.every_steps=1"],
    "mixed_bfloat16": ["train.precision=mixed_bfloat16"],
    "XLA (jit_compile)": ["train.jit_compile=true"],
    "8 steps per call": ["train.steps_per_call=8"],
    # twice the global batch from the same micro-batch: what the loop over micro-batches costs
    "accumulate_steps 2": ["train.accumulate_steps=2"],
    "keras model.fit": None,
}


def trainer_run(app, config, sets, epochs, out):
    """(samples/s of each epoch after the first, last record) of one Trainer run."""
    history, setup, _ = run_trainer(app, config, sets, epochs, out)
    samples = setup.train_data.steps_per_epoch * setup.global_batch
    return [samples / r["epoch_s"] for r in history[1:]], history[-1]


def run_trainer(app, config, sets, epochs, out, world=None):
    """(epoch records, last stage's setup, seconds of the whole run) of the Trainer on the
    config with `sets`, every stage `epochs` long."""
    import tensorflow as tf
    from common.distributed import World
    from common.trainer import Trainer

    start = time.perf_counter()
    cfg, _ = load_config(app.defaults, config, sets + [f"output_dir={out}"], {"epochs": epochs})
    tf.keras.utils.set_random_seed(cfg["seed"])
    logger = logging.getLogger("epoch_bench")
    logger.setLevel(logging.WARNING)
    trainer = Trainer(cfg, app.make_task(cfg), world or World(), logger)
    history = trainer.fit()
    return history, trainer.setups[-1], time.perf_counter() - start


def keras_fit_run(app, config, sets, epochs, out):
    """The same network, data, batch and optimizer (constant LR) trained by model.fit."""
    import tensorflow as tf
    from common.distributed import World
    from common.optimizers import make_optimizer

    cfg, stage = load_config(app.defaults, config, sets + [f"output_dir={out}"],
                             {"epochs": epochs})
    tf.keras.utils.set_random_seed(cfg["seed"])
    task = app.make_task(cfg)
    train, _ = task.make_datasets(stage, stage.train["local_batch"], World(), cfg["seed"])
    model = task.build_model(stage)
    model.compile(make_optimizer(stage.train, stage.train["lr"]["base"]),
                  loss=lambda y, p: task.loss(y, tf.cast(p, tf.float32)))
    batches, seconds = train.steps_per_epoch * train.local_batch, []
    for epoch in range(stage.epochs):  # the Trainer's epoch order; timed as its epochs are,
        start = time.perf_counter()    # the input pipeline's start included
        model.fit(train.epoch(epoch), epochs=1, verbose=0)
        seconds.append(time.perf_counter() - start)
    return [batches / s for s in seconds[1:]], {}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", choices=apps.REGISTERED, default="cosmoflow")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settings", nargs="*", choices=list(SETTINGS), default=list(SETTINGS),
                        help="which settings to measure (default: all)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config overrides for every setting (e.g. smaller data or network)")
    args = parser.parse_args(argv)
    app = apps.load(args.app)  # first: the app picks TensorFlow's CPU kernels
    with tempfile.TemporaryDirectory(prefix=f"epoch-bench-{args.app}-") as tmp:
        data = os.path.join(tmp, "data")
        app.hook("write_demo")(data)
        sets = [f"data.root={data}", "log.progress=false", *args.set]
        rates = {name: [] for name in args.settings}
        last = {}
        for repeat in range(args.repeats):
            for name in args.settings:
                run = keras_fit_run if SETTINGS[name] is None else trainer_run
                out = os.path.join(tmp, f"run{repeat}-{len(rates[name])}-{hash(name)}")
                epoch_rates, last[name] = run(app, app.single_stage_config,
                                              sets + (SETTINGS[name] or []), args.epochs, out)
                rates[name].append(statistics.median(epoch_rates))
                rates.setdefault(f"{name} (epochs)", []).extend(epoch_rates)
    report(args, app.single_stage_config, rates, last)
    return rates


def report(args, config, rates, last):
    print(f"{args.app}: {config}, {args.epochs} epochs x {args.repeats} repeats,"
          " 1 process; samples/s of the epochs after the first")
    base = rates.get("trainer (defaults)")
    for name in args.settings:
        mid, low, high = spread(rates[f"{name} (epochs)"])
        line = f"  {name:28s} {number(mid):>9s} samples/s  [{number(low)} - {number(high)}]"
        if base and name != "trainer (defaults)":
            ratios = [x / y for x, y in zip(rates[name], base)]
            line += f"  x{statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]"
        metric = next((f"{k} {v:.4g}" for k, v in last[name].items()
                       if k.startswith("val_") and k != "val_loss"), "")
        print(line + (f"  last {metric}" if metric else ""))


if __name__ == "__main__":
    main()
