"""Plot and summarise the per-epoch metrics of one or more training runs.

    python scripts/plot_metrics.py RUN_DIR [RUN_DIR ...] --out plot.png [--metric val_mae]

Each RUN_DIR is an output folder (its metrics.jsonl or metrics.csv is read) or a metrics file.
Panels: train/val loss, every val_* metric and samples/s against the epoch counted across stages,
with dashed lines at stage switches; several runs are overlaid (e.g. single- vs multi-resolution).
Epochs are shown 1-based, as in the training log; --metric defaults to train.target.metric.
"""
import argparse
import datetime
import itertools
import math
import os
import statistics
import sys
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # files only: batch nodes have no display
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common.logs import MetricsLog  # noqa: E402

FORMATS = ("jsonl", "csv")


@dataclass
class Run:
    name: str
    records: list   # sorted by (stage, epoch); the x axis is the position in this list, 1-based
    target: tuple   # (metric, mode) from the run's config.yaml, or None


def fail(message):
    raise SystemExit(f"plot_metrics.py: {message}")


def metrics_file(path):
    """(file, format) of a run folder or of a metrics file given directly."""
    if os.path.isfile(path):
        fmt = os.path.splitext(path)[1].lstrip(".")
        if fmt not in FORMATS:
            fail(f"{path}: expected a .jsonl or .csv metrics file")
        return path, fmt
    if not os.path.isdir(path):
        fail(f"no such run folder or metrics file: {path}")
    for fmt in FORMATS:
        candidate = os.path.join(path, f"metrics.{fmt}")
        if os.path.isfile(candidate):
            return candidate, fmt
    fail(f"no metrics.jsonl or metrics.csv in {path}")


def run_target(folder):
    config = os.path.join(folder, "config.yaml")
    if not os.path.isfile(config):
        return None
    with open(config) as f:
        target = (yaml.safe_load(f) or {}).get("train", {}).get("target", {})
    return (target["metric"], target.get("mode", "min")) if "metric" in target else None


def load_run(path, name):
    file, fmt = metrics_file(path)
    records = MetricsLog(file, fmt).read()
    if not records:
        fail(f"{file} holds no epoch records")
    for record in records:  # CSV turns a stage named "64" into a number
        record["stage_name"] = str(record["stage_name"])
    records.sort(key=lambda r: (r["stage"], r["epoch"]))
    return Run(name, records, run_target(os.path.dirname(file)))


def run_names(paths):
    """Folder names for the legend; the paths themselves when those names collide."""
    folders = [p if os.path.isdir(p) else os.path.dirname(os.path.abspath(p)) for p in paths]
    names = [os.path.basename(os.path.abspath(folder)) for folder in folders]
    return names if len(set(names)) == len(names) else list(paths)


def choose_metric(runs, metric, mode):
    target = runs[0].target or ("val_loss", "min")
    metric = metric or target[0]
    mode = mode or (target[1] if metric == target[0] else "min")
    for run in runs:
        if metric not in run.records[0]:
            known = ", ".join(k for k in run.records[0] if k.startswith("val_"))
            fail(f"run {run.name} has no metric {metric!r} (it has {known})")
    return metric, mode


def summarise(run, metric, mode):
    """Epochs and median samples/s per stage, the best `metric` and where, total epoch time."""
    stages = []
    for (_, name), group in itertools.groupby(run.records, lambda r: (r["stage"], r["stage_name"])):
        speeds = [r["samples_per_s"] for r in group]
        stages.append({"name": name, "epochs": len(speeds),
                       "median_samples_per_s": statistics.median(speeds)})
    pick = min if mode == "min" else max
    best_index, best = pick(enumerate(run.records), key=lambda item: item[1][metric])
    return {"run": run.name, "stages": stages, "epochs": len(run.records), "metric": metric,
            "best": best[metric], "best_epoch": best_index + 1, "best_stage": best["stage_name"],
            "best_stage_epoch": best["epoch"] + 1,
            "median_samples_per_s": statistics.median(r["samples_per_s"] for r in run.records),
            "total_time_s": sum(r["epoch_s"] for r in run.records)}


