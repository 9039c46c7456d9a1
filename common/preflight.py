"""Checks of a run's stages against the app's task and the machine, made before any work, so a
mistake in the config stops the run at once with the key to change."""
import tensorflow as tf


def check_metric_names(stages, metric_names, probing):
    """Early stop and target must watch a metric the run records: the losses and the task's
    val_* metrics. Early stop may also watch the final_* scores (on the last stage's validation
    data) when `probing`: log.final_val on a multi-stage run."""
    known = ["train_loss", "val_loss"] + [f"val_{name}" for name in metric_names]
    probed = known + ([f"final_{name}" for name in known[1:]] if probing else [])
    for stage in stages:
        for section, choices in (("early_stop", probed), ("target", known)):
            metric = stage.train[section]["metric"]
            if metric not in choices:
                raise ValueError(f"config key 'train.{section}.metric': unknown metric "
                                 f"{metric!r} (choose from {', '.join(choices)})")


def check_compilation(stages):
    """XLA's CPU compiler (TensorFlow 2.15) rejects mixed-precision convolution gradients
    ("Seen floating point types of different precisions"): say so before any work."""
    if tf.config.list_logical_devices("GPU"):
        return
    for stage in stages:
        if stage.train["jit_compile"] and stage.train["precision"] != "float32":
            raise ValueError(
                f"stage '{stage.name}': train.jit_compile with train.precision="
                f"{stage.train['precision']} needs a GPU (XLA on CPU cannot compile "
                "mixed-precision convolution gradients); turn one of them off")
