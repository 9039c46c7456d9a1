"""Multi-resolution training: a plan of stages and the weight hand-over between them.

A stage is the base config with that stage's overrides of `data`, `model` and `train`. A relative
`data.root` in a stage is taken under the base `data.root`, so `--data-dir` moves every stage.
"""
import os
from dataclasses import dataclass, field

import numpy as np

from common.config import deep_merge


@dataclass
class Stage:
    index: int
    name: str
    data: dict
    model: dict
    train: dict

    @property
    def epochs(self):
        return self.train["epochs"]


def plan_stages(cfg):
    """The list of Stage objects; a config without `stages` is one stage named 'main'."""
    overrides = cfg["stages"] or [{"name": "main"}]
    stages = []
    for i, over in enumerate(overrides):
        data = deep_merge(cfg["data"], over.get("data", {}))
        if "root" in over.get("data", {}) and not os.path.isabs(data["root"]):
            data["root"] = os.path.join(cfg["data"]["root"], data["root"])
        stages.append(Stage(i, over.get("name") or f"stage{i}", data,
                            deep_merge(cfg["model"], over.get("model", {})),
                            deep_merge(cfg["train"], over.get("train", {}))))
    return stages


def memory_equivalent_batches(stages, sample_pixels):
    """Give each stage with train.memory_equivalent_batch the last stage's local (and global)
    batch times the last stage's pixels per sample over its own: a step then holds the same
    pixels, so about the same activation memory (the seed's DeepCAM: 384x576 at batch 8, then
    768x1152 at 2). Its LR follows train.lr.rule for that batch, like any stage's. Changes the
    stages in place; returns one log line per changed stage."""
    last, lines = stages[-1], []
    for stage in stages:
        if not stage.train["memory_equivalent_batch"] or stage is last:
            continue
        if sample_pixels is None:
            raise ValueError(f"stage '{stage.name}': train.memory_equivalent_batch needs the "
                             "app to say how many pixels a sample holds, and this app does not")
        ratio = sample_pixels(last) / sample_pixels(stage)
        factor = round(ratio)
        if factor < 1 or abs(ratio - factor) > 1e-6 * ratio:
            raise ValueError(f"stage '{stage.name}': train.memory_equivalent_batch needs a whole "
                             f"number of its samples per last-stage sample, got {ratio:g} "
                             f"({sample_pixels(last)} / {sample_pixels(stage)} pixels)")
        stage.train["local_batch"] = last.train["local_batch"] * factor
        if last.train["global_batch"]:
            stage.train["global_batch"] = last.train["global_batch"] * factor
        lines.append(f"stage '{stage.name}': a sample holds 1/{factor} of the pixels of a "
                     f"stage '{last.name}' one, so {factor}x its batch: local batch "
                     f"{stage.train['local_batch']} (train.memory_equivalent_batch)")
    return lines


def early_stop_value(record, metric):
    """The epoch's value of train.early_stop.metric; a final_val_* metric is missing when the
    probe turned itself off (a weight that cannot carry over), which is said here."""
    if metric not in record:
        raise ValueError(f"config key 'train.early_stop.metric': {metric!r} was not measured "
                         "this epoch (final_val_* needs log.final_val and a model whose every "
                         "weight carries over to the last stage; see the log)")
    return record[metric]


@dataclass
class TransferReport:
    carried: list = field(default_factory=list)
    reinitialised: list = field(default_factory=list)  # (layer name, reason)

    def lines(self):
        out = [f"weight transfer: {len(self.carried)} layers carried over, "
               f"{len(self.reinitialised)} re-initialised"]
        if self.carried:
            out.append(f"  carried over: {', '.join(self.carried)}")
        out += [f"  re-initialised {name}: {why}" for name, why in self.reinitialised]
        return out


