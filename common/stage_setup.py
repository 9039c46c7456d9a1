"""What a stage trains on at this rank count: its local and global batch, its peak LR and its
rank-sharded data, as the config's scaling and LR rules give them."""
from dataclasses import dataclass

from common import lr as lr_rules
from common import watchdog
from common.accumulation import update_batches


@dataclass
class StageSetup:
    local_batch: int
    global_batch: int
    peak_lr: float
    train_data: object          # batches of one update: accumulate x local_batch per rank
    val_data: object
    accumulate: int = 1         # train.accumulate_steps: micro-batches per update

    def world_state(self, size):
        """What a resume on another rank count compares itself with (checkpoint "world")."""
        return {"size": size, "local_batch": self.local_batch,
                "accumulate_steps": self.accumulate,
                "global_batch": self.global_batch, "peak_lr": self.peak_lr}


def batch_sizes(stage, world_size):
    """(local batch, global batch) of `stage` on `world_size` ranks."""
    train = stage.train
    return lr_rules.batch_sizes(train["scaling"], train["local_batch"], train["global_batch"],
                                world_size, train["accumulate_steps"])


def stage_setup(stage, task, world, seed, log):
    """The StageSetup of `stage`, its data read (and checked) through the task; `seed` is the
    run's."""
    watchdog.progress("reading", stage.index)
    train = stage.train
    accumulate = train["accumulate_steps"]
    local, global_ = batch_sizes(stage, world.size)
    peak = lr_rules.scaled_lr(train["lr"]["base"], train["lr"]["base_batch"], global_,
                              train["lr"]["rule"])
    train_data, val_data = task.make_datasets(stage, local, world, seed + 1000 * stage.index)
    train_data = update_batches(train_data, accumulate)  # K micro-batches per update
    log.info(
        f"stage {stage.index} '{stage.name}': {train['scaling']} scaling, local batch {local}"
        f"{f' x {accumulate} accumulated' if accumulate > 1 else ''}, "
        f"global batch {global_} over {world.size} ranks, LR {train['lr']['base']:g} -> "
        f"{peak:g} ({train['lr']['rule']} rule), {train_data.num_samples} train / "
        f"{val_data.num_samples} val samples, {train_data.steps_per_epoch} steps/epoch")
    return StageSetup(local, global_, peak, train_data, val_data, accumulate)
