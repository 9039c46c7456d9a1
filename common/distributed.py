"""The distributed world: Horovod when available, a world of one otherwise.

Everything rank-specific lives here so that apps never check ranks themselves.
"""
import os
import sys
import traceback
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from common.grad_buckets import average_in_buckets
from common.run_lock import release_all
from common.watchdog import GRACE_S

# Launchers export one of these; a size above 1 without Horovod means N independent trainings.
_LAUNCHER_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS",
                       "HOROVOD_SIZE", "SLURM_NTASKS")


def _launcher_size():
    for var in _LAUNCHER_SIZE_VARS:
        value = os.environ.get(var)
        if value and value.isdigit() and var != "SLURM_NTASKS":
            return int(value), var
    # SLURM_NTASKS is also set inside a batch script run as one task; trust it only under srun.
    if os.environ.get("SLURM_STEP_ID") and os.environ.get("SLURM_NTASKS", "").isdigit():
        return int(os.environ["SLURM_NTASKS"]), "SLURM_NTASKS"
    return 1, None


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    hvd: object = None  # the horovod.tensorflow module, or None for a world of one
    compression: object = None  # a horovod Compression for the gradients (None: none)
    bucket_mb: float = 0.0  # gradient bucket size, config horovod.bucket_mb (0: one group)

    @property
    def is_root(self):
        return self.rank == 0

    def allreduce_sum(self, values):
        """Sum a float64 numpy vector over ranks (metric sums and counts)."""
        values = np.asarray(values, dtype=np.float64)
        if self.hvd is None:
            return values
        return self.hvd.allreduce(tf.constant(values), op=self.hvd.Sum, name=None).numpy()

    def broadcast_variables(self, variables):
        if self.hvd is not None and variables:
            self.hvd.broadcast_variables(variables, root_rank=0)

    def broadcast_object(self, obj):
        """Rank 0's Python object on every rank."""
        if self.hvd is None:
            return obj
        return self.hvd.broadcast_object(obj, root_rank=0)

    def allgather_object(self, obj):
        """Every rank's Python object, in rank order, on every rank (a world of one: [obj])."""
        if not self.parallel:
            return [obj]
        return self.hvd.allgather_object(obj)

    @property
    def parallel(self):
        return self.hvd is not None and self.size > 1

    def average_gradients(self, grads, riders=None):
        """(mean of each gradient over ranks, mean of `riders`): gradients in grouped allreduces
        of about `bucket_mb` MB each, last layers first, that start while the backward pass still
        runs (common.grad_buckets); `riders`, a float32 vector (the step's loss and stop
        requests), in the last of them. A world of one adds no ops. Horovod's
        DistributedGradientTape builds one allreduce per variable: on the DeepLabv3+ step that
        made tracing ~1.5x slower and each step ~15% slower than one group."""
        if not self.parallel:
            return grads, riders
        return average_in_buckets(self.hvd, grads, int(self.bucket_mb * 2**20),
                                  self.compression, riders)


def _pin_gpu(local_rank):
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    if gpus:
        tf.config.set_visible_devices(gpus[local_rank % len(gpus)], "GPU")


def horovod_environment(hvd_cfg, output_dir, stall_timeout_s=0):
    """The HOROVOD_* variables that config section `horovod` and train.stall_timeout_s set;
    Horovod reads them at init. Its stall shutdown comes after the watchdog's report
    (common/watchdog.py), as a backstop that names the ranks missing from a collective."""
    env = {}
    if stall_timeout_s:
        env["HOROVOD_STALL_CHECK_TIME_SECONDS"] = str(max(1, int(min(60, stall_timeout_s / 2))))
        env["HOROVOD_STALL_SHUTDOWN_TIME_SECONDS"] = str(int(stall_timeout_s + 2 * GRACE_S))
    if hvd_cfg.get("fusion_threshold_mb") is not None:
        env["HOROVOD_FUSION_THRESHOLD"] = str(int(hvd_cfg["fusion_threshold_mb"] * 2**20))
    if hvd_cfg.get("cycle_time_ms") is not None:
        env["HOROVOD_CYCLE_TIME"] = f"{hvd_cfg['cycle_time_ms']:g}"
    if hvd_cfg.get("timeline"):
        env["HOROVOD_TIMELINE"] = os.path.join(output_dir, hvd_cfg["timeline"])
    return env


def init_world(hvd_cfg=None, output_dir=".", stall_timeout_s=0):
    """Initialise Horovod (if installed) with the config's `horovod` settings, pin one GPU per
    local rank, return the World."""
    hvd_cfg = hvd_cfg or {}
    try:
        import horovod.tensorflow as hvd
    except ImportError:
        size, var = _launcher_size()
        if size > 1:
            raise RuntimeError(
                f"launched as {size} ranks ({var}={size}) but horovod.tensorflow cannot be "
                "imported: this would run independent trainings. Install Horovod "
                "(scripts/setup.sh) or launch a single process.") from None
        _pin_gpu(0)
        return World()
    env = horovod_environment(hvd_cfg, output_dir, stall_timeout_s)
    if "HOROVOD_TIMELINE" in env:  # Horovod opens it at init, before rank 0 makes output_dir
        os.makedirs(os.path.dirname(os.path.abspath(env["HOROVOD_TIMELINE"])), exist_ok=True)
    os.environ.update(env)
    hvd.init()
    _pin_gpu(hvd.local_rank())
    compression = hvd.Compression.fp16 if hvd_cfg.get("compression") == "fp16" else None
    return World(hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size(), hvd, compression,
                 hvd_cfg.get("bucket_mb") or 0.0)


def abort_all(world, exc):
    """Print the error once per failing rank and stop every rank with a non-zero code.

    A rank that raises while the others wait in an allreduce would hang the job; MPI_Abort ends it.
    """
    prefix = f"[rank {world.rank}] " if world.size > 1 else ""
    print(f"{prefix}ERROR: {exc}", file=sys.stderr, flush=True)
    if os.environ.get("TRAIN_DEBUG"):
        traceback.print_exc()
    release_all()  # the output folder's lock: MPI_Abort skips exit handlers
    # An error every rank raised together (an agreed decision) ends each rank by itself.
    if world.size > 1 and not getattr(exc, "every_rank", False):
        try:
            from mpi4py import MPI
            MPI.COMM_WORLD.Abort(1)
        except ImportError:
            pass
    sys.exit(1)
