"""Does multi-resolution training pay off? Time-to-accuracy of stage plans on the same data.

    python scripts/multires_study.py --app cosmoflow --preset small [--out DIR] [--seeds 0 1 2]
                                     [--reuse]

Runs every plan of the preset (scripts/study_presets.yaml: e.g. full resolution only, and coarse
then full) for every seed on the same synthetic data, machine and hyperparameters, then reports
per plan the median and spread (min-max) of the final and best validation metric, the wall-clock
time and epochs to reach the target, and the time spent in each stage. The metric that counts is
always the full-resolution one (log.final_val scores coarse stages on full-resolution validation
data). The target is the first plan's median best metric, loosened by the tolerance. Writes
DIR/study.md (table), DIR/study.png (metric against wall-clock seconds) and DIR/study.json.
With --reuse, a run that finished in DIR with the same command is read instead of trained again:
a plan added to the preset, or a study cut short, costs only its missing runs (the reused runs
were timed under the machine load of their own time).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import matplotlib
import yaml

matplotlib.use("Agg")  # files only: batch nodes have no display
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESETS = os.path.join(ROOT, "scripts", "study_presets.yaml")
sys.path.insert(0, ROOT)
from common.logs import MetricsLog  # noqa: E402
from common.summary import first_reached, stage_seconds  # noqa: E402


def full_res_points(records, metric):
    """The records that have a full-resolution value, as copies with it under 'full':
    final_val_<metric> (log.final_val), or val_<metric> in the run's last stage."""
    points = []
    for r in records:
        value = r.get(f"final_val_{metric}")
        if value is None and r["stage"] == records[-1]["stage"]:
            value = r.get(f"val_{metric}")
        points.append({**r, "full": value})
    return points


def time_to_target(records, metric, target, mode):
    """(seconds, epochs, stage) when the full-resolution metric first reaches the target, else
    None. Epochs count every epoch of every stage up to and including that one."""
    return first_reached(full_res_points(records, metric), "full", target, mode)


def summarise_run(records, metric, mode):
    values = [p["full"] for p in full_res_points(records, metric) if p["full"] is not None]
    pick = min if mode == "min" else max
    return {"final": values[-1], "best": pick(values), "total_s": records[-1]["elapsed_s"],
            "epochs": len(records), "stage_s": stage_seconds(records)}


def target_value(best_values, tolerance, mode):
    """The reference plan's median best, loosened by `tolerance` (a fraction)."""
    median = statistics.median(best_values)
    return median * (1 + tolerance) if mode == "min" else median * (1 - tolerance)


def spread(values):
    if not values:
        return "never"
    return (f"{statistics.median(values):.4g} ({min(values):.4g}-{max(values):.4g})"
            if len(values) > 1 else f"{values[0]:.4g}")


def study_table(runs, preset, target):
    """Markdown: one row per plan, medians with (min-max) over seeds."""
    metric, mode = preset["metric"], preset["mode"]
    lines = [f"Target: full-resolution val_{metric} {'<=' if mode == 'min' else '>='} "
             f"{target:.4g} (the {next(iter(preset['plans']))} plan's median best, "
             f"{preset['tolerance'] * 100:g}% tolerance); medians over seeds with (min-max).", "",
             "| plan | runs | final | best | reached | time to target (s) | epochs to target "
             "| total time (s) | time per stage (s) |", "|" + " --- |" * 9]
    for plan, plan_runs in runs.items():
        sums = [summarise_run(r, metric, mode) for r in plan_runs]
        hits = [time_to_target(r, metric, target, mode) for r in plan_runs]
        reached = [h for h in hits if h]
        stages = {name: [s["stage_s"][name] for s in sums] for name in sums[0]["stage_s"]}
        lines.append(
            f"| {plan} | {len(plan_runs)} | {spread([s['final'] for s in sums])} | "
            f"{spread([s['best'] for s in sums])} | {len(reached)}/{len(hits)} | "
            f"{spread([h[0] for h in reached])} | {spread([h[1] for h in reached])} | "
            f"{spread([s['total_s'] for s in sums])} | "
            + ", ".join(f"{name} {spread(v)}" for name, v in stages.items()) + " |")
    return "\n".join(lines) + "\n"


