"""Entry point shared by every app's train.py: config -> world -> Trainer, with clean failure.

Any error stops every rank with a non-zero exit code (MPI_Abort when there are several), so a
problem seen by one rank never leaves the others waiting in a collective.
"""
import os

import tensorflow as tf

from common import run_identity, run_lock, watchdog
from common.config import COMMON_DEFAULTS, default_config, load_config, merge_defaults
from common.distributed import World, abort_all, init_world
from common.faults import set_rank
from common.logs import get_logger
from common.trainer import Trainer


def run(app_defaults, make_task, description, argv=None):
    """Train the app described by `app_defaults` (its data/model sections) and `make_task`."""
    world = World()
    try:
        schema = merge_defaults(COMMON_DEFAULTS, app_defaults)
        cfg = load_config(schema, argv, description)
        world = init_world(cfg["horovod"], cfg["output_dir"], cfg["train"]["stall_timeout_s"])
        set_rank(world.rank)
        watchdog.start(cfg["train"]["stall_timeout_s"], world.rank, world.size)
        log = get_logger(world)
        checkpoints = os.path.join(cfg["output_dir"], "checkpoints")
        if not cfg["test"]:  # --test leaves the training run's files alone
            run_lock.hold(world, cfg["output_dir"])
        defaults = default_config(schema)
        agree(world, lambda: run_identity.check(cfg, checkpoints, log, defaults=defaults)
              if cfg["test"] else run_identity.record_start(cfg, world, log, defaults))
        tf.keras.utils.set_random_seed(cfg["seed"])  # identical initial weights on every rank
        if cfg["deterministic"]:
            tf.config.experimental.enable_op_determinism()
        log.info(f"{description}: {world.size} rank(s), output in {cfg['output_dir']}"
                 + (", deterministic kernels" if cfg["deterministic"] else ""))
        trainer = Trainer(cfg, make_task(cfg), world, log, name=description.lower())
        if cfg["test"]:
            results = trainer.test()
            watchdog.stop()
            return results
        history = trainer.fit()
        watchdog.stop()
        log.info(f"done: {len(history)} epochs trained in this run")
        return history
    except SystemExit:
        raise
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - reported, then every rank exits
        abort_all(world, exc)


def agree(world, decide):
    """Run `decide()` on rank 0 and raise its RunMismatch on every rank together."""
    problem = None
    if world.is_root:
        try:
            decide()
        except run_identity.RunMismatch as exc:
            problem = str(exc)
    problem = world.broadcast_object(problem)
    if problem:
        raise run_identity.RunMismatch(problem)
