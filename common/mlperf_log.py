"""MLPerf HPC logging (log.mlperf.enabled): rank 0 writes <output_dir>/mlperf.log with
mlperf-logging's mllog, holding the keys the HPC rules check: submission info, init and run
start/stop, batch, optimizer and schedule settings, epoch and evaluation start/stop, and the
target metric as eval_error (lower is better, e.g. CosmoFlow's MAE) or eval_accuracy (e.g.
DeepCAM's IoU). Epochs are numbered from 1 across the whole stage plan.

Each benchmark's rules name their own hyperparameter keys (mlperf_logging's
compliance_checker/hpc_3.0.0/closed_<benchmark>.yaml): DeepCAM's follow its PyTorch reference
(opt_lr, opt_betas, scheduler_* in steps), the others the older opt_learning_rate_* keys in
epochs that CosmoFlow's rules check. The values are the run's config and its LR schedule.
"""
import os

import tensorflow as tf

DEEPCAM_OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "lamb": "LAMB", "sgd": "SGD"}


class MLPerfLog:
    def __init__(self, cfg, world, benchmark, stages):
        from mlperf_logging import mllog  # imported only when the feature is on
        from mlperf_logging.mllog import constants

        self.c = constants
        self.benchmark, self.seed = benchmark, cfg["seed"]
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
        """Batch, optimizer and schedule settings of the run's first stage, then the end of
        init."""
        keys = deepcam_keys if self.benchmark == "deepcam" else epoch_schedule_keys
        accumulation = stage.train["accumulate_steps"]  # global_batch_size includes it
        for key, value in (("seed", self.seed), ("global_batch_size", setup.global_batch),
                           ("train_samples", train_samples), ("eval_samples", eval_samples),
                           ("gradient_accumulation_frequency", accumulation),
                           *keys(stage, setup)):
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


def epoch_schedule_keys(stage, setup):
    """CosmoFlow's keys (also used for apps without rules of their own): LR, warmup and decay in
    epochs, decay factors relative to the peak LR."""
    train, lr = stage.train, stage.train["lr"]
    keys = [("opt_name", train["optimizer"]),
            ("opt_base_learning_rate", setup.peak_lr),
            ("opt_learning_rate_warmup_epochs", lr["warmup_epochs"]),
            ("opt_learning_rate_warmup_factor", setup.peak_lr / lr["base"] if lr["base"] else 1.0),
            ("opt_learning_rate_decay_boundary_epochs", list(lr["decay_epochs"])),
            ("opt_learning_rate_decay_factor", list(lr["decay_factors"]) or 1.0),
            ("opt_weight_decay", train["weight_decay"])]
    if stage.model.get("dropout") is not None:  # None: the model preset's own
        keys.append(("dropout", stage.model["dropout"]))
    return keys


def deepcam_keys(stage, setup):
    """DeepCAM's keys, in its reference's terms: the optimizer's LR is where warmup starts and
    scheduler_lr_warmup_factor multiplies it up to the peak (factor 1: warmup from zero to opt_lr);
    warmup and milestones count steps."""
    train, lr = stage.train, stage.train["lr"]
    steps = setup.train_data.steps_per_epoch
    peak, warmup = setup.peak_lr, lr["warmup_epochs"] * steps
    # common/lr.py's WarmupDecay warms up from the base LR when scaling raised the peak above
    # it, else from zero
    opt_lr = lr["base"] if warmup > 0 and 0 < lr["base"] < peak else peak
    keys = [("opt_name", DEEPCAM_OPTIMIZERS[train["optimizer"]]),
            ("opt_lr", opt_lr),
            ("opt_betas", [train["beta_1"], train["beta_2"]]),
            ("opt_eps", train["epsilon"]),
            ("opt_weight_decay", train["weight_decay"]),
            ("batchnorm_group_size", 1),  # Keras BatchNormalization: statistics of one rank
            ("scheduler_lr_warmup_steps", whole(warmup)),
            ("scheduler_lr_warmup_factor", peak / opt_lr if opt_lr else 1.0)]
    if train["optimizer"] == "lamb":  # common/optimizers.py's Lamb
        keys += [("opt_bias_correction", True),  # Adam's moments divided by 1 - beta^t
                 ("opt_grad_averaging", True),   # m = beta_1 m + (1 - beta_1) g
                 ("opt_max_grad_norm", train["max_grad_norm"])]  # null: no clipping
    if lr["decay"] == "cosine":
        keys += [("scheduler_type", "cosine_annealing"),
                 ("scheduler_t_max", whole(max(stage.epochs * steps - warmup, 1))),
                 ("scheduler_eta_min", lr["min_lr"])]
    else:  # step decay; no decay is the same with no milestones
        keys += [("scheduler_type", "multistep"),
                 ("scheduler_milestones", [whole(e * steps) for e in lr["decay_epochs"]]
                  if lr["decay"] == "step" else []),
                 ("scheduler_decay_rate", decay_rate(lr["decay_factors"])
                  if lr["decay"] == "step" else 1.0)]
    return keys


def decay_rate(factors):
    """MultiStepLR's one rate g (LR = peak * g^k after the k-th milestone) when the factors are
    its powers; otherwise the factors themselves, which the closed rules reject."""
    if not factors:
        return 1.0
    rate = factors[0]
    powers = [rate ** (k + 1) for k in range(len(factors))]
    if all(abs(f - p) <= 1e-6 * max(abs(p), 1e-12) for f, p in zip(factors, powers)):
        return rate
    return list(factors)


def whole(x):
    """Step counts as integers when they are whole (fractional epochs can make them not)."""
    return int(round(x)) if abs(x - round(x)) < 1e-6 else x