def breakdown_table(runs, preset):
    """Markdown: each plan's final full-resolution value of every metric the preset lists under
    `breakdown` (CosmoFlow: the MAE of each target, which says what a plan has learnt)."""
    names = preset.get("breakdown", [])
    if not names:
        return ""
    lines = ["", "Final full-resolution values per plan, medians over seeds with (min-max):", "",
             "| plan | " + " | ".join(f"val_{name}" for name in names) + " |",
             "|" + " --- |" * (len(names) + 1)]
    for plan, plan_runs in runs.items():
        lines.append(f"| {plan} | " + " | ".join(
            spread([summarise_run(r, name, preset["mode"])["final"] for r in plan_runs])
            for name in names) + " |")
    return "\n".join(lines) + "\n"


def time_ratio(runs, preset, target):
    """plan -> {ratio: median time to target over the first plan's, reached: seeds that reached
    the target, seeds}. Medians are over the seeds that reached it (ratio None where none did):
    with fewer than all of them a ratio flatters its plan, which `reached` says."""
    medians, counts = {}, {}
    for plan, plan_runs in runs.items():
        hits = [time_to_target(r, preset["metric"], target, preset["mode"]) for r in plan_runs]
        reached = [h[0] for h in hits if h]
        medians[plan] = statistics.median(reached) if reached else None
        counts[plan] = (len(reached), len(hits))
    first = medians[next(iter(runs))]
    return {plan: {"ratio": m / first if m and first else None, "reached": counts[plan][0],
                   "seeds": counts[plan][1]} for plan, m in medians.items()}


def ratio_line(ratios):
    parts = []
    for plan, r in ratios.items():
        ratio = "never" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        parts.append(f"{plan} {ratio} ({r['reached']}/{r['seeds']})")
    return ("\nMedian time to target relative to the first plan (over the seeds that reached "
            "it): " + ", ".join(parts) + "\n")


