"""Scoring a model on a sharded split: the task's loss and metrics, summed over every rank."""
import numpy as np

from common.faults import fault_point
from common.steps import make_eval_step


def task_eval_step(model, task, spec=None):
    """The compiled evaluation step of `task`'s loss and metrics on `model`. With `spec` (batch
    specs with open dimensions, common.data.common_spec) it is traced once, up front, for every
    batch shape the specs admit: the stages sharing a model then share the trace."""
    step = make_eval_step(model, task.loss, list(task.metrics.values()))
    if spec:
        step.get_concrete_function(*spec)
    return step


def evaluate(data, eval_step, metric_names, world):
    """{val_loss, val_<metric>...}: sample-weighted means over the whole split, every rank's
    shard included (padding samples weigh 0)."""
    fault_point("validation")
    sums = np.zeros(len(metric_names) + 2)
    for x, y, w in data.epoch(0):
        sums += eval_step(x, y, w).numpy()
    sums = world.allreduce_sum(sums)
    count = max(sums[-1], 1.0)
    values = {"val_loss": sums[0] / count}
    for i, name in enumerate(metric_names):
        values[f"val_{name}"] = sums[i + 1] / count
    return values