def format_summary(s):
    stages = ", ".join(f"{st['name']} {st['epochs']} ({st['median_samples_per_s']:.1f} samples/s)"
                       for st in s["stages"])
    return "\n".join([
        f"{s['run']}:",
        f"  epochs per stage: {stages}; {s['epochs']} in all",
        f"  best {s['metric']} {s['best']:.6g} at epoch {s['best_epoch']} "
        f"({s['best_stage']} epoch {s['best_stage_epoch']})",
        f"  median samples/s {s['median_samples_per_s']:.1f}",
        f"  training time {s['total_time_s']:.1f} s "
        f"({datetime.timedelta(seconds=round(s['total_time_s']))}, sum of epoch_s)"])


def stage_switches(records):
    """(x between the epochs, previous stage name, next stage name) at each stage change."""
    return [(i + 0.5, a["stage_name"], b["stage_name"])
            for i, (a, b) in enumerate(zip(records, records[1:]), start=1)
            if a["stage"] != b["stage"]]


def mark_stages(ax, run, color):
    for x, before, after in stage_switches(run.records):
        ax.axvline(x, color=color, linestyle="--", linewidth=1)
        ax.text(x, 0.98, f" {before} → {after}", transform=ax.get_xaxis_transform(),
                rotation=90, va="top", ha="right", fontsize=7, color=color)


def column(records, key):
    return [r.get(key, math.nan) for r in records]  # a gap where one run lacks a metric


def plot_run(panels, run, color, metric, summary):
    x = range(1, len(run.records) + 1)
    style = dict(color=color, marker="o", markersize=3)
    loss = panels["loss"]
    loss.plot(x, column(run.records, "train_loss"), "--", label=f"{run.name} train", **style)
    loss.plot(x, column(run.records, "val_loss"), label=f"{run.name} val", **style)
    for key, ax in panels.items():
        if key != "loss":
            ax.plot(x, column(run.records, key), label=run.name, **style)
        mark_stages(ax, run, color)
    panels.get(metric, loss).plot(summary["best_epoch"], summary["best"], marker="*",
                                  markersize=12, color=color)


def plot(runs, summaries, metric, out):
    names = [k for r in runs for k in r.records[0] if k.startswith("val_") and k != "val_loss"]
    keys = ["loss", *dict.fromkeys(names), "samples_per_s"]
    cols = 2
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 3.8 * rows), squeeze=False)
    panels = dict(zip(keys, axes.flat))
    colors = itertools.cycle(plt.rcParams["axes.prop_cycle"].by_key()["color"])
    for run, summary, color in zip(runs, summaries, colors):
        plot_run(panels, run, color, metric, summary)
    for key, ax in panels.items():
        ax.set_title({"loss": "loss (train dashed, val solid)",
                      "samples_per_s": "training throughput"}.get(key, key))
        ax.set_ylabel({"loss": "loss", "samples_per_s": "samples/s"}.get(key, key))
        ax.set_xlabel("epoch (counted across stages)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    losses = [rec[k] for r in runs for rec in r.records for k in ("train_loss", "val_loss")]
    if min(losses) > 0 and max(losses) > 10 * min(losses):
        panels["loss"].set_yscale("log")  # else the first epochs flatten the rest of the curve
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    fig.suptitle(f"{', '.join(r.name for r in runs)}  (★ best {metric})")
    fig.tight_layout()
    if os.path.dirname(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR",
                        help="run output folder or metrics.jsonl/.csv file")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--metric", help="metric for the summary's best value "
                                         "(default: the run's train.target.metric, else val_loss)")
    parser.add_argument("--mode", choices=("min", "max"),
                        help="whether lower or higher --metric is better (default: the target's "
                             "mode, else min)")
    return parser.parse_args(argv)


def main(argv=None):
    """Write the plot, print the summaries and return them (one dict per run)."""
    args = parse_args(argv)
    runs = [load_run(path, name) for path, name in zip(args.runs, run_names(args.runs))]
    metric, mode = choose_metric(runs, args.metric, args.mode)
    summaries = [summarise(run, metric, mode) for run in runs]
    plot(runs, summaries, metric, args.out)
    for summary in summaries:
        print(format_summary(summary))
    print(f"plot written to {args.out}")
    return summaries


if __name__ == "__main__":
    main()
