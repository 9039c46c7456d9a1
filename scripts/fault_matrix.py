"""Fault matrix: inject each fault into a tiny EDSR run on 2 ranks and print what happened.

    python scripts/fault_matrix.py [--only NAME ...] [--stall-timeout 60] [--work DIR]

One row per fault: detected after (s, from launch to the job's end), exit code of every rank
(`killed` when a rank was ended by a signal, e.g. by MPI_Abort), hang (the job outlived its
bound), checkpoint intact (the newest checkpoint loads), and whether --resume then ends with the
same metrics as an uninterrupted run (n.a. when the fault was refused before any training).
Faults come from TRAIN_FAULTS (common/faults.py). Each row is also a test (tests/test_reliability.py
and the tests it names).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
EDSR = os.path.join(REPO, "edsr", "train.py")
EPOCHS = 3


@dataclass
class Fault:
    name: str
    faults: str = ""                # TRAIN_FAULTS
    args: list = field(default_factory=list)
    prepare: Optional[Callable] = None  # (case folder) -> None, before the faulty run
    resume: bool = True             # compare a --resume with the uninterrupted run


def config(case, data_root=None, **train):
    path = os.path.join(case, "c.yaml")
    with open(path, "w") as f:
        yaml.safe_dump({
            "output_dir": os.path.join(case, "out"), "seed": 1, "deterministic": True,
            "data": {"root": data_root or os.path.join(case, "..", "data"), "num_rows": 16,
                     "num_cols": 16, "crops_per_image": 2, "crop": 8, "eval_batch": 2,
                     "preview_images": 0},
            "model": {"layers": 1, "filters": 4},
            "train": {"local_batch": 2, "epochs": EPOCHS, **train},
            "log": {"progress": False}}, f)
    return path


def run(case, args, faults="", bound=240):
    """Run EDSR on 2 ranks; (seconds, exit code per rank, hung?, output)."""
    codes = os.path.join(case, "codes")
    shutil.rmtree(codes, ignore_errors=True)
    os.makedirs(codes)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", TF_CPP_MIN_LOG_LEVEL="2",
               OMP_NUM_THREADS="1", PYTHONPATH=REPO, TRAIN_FAULTS=faults)
    rank_cmd = " ".join([sys.executable, EDSR, *map(str, args)])
    wrapper = f'{rank_cmd}; echo $? > {codes}/$OMPI_COMM_WORLD_RANK'
    start = time.monotonic()
    proc = subprocess.Popen(["mpiexec", "-n", "2", "sh", "-c", wrapper], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=bound)
        hung = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        hung = True
    took = time.monotonic() - start
    per_rank = []
    for rank in (0, 1):
        path = os.path.join(codes, str(rank))
        per_rank.append(open(path).read().strip() if os.path.exists(path) else "killed")
    return took, per_rank, hung, out


def checkpoint_intact(case):
    from common.checkpoint import CheckpointError, CheckpointStore
    store = CheckpointStore(os.path.join(case, "out", "checkpoints"))
    try:
        latest = store.latest()
    except CheckpointError:
        return "n"
    return "y" if latest is not None else "none"


def metrics(case):
    path = os.path.join(case, "out", "metrics.jsonl")
    if not os.path.exists(path):
        return []
    return [json.loads(line) for line in open(path) if line.strip()]


def same_run(a, b):
    keys = ("stage", "epoch")
    return len(a) == len(b) and all(
        all(x[k] == y[k] for k in keys) and abs(x["val_loss"] - y["val_loss"]) <=
        1e-5 * max(abs(y["val_loss"]), 1e-9) for x, y in zip(a, b))


def live_lock_holder(case):
    import socket
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    os.makedirs(os.path.join(case, "out"), exist_ok=True)
    with open(os.path.join(case, "out", "run.lock"), "w") as f:
        json.dump({"host": socket.gethostname(), "pid": holder.pid, "job": "other"}, f)
    return holder


def pretrained(epochs):
    def prepare(case):
        run(case, ["--config", os.path.join(case, "c.yaml"), "--epochs", str(epochs)])
    return prepare


def truncate_pointer(case):
    pretrained(2)(case)
    pointer = os.path.join(case, "out", "checkpoints", "latest.json")
    text = open(pointer).read()
    with open(pointer, "w") as f:
        f.write(text[: len(text) // 2])


def corrupt_image(case):
    data = os.path.join(case, "data")
    shutil.copytree(os.path.join(case, "..", "data"), data)
    with open(os.path.join(data, "train", "HR", "2.png"), "wb") as f:
        f.write(b"not a png")
    config(case, data_root=data)


def faults(stall_timeout):
    return [
        Fault("rank 1 stalls in a step", "step:hang,rank=1,at=3",
              ["--set", f"train.stall_timeout_s={stall_timeout}"]),
        Fault("SIGKILL of rank 1 mid-epoch", "step:kill,rank=1,at=3"),
        Fault("list.txt written while rank 1 is late", "edsr.list_ids:sleep=4,rank=1,at=1",
              prepare=lambda case: os.remove(os.path.join(case, "..", "data", "train",
                                                          "list.txt"))),
        Fault("disk full at the 2nd checkpoint", "checkpoint.write:enospc,at=2"),
        Fault("kill between checkpoint and pointer", "checkpoint.publish:kill,rank=0,at=2"),
        Fault("truncated latest.json", args=["--resume"], prepare=truncate_pointer),
        Fault("resume with another network", args=["--resume", "--set", "model.filters=8"],
              prepare=pretrained(1)),
        Fault("second job on the output folder", prepare=live_lock_holder, resume=False),
        Fault("corrupt image", prepare=corrupt_image, resume=False),
        Fault("missing data folder", prepare=lambda case: config(case, data_root="/nowhere"),
              resume=False),
    ]


def row(fault, work, baseline):
    case = os.path.join(work, fault.name.replace(" ", "_").replace(".", ""))
    shutil.rmtree(case, ignore_errors=True)
    os.makedirs(case)
    cfg = config(case)
    holder = fault.prepare(case) if fault.prepare else None
    took, codes, hung, out = run(case, ["--config", cfg, *fault.args], fault.faults)
    if isinstance(holder, subprocess.Popen):
        holder.kill()
    intact = checkpoint_intact(case)
    equal = "n.a."
    if fault.resume:
        if all(code == "0" for code in codes):
            equal = "y" if same_run(metrics(case), baseline) else "n"
        else:
            run(case, ["--config", cfg, "--resume"])
            equal = "y" if same_run(metrics(case), baseline) else "n"
    return {"fault": fault.name, "detected_s": took, "exit": codes, "hang": "y" if hung else "n",
            "intact": intact, "resume_equal": equal, "output": out}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="*", help="faults whose name contains one of these words")
    p.add_argument("--stall-timeout", type=float, default=60.0)
    p.add_argument("--work", help="folder for the runs (default: a temporary one, removed)")
    args = p.parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="fault-matrix-")
    from edsr.make_data import write_dataset
    data = os.path.join(work, "data")
    shutil.rmtree(data, ignore_errors=True)
    rows = []
    try:
        write_dataset(data, 16, 16, train=4, val=2, test=2, seed=3)
        base = os.path.join(work, "baseline")
        shutil.rmtree(base, ignore_errors=True)
        os.makedirs(base)
        run(base, ["--config", config(base)])
        baseline = metrics(base)
        print(f"{'fault':40s} {'detected (s)':>12s} {'exit codes':>14s} {'hang':>5s} "
              f"{'ckpt intact':>11s} {'resume = whole':>14s}")
        for fault in faults(args.stall_timeout):
            if args.only and not any(word in fault.name for word in args.only):
                continue
            if not os.path.exists(os.path.join(data, "train", "list.txt")):
                write_dataset(data, 16, 16, train=4, val=2, test=2, seed=3)
            result = row(fault, work, baseline)
            rows.append(result)
            print(f"{result['fault']:40s} {result['detected_s']:12.1f} "
                  f"{'/'.join(result['exit']):>14s} {result['hang']:>5s} "
                  f"{result['intact']:>11s} {result['resume_equal']:>14s}", flush=True)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return rows


if __name__ == "__main__":
    main()
