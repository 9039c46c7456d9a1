"""Our Trainer against the MLPerf reference (cosmoflow/reference.py: stock Keras layers, its own
input pipeline, model.fit) over whole runs on the same files: the benchmark's last table.

Each repeat trains both for the same epochs, round-robin, so a noisy neighbour slows them alike.
Rates are training samples/s of the epochs after the first (the first holds the trace); a run's
seconds include building, tracing, validation and, for the Trainer, its checkpoints.
"""
import os
import statistics

from benchmarks.bench import number, print_rates, spread
from benchmarks.epoch_bench import run_trainer
from common.optimizers import make_optimizer
from cosmoflow.data import SPLITS, first, is_gzip, list_files, split_folder
from cosmoflow.model import network_spec
from cosmoflow.reference import fit_reference
from cosmoflow.train import APP

TRAINER, REFERENCE = "trainer", "keras fit reference"


def compare_epochs(args, stage, world, work):
    """Train both `args.epochs` epochs `args.repeats` times on stage.data's files; print the
    table and return (rates, ratios). One rank only: the reference here reads every file."""
    if world.size > 1:
        print("whole runs against the MLPerf reference: skipped, they compare one rank")
        return {}, {}
    data = reference_data(stage, args.local_batch)
    sets = [*args.set, f"data.root={stage.data['root']}", f"train.local_batch={args.local_batch}",
            "train.target.value=null", "log.progress=false"]
    epochs = {TRAINER: [], REFERENCE: []}  # per repeat: samples/s of epochs 2..N
    runs = {TRAINER: [], REFERENCE: []}    # per repeat: seconds of the whole run
    for repeat in range(args.repeats):
        history, setup, seconds = run_trainer(APP, args.config, sets, args.epochs,
                                              os.path.join(work, f"trainer-run{repeat}"), world)
        samples = setup.train_data.steps_per_epoch * setup.global_batch
        epochs[TRAINER].append([samples / r["epoch_s"] for r in history[1:]])
        runs[TRAINER].append(seconds)
        progress(TRAINER, repeat, epochs, runs)
        optimizer = make_optimizer(stage.train, stage.train["lr"]["base"])
        times, seconds = fit_reference(network_spec(stage.model), optimizer, data, args.epochs,
                                       seed=repeat)
        samples = len(data[0]) // args.local_batch * args.local_batch
        epochs[REFERENCE].append([samples / s for s in times.train_s[1:]])
        runs[REFERENCE].append(seconds)
        progress(REFERENCE, repeat, epochs, runs)
    return report(args, stage, world, data, epochs, runs)


def progress(name, repeat, epochs, runs):
    """One line per run as it ends: a long benchmark shows its figures as it goes."""
    print(f"  repeat {repeat + 1}, {name}: samples/s of epochs 2-: "
          + " ".join(number(rate) for rate in epochs[name][-1])
          + f"; whole run {runs[name][-1]:.1f} s", flush=True)


def reference_data(stage, local_batch):
    """(train files, validation files, local batch, resolution, gzip): the files the Trainer
    reads (TFRecord only)."""
    if stage.data["format"] != "tfrecord":
        raise ValueError(f"data.format {stage.data['format']!r}: the reference reads TFRecord "
                         "files only; compare on the MLPerf TFRecord files")
    files = {split: first(list_files(split_folder(stage.data["root"], split), "*.tfrecord"), limit)
             for split, limit in zip(SPLITS, (stage.data["max_train"], stage.data["max_val"]))}
    compression = stage.data["compression"]
    gzip = is_gzip(files["train"][0]) if compression == "auto" else compression == "gzip"
    return (*files.values(), local_batch, int(stage.data["resolution"]), gzip)


def report(args, stage, world, data, epochs, runs):
    size = data[3]
    rates = {f"{name}, epochs 2-{args.epochs}": [r for run in per_repeat for r in run]
             for name, per_repeat in epochs.items()}
    print_rates(f"cosmoflow {stage.model['name']} network over whole runs on the same "
                f"{len(data[0])} train / {len(data[1])} validation files ({size}^3x4), local "
                f"batch {args.local_batch}, {world.size} rank(s), {args.epochs} epochs x "
                f"{args.repeats} repeats round-robin; training samples/s of the epochs after the "
                "first, median [min - max]:", rates)
    print_rates("  whole runs (build, trace, every epoch with its validation):",
                {f"{name}, whole run": seconds for name, seconds in runs.items()}, unit="s")
    by_epochs = [statistics.median(ours) / statistics.median(theirs)
                 for ours, theirs in zip(epochs[TRAINER], epochs[REFERENCE])]
    by_runs = [theirs / ours for ours, theirs in zip(runs[TRAINER], runs[REFERENCE])]
    ratios = {f"{TRAINER} / {REFERENCE}, epochs": by_epochs,
              f"{TRAINER} / {REFERENCE}, whole run": by_runs}
    for name in epochs:
        ratios[f"{name} epoch spread (max / min)"] = [max(run) / min(run) for run in epochs[name]]
    for name, values in ratios.items():
        mid, low, high = spread(values)
        print(f"  {name:44s} {mid:6.2f} x  [{number(low)} - {number(high)}]")
    return rates, {name: statistics.median(values) for name, values in ratios.items()}
