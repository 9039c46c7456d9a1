"""What a reader of a paper needs from a run: the software and launch it ran with (run.json), and
at the end the time, epochs and metrics it reached (summary.json). Pure functions of the metrics
records, shared with scripts/multires_study.py."""
import datetime
import json
import os
import platform
import socket
import subprocess

from common.cpu_kernels import onednn_enabled

LAUNCHERS = (("SLURM_STEP_ID", "srun (SLURM)"), ("LSB_JOBID", "jsrun (LSF)"),
             ("HOROVOD_RANK", "horovodrun"), ("OMPI_COMM_WORLD_SIZE", "mpiexec (Open MPI)"),
             ("PMI_SIZE", "mpiexec (PMI)"))


def run_record(world, argv):
    """Versions, commit, ranks and launcher of this run."""
    return {"started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(argv), "host": socket.gethostname(), "ranks": world.size,
            "launcher": next((name for var, name in LAUNCHERS if os.environ.get(var)),
                             "single process"),
            "python": platform.python_version(), "tensorflow": _version("tensorflow"),
            "horovod": _version("horovod"), "mpi": _mpi_library(), "commit": _commit(),
            "onednn": onednn_enabled()}


def _version(module):
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def _mpi_library():
    try:
        from mpi4py import MPI
        # The C string comes with its terminating NUL (Open MPI): keep what precedes it.
        return MPI.Get_library_version().split("\0")[0].splitlines()[0].strip()
    except Exception:  # noqa: BLE001 - no MPI is an answer, not an error
        return None


def _commit():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        out = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() + ("+changes" if dirty else "")) if out.returncode == 0 else None


def stage_seconds(records):
    """Wall-clock seconds per stage name: from the previous stage's last epoch end (or the run's
    start) to the stage's last epoch end, so set-up and stage switches are counted."""
    seconds, previous = {}, 0.0
    for r in records:
        seconds[r["stage_name"]] = seconds.get(r["stage_name"], 0.0) + r["elapsed_s"] - previous
        previous = r["elapsed_s"]
    return seconds


def first_reached(records, key, target, mode):
    """(elapsed_s, epochs counted over all stages, stage name) of the first record whose `key`
    reaches `target` (ties count), or None."""
    for epochs, r in enumerate(records, start=1):
        value = r.get(key)
        if value is not None and (value <= target if mode == "min" else value >= target):
            return r["elapsed_s"], epochs, r["stage_name"]
    return None


def run_summary(records, target, maximize=()):
    """Time, epochs, best and final of every metric (higher is better for the names in
    `maximize`, lower otherwise), and the time to the target when one is set."""
    if not records:
        return {"epochs": 0}
    metrics = [k for k in records[-1] if k.startswith(("val_", "final_val_", "train_loss"))]
    summary = {"epochs": len(records), "total_s": records[-1]["elapsed_s"],
               "stage_s": stage_seconds(records),
               "final": {k: records[-1][k] for k in metrics}, "best": {}}
    for k in metrics:
        values = [r[k] for r in records if k in r]
        higher_better = k.replace("final_", "").replace("val_", "", 1) in maximize
        summary["best"][k] = max(values) if higher_better else min(values)
    if target["value"] is not None:
        hit = first_reached(records, target["metric"], target["value"], target["mode"])
        summary["target"] = {**target, "reached": hit is not None,
                             "seconds": hit and hit[0], "epochs": hit and hit[1]}
    return summary


def write_summary(records, target, maximize, path, log):
    """Log the run's summary (run_summary of its epoch records) and write it to `path`."""
    summary = run_summary(records, target, maximize)
    for line in summary_lines(summary):
        log.info(line)
    with open(path, "w") as f:
        json.dump(summary, f, indent=1)


def summary_lines(summary):
    if not summary["epochs"]:
        return ["summary: no epochs recorded"]
    stages = ", ".join(f"{name} {s:.1f} s" for name, s in summary["stage_s"].items())
    lines = [f"summary: {summary['epochs']} epochs in {summary['total_s']:.1f} s ({stages})"]
    lines += [f"  {k}: final {summary['final'][k]:.4g}, best {summary['best'][k]:.4g}"
              for k in summary["final"]]
    if "target" in summary:
        t = summary["target"]
        lines.append(f"  target {t['metric']} {t['value']:g}: " + (
            f"reached after {t['seconds']:.1f} s, {t['epochs']} epochs" if t["reached"]
            else "not reached"))
    return lines

