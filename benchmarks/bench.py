"""What every app's benchmark (<app>/benchmark.py, run as scripts/benchmark.py --app APP) shares:
rates measured round-robin in one run, so that a noisy neighbour slows every measurement alike,
reported as medians with their spread; ratios are medians of per-repeat ratios.

Importing it loads no TensorFlow (only `training` does), so a tool can load its app first
(common/apps.py: the app picks TensorFlow's CPU kernels)."""
import statistics
import time

from common.config import COMMON_DEFAULTS, merge_defaults, resolve
from common.multires import plan_stages


def measure(fns, steps, repeats):
    """Samples/s of each `fn(steps)`, where fns maps a name to (fn, samples per step). Each fn
    runs once untimed first (tracing, pipeline start-up); returns name -> per-repeat rates."""
    for fn, _ in fns.values():
        fn(1)
    rates = {name: [] for name in fns}
    for _ in range(repeats):
        for name, (fn, samples) in fns.items():
            start = time.perf_counter()
            fn(steps)
            rates[name].append(steps * samples / (time.perf_counter() - start))
    return rates


def ratio(rates, a, b):
    """Median over repeats of the ratio of two rates measured side by side."""
    return statistics.median(x / y for x, y in zip(rates[a], rates[b]))


def spread(values):
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


def print_rates(title, rates, unit="samples/s", scale=None):
    """One line per measurement: median and [min - max] over the repeats. `scale` maps a name
    to a factor for a second column (e.g. MB per sample)."""
    print(title)
    for name, values in rates.items():
        mid, low, high = spread(values)
        line = f"  {name:40s} {number(mid):>10s} {unit}  [{number(low)} - {number(high)}]"
        if scale and name in scale:
            line += f"  {mid * scale[name]:10.1f} MB/s"
        print(line)


def number(value):
    """Two decimals, or three significant digits below 1 (a full-size step on a CPU)."""
    return f"{value:.2f}" if value >= 1 else f"{value:.3g}"


def endless(dataset):
    """Batches of epoch after epoch, as training sees them."""
    epoch = 0
    while True:
        yield from dataset.epoch(epoch)
        epoch += 1


def stepper(batches):
    """fn(n): draw n batches (the input pipeline alone)."""
    def run(n):
        for _ in range(n):
            next(batches)
    return run


def load_config(app_defaults, config, sets=(), flags=None):
    """The resolved config of a shipped YAML and its last stage (the full-resolution one);
    `flags` as train.py's plain flags (e.g. {"epochs": 4} for every stage)."""
    cfg = resolve(merge_defaults(COMMON_DEFAULTS, app_defaults), config, list(sets), flags)
    return cfg, plan_stages(cfg)[-1]


def training(task, stage, world, batch_source):
    """fn(n): n training steps as the Trainer runs them with log.every_steps 1 (the loss read
    back after every step) on batches drawn from `batch_source()` (a fixed in-memory batch or
    the next batch from files)."""
    from common.optimizers import make_optimizer
    from common.steps import make_train_step

    model = task.build_model(stage)
    step = make_train_step(model, make_optimizer(stage.train, stage.train["lr"]["base"]),
                           task.loss, world)

    def run(n):
        for _ in range(n):
            float(step(*batch_source()))
    return run