def transfer_weights(source, target):
    """Copy weights layer by layer where the names and all weight shapes match."""
    report = TransferReport()
    by_name = {layer.name: layer for layer in source.layers}
    for layer in target.layers:
        new = layer.get_weights()
        if not new:
            continue
        old_layer = by_name.get(layer.name)
        if old_layer is None:
            report.reinitialised.append((layer.name, "not in the previous stage's model"))
            continue
        old = old_layer.get_weights()
        old_shapes = [w.shape for w in old]
        new_shapes = [w.shape for w in new]
        if old_shapes != new_shapes:
            report.reinitialised.append(
                (layer.name, f"shape {_shapes(old_shapes)} -> {_shapes(new_shapes)}"))
            continue
        layer.set_weights(old)
        report.carried.append(layer.name)
    return report


# Train settings a compiled step depends on: stages that share them (and the model) share it.
STEP_KEYS = ("optimizer", "momentum", "weight_decay", "beta_1", "beta_2", "epsilon",
             "max_grad_norm", "precision", "jit_compile", "steps_per_call", "accumulate_steps")


def same_network(before, after, before_model, after_model):
    """Can stage `after` keep training stage `before`'s model, optimizer and compiled step?
    Yes when their model settings and STEP_KEYS agree and every weight has the same name and
    shape (a network that does not depend on the resolution, such as a global-pool head)."""
    def weights(model):
        return [(w.name, tuple(w.shape)) for w in model.weights]
    return (before.model == after.model
            and all(before.train[k] == after.train[k] for k in STEP_KEYS)
            and weights(before_model) == weights(after_model))


def _shapes(shapes):
    return ", ".join("x".join(map(str, s)) for s in shapes)


class FinalStageProbe:
    """Scores an earlier stage's model on the last stage's validation data: its weights are
    copied by name into a model built once for the last stage. Adds final_val_* to a record; in
    the last stage those equal val_*. Turns itself off, saying why, when a weight cannot carry
    over (a flatten head), since such a score would measure a re-initialised layer."""

    def __init__(self, build, log):
        self.build, self.log = build, log  # build() -> (model, evaluate() -> {val_*: value})
        self.model = self.evaluate = None
        self.off = False

    def score(self, model, record, last_stage):
        if self.off:
            return {}  # every record then lacks final_val_*, so CSV columns stay the same
        if last_stage:
            return {f"final_{k}": v for k, v in record.items() if k.startswith("val_")}
        if self.model is None:
            self.model, self.evaluate = self.build()
        report = transfer_weights(model, self.model)
        if report.reinitialised:
            names = ", ".join(name for name, _ in report.reinitialised)
            self.log.info(f"log.final_val: not scoring earlier stages on the last stage's data, "
                          f"since {names} cannot carry over")
            self.off = True
            return {}
        return {f"final_{k}": v for k, v in self.evaluate().items()}


class EarlyStopping:
    """Ends a stage when `metric` has not improved by `min_delta` for `patience` epochs."""

    def __init__(self, patience, min_delta, mode="min"):
        self.patience, self.min_delta, self.mode = patience, min_delta, mode
        self.best = None
        self.bad_epochs = 0

    def update(self, value):
        """Record one epoch's value; True when the stage should stop."""
        if self.patience <= 0:
            return False
        sign = 1.0 if self.mode == "min" else -1.0
        if self.best is None or sign * (self.best - value) > self.min_delta:
            self.best, self.bad_epochs = float(value), 0
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    def state(self):
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load(self, state):
        self.best, self.bad_epochs = state["best"], state["bad_epochs"]


def reached(value, target, mode):
    """Has a metric reached the target value (lower is better for mode 'min')?"""
    if target is None or value is None or not np.isfinite(value):
        return False
    return bool(value <= target if mode == "min" else value >= target)


def describe_target(target, value):
    """'target val_mae <= 0.124 reached (0.1213)' for the log and the checkpoint."""
    sign = "<=" if target["mode"] == "min" else ">="
    return f"target {target['metric']} {sign} {target['value']:g} reached ({value:.4g})"
