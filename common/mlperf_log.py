"""MLPerf HPC logging (log.mlperf.enabled): rank 0 writes <output_dir>/mlperf.log with
mlperf-logging's mllog, holding the keys the HPC rules check: submission info, init and run
start/stop, batch and optimizer settings, epoch and evaluation start/stop, and the target metric
as eval_error (lower is better, e.g. CosmoFlow's MAE) or eval_accuracy (e.g. DeepCAM's IoU).
Epochs are numbered from 1 across the whole stage plan."""
import os

import tensorflow as tf


class MLPerfLog:
    def __init__(self, cfg, world, benchmark, stages):
        from mlperf_logging import mllog  # imported only when the feature is on
        from mlperf_logging.mllog import constants

        self.c = constants
        self.path = os.path.join(cfg["output_dir"], "mlperf.log")
        os.makedirs(cfg["output_dir"], exist_ok=True)
        mllog.config(filename=self.path)
        self.log = mllog.get_mllogger()
        self.first_epoch = [sum(s.epochs for s in stages[:i]) + 1 for i in range(len(stages))]
        target = stages[-1].train["target"]
        self.metric = target["metric"]
        self.eval_key = "eval_accuracy" if target["mode"] == "max" else "eval_error"
        settings = cfg["log"]["mlperf"]
        c = constants
        for key, value in ((c.SUBMISSION_BENCHMARK, benchmark),
                           (c.SUBMISSION_ORG, settings["org"]),
                           (c.SUBMISSION_PLATFORM, settings["platform"]),
                           (c.SUBMISSION_DIVISION, settings["division"]),
                           (c.SUBMISSION_STATUS, settings["status"]),
                           ("number_of_nodes", max(world.size // world.local_size, 1)),
                           ("accelerators_per_node", world.local_size if tf.config.list_physical_devices("GPU") else 0)):
            self.log.event(key=key, value=value)
        self.log.event(key=c.CACHE_CLEAR, value=True)
        self.log.start(key=c.INIT_START)

    def settings(self, stage, setup, train_samples, eval_samples):
        """Batch and optimizer settings of the run's first stage, then the end of init."""
        train, lr = stage.train, stage.train["lr"]
        for key, value in (("global_batch_size", setup.global_batch),
                           ("train_samples", train_samples), ("eval_samples", eval_samples),
                           ("opt_name", train["optimizer"]),
                           ("opt_base_learning_rate", setup.peak_lr),
                           ("opt_learning_rate_warmup_epochs", lr["warmup_epochs"]),
                           ("opt_learning_rate_warmup_factor", setup.peak_lr / lr["base"]
                            if lr["base"] else 1.0),
                           ("opt_learning_rate_decay_boundary_epochs", list(lr["decay_epochs"])),
                           ("opt_learning_rate_decay_factor", list(lr["decay_factors"]) or 1.0),
                           ("opt_weight_decay", train["weight_decay"]),
                           ("gradient_accumulation_frequency", 1)):
            self.log.event(key=key, value=value)
        self.log.end(key=self.c.INIT_STOP)
        self.log.start(key=self.c.RUN_START)

    def epoch_start(self, stage_index, epoch):
        self.log.start(key=self.c.EPOCH_START,
                       metadata={"epoch_num": self.first_epoch[stage_index] + epoch})

    def epoch_end(self, record):
        """After training and validation: epoch stop, the evaluation and its metric."""
        num = {"epoch_num": self.first_epoch[record["stage"]] + record["epoch"]}
        self.log.end(key=self.c.EPOCH_STOP, metadata=num)
        self.log.start(key=self.c.EVAL_START, metadata=num)
        self.log.event(key=self.eval_key, value=float(record[self.metric]), metadata=num)
        self.log.end(key=self.c.EVAL_STOP, metadata=num)

    def run_stop(self, success):
        self.log.end(key=self.c.RUN_STOP, metadata={"status": "success" if success else "aborted"})