def plot(runs, preset, target, path):
    fig, ax = plt.subplots(figsize=(8, 5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for colour, (plan, plan_runs) in zip(colours, runs.items()):
        for i, records in enumerate(plan_runs):
            xs, ys = zip(*[(p["elapsed_s"], p["full"]) for p in
                           full_res_points(records, preset["metric"]) if p["full"] is not None])
            ax.plot(xs, ys, "o-", color=colour, alpha=0.7, ms=3, label=plan if i == 0 else None)
    ax.axhline(target, color="black", ls="--", lw=1, label="target")
    ax.set_xlabel("wall-clock seconds since training start")
    ax.set_ylabel(f"full-resolution val_{preset['metric']}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_command(argv, log_path):
    with open(log_path, "w") as log:
        result = subprocess.run(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode:
        with open(log_path) as f:
            tail = f.read()[-3000:]
        raise SystemExit(f"multires_study.py: failed (exit {result.returncode}, {log_path}): "
                         f"{' '.join(argv)}\n{tail}")


def make_data(preset, data_dir):
    done = os.path.join(data_dir, ".complete")
    if os.path.exists(done):
        return
    os.makedirs(data_dir, exist_ok=True)
    for i, args in enumerate(preset["data"]):
        args = [a.replace("{data}", data_dir) for a in args]
        print(f"[study] data: python {' '.join(args)}", flush=True)
        run_command([sys.executable, *args], os.path.join(data_dir, f"make-{i}.log"))
    open(done, "w").close()


def train(preset, plan_args, seed, data_dir, out, reuse=False):
    """One training run through the local launcher; returns its epoch records and whether a
    finished run of the same command was reused."""
    config, *overrides = plan_args
    argv = ["bash", os.path.join(ROOT, "scripts", "launch", "local.sh"), str(preset["ranks"]),
            config, "--data-dir", data_dir, "--output-dir", out, "--seed", str(seed),
            "--set", "log.final_val=true", "--set", "log.progress=false",
            *preset.get("common", []), *overrides]
    metrics, finished = os.path.join(out, "metrics.jsonl"), out + ".command.json"
    if reuse and os.path.exists(finished):
        with open(finished) as f:
            if json.load(f) == argv:
                return MetricsLog(metrics, "jsonl").read(), True
    subprocess.run(["rm", "-rf", out, finished], check=True)
    os.makedirs(out)
    run_command(argv, out + ".log")
    with open(finished, "w") as f:  # written last: only a finished run is ever reused
        json.dump(argv, f)
    return MetricsLog(metrics, "jsonl").read(), False


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", required=True)
    parser.add_argument("--preset", required=True)
    parser.add_argument("--out", help="study folder (default runs/study-APP-PRESET)")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the preset's seeds")
    parser.add_argument("--presets", default=PRESETS, help="presets YAML")
    parser.add_argument("--reuse", action="store_true",
                        help="read runs that finished in the study folder with the same command "
                             "instead of training them again")
    return parser.parse_args(argv)


def load_preset(path, app, name):
    with open(path) as f:
        presets = yaml.safe_load(f)
    if app not in presets:
        raise SystemExit(f"multires_study.py: no presets for app {app!r} in {path} "
                         f"(apps: {', '.join(presets)})")
    if name not in presets[app]:
        raise SystemExit(f"multires_study.py: no preset {name!r} for {app} in {path} "
                         f"(presets: {', '.join(presets[app])})")
    return {**presets[app][name], "name": name}


def check_plans(app_name, preset, data_dir):
    """Resolve every plan's config as its runs will, so that a bad file, key or value in a preset
    stops the study before any data is written or any run trained, naming the plan."""
    from common import apps
    from common.config import COMMON_DEFAULTS, ConfigError, load_config, merge_defaults

    app = apps.load(app_name)  # (its CPU-kernel choice is the one its runs make themselves)
    schema = merge_defaults(COMMON_DEFAULTS, app.defaults)
    for plan, (config, *overrides) in preset["plans"].items():
        try:
            load_config(schema, ["--config", os.path.join(ROOT, config), "--data-dir", data_dir,
                                 *preset.get("common", []), *overrides])
        except ConfigError as err:
            raise SystemExit(f"multires_study.py: plan {plan!r} of preset "
                             f"{app_name}/{preset['name']}: {err}") from None


def main(argv=None):
    args = parse_args(argv)
    preset = load_preset(args.presets, args.app, args.preset)
    seeds = args.seeds or preset["seeds"]
    out = os.path.abspath(args.out or os.path.join(ROOT, "runs", f"study-{args.app}-{args.preset}"))
    data_dir = os.path.join(out, "data")
    check_plans(args.app, preset, data_dir)
    make_data(preset, data_dir)
    runs = {plan: [] for plan in preset["plans"]}
    for seed in seeds:  # plans interleaved, so machine noise spreads over all of them
        for plan, plan_args in preset["plans"].items():
            t0 = time.perf_counter()
            records, reused = train(preset, plan_args, seed, data_dir,
                                    os.path.join(out, f"{plan}-seed{seed}"), args.reuse)
            runs[plan].append(records)
            print(f"[study] {plan} seed {seed}: " + ("reused a finished run" if reused else
                  f"{time.perf_counter() - t0:.0f} s"), flush=True)
    metric, mode = preset["metric"], preset["mode"]
    reference = runs[next(iter(runs))]
    target = target_value([summarise_run(r, metric, mode)["best"] for r in reference],
                          preset["tolerance"], mode)
    table = study_table(runs, preset, target) + breakdown_table(runs, preset)
    ratios = time_ratio(runs, preset, target)
    table += ratio_line(ratios)
    with open(os.path.join(out, "study.md"), "w") as f:
        f.write(table)
    with open(os.path.join(out, "study.json"), "w") as f:
        json.dump({"app": args.app, "preset": args.preset, "target": target, "ratios": ratios,
                   "runs": runs}, f, indent=1)
    plot(runs, preset, target, os.path.join(out, "study.png"))
    print(table)
    print(f"[study] wrote {out}/study.md, study.png, study.json")


if __name__ == "__main__":
    main()
