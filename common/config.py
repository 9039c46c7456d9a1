"""YAML scenario + CLI overrides, checked against the app's defaults.

The defaults dict is the schema: a key it lacks is unknown, a value of another type is wrong, a
`Choice` lists the accepted strings and a `Range` bounds a number (or each number of a list). `stages` is a list whose items may override the `data`,
`model` and `train` sections for one stage of a multi-resolution run.
"""
import argparse
import copy
import functools
import os

import yaml


class ConfigError(ValueError):
    pass


class Choice:
    """A string key restricted to `options`; the first one is the default."""

    def __init__(self, *options):
        self.options = options


class Range:
    """A number key (or list of numbers) with bounds; `default` may be None when `kind` is given.

    `low`/`high` are inclusive unless `open_low`; `increasing` asks a list to rise strictly.
    """

    def __init__(self, default, low=None, high=None, kind=None, open_low=False, increasing=False):
        self.default, self.low, self.high = default, low, high
        self.kind = kind or type(default)
        self.open_low, self.increasing = open_low, increasing

    def describe(self):
        low = "" if self.low is None else f"{'>' if self.open_low else '>='} {self.low:g}"
        high = "" if self.high is None else f"<= {self.high:g}"
        return " and ".join(part for part in (low, high) if part)

    def check(self, path, value):
        if value is None:
            return None
        numbers = value if isinstance(value, list) else [value]
        for number in numbers:
            if isinstance(number, bool) or not isinstance(number, (int, float)):
                raise ConfigError(f"config key '{path}' expects numbers, got {value!r}")
            too_low = self.low is not None and (
                number <= self.low if self.open_low else number < self.low)
            if too_low or (self.high is not None and number > self.high):
                what = "each value of " if isinstance(value, list) else ""
                raise ConfigError(f"config key '{path}': {what}{number!r} is out of range; "
                                  f"it must be {self.describe()}")
        if self.increasing and any(b <= a for a, b in zip(numbers, numbers[1:])):
            raise ConfigError(f"config key '{path}' must be strictly increasing, got {value!r}")
        return value


STAGE_KEYS = ("name", "data", "model", "train")

# 4 MB: the demo networks' gradients (1.4 MB CosmoFlow, 1.2 MB DeepCAM) fit one bucket, so the
# CPU demo keeps one grouped allreduce; the full-size ones get 3 (CosmoFlow: its 16 MB dense
# head first), 33 (DeepCAM) and 17 (EDSR) buckets to start during the backward pass. README,
# "Gradient buckets", has the 2-rank measurements.
BUCKET_MB_DEFAULT = 4.0

COMMON_DEFAULTS = {
    "seed": Range(0, low=0),
    # TensorFlow's deterministic kernels: a seed then fixes the whole run, bit for bit, on the
    # same machine and rank count (without it, GPU kernels may sum in varying order). Can cost
    # speed on GPUs.
    "deterministic": False,
    "output_dir": "runs/out",
    "resume": False,
    "test": False,  # evaluate the latest checkpoint on the test split instead of training
    "data": {
        # global: each epoch deals a fresh permutation of all training samples to the ranks.
        # local: each rank keeps a fixed shard (fixed by the seed) and reshuffles within it, so
        # a node reads only its own files (what staging to node-local storage needs).
        "shuffle": Choice("global", "local"),
        # Node-local folder (/dev/shm/<name>, NVMe) the ranks of each node copy their input to
        # before training, GZIP TFRecords decompressed; a complete stage is reused by later
        # jobs. With shuffle local a node stages only its ranks' shards. "": read data.root.
        "stage_dir": "",
    },
    "train": {
        "epochs": Range(10, low=1),
        "local_batch": Range(8, low=1),
        "scaling": Choice("weak", "strong"),  # weak: fixed local batch; strong: fixed global batch
        "global_batch": Range(None, low=1, kind=int),  # strong scaling: split over the ranks
        # Sum the gradients of K micro-batches of local_batch per rank before the one allreduce
        # and update: the global batch is local_batch x ranks x K (common/accumulation.py).
        "accumulate_steps": Range(1, low=1),
        "optimizer": Choice("sgd", "adam", "adamw", "lamb"),
        "momentum": Range(0.9, low=0.0, high=1.0),   # sgd
        "weight_decay": Range(0.0, low=0.0),         # sgd, adamw, lamb (decoupled)
        "beta_1": Range(0.9, low=0.0, high=1.0),     # adam, adamw, lamb
        "beta_2": Range(0.999, low=0.0, high=1.0),
        "epsilon": Range(1e-7, low=0.0, open_low=True),
        # Every optimizer: scale the rank-averaged gradients down to this global L2 norm when
        # above it (MLPerf DeepCAM's LAMB: 1.0); null: no clipping.
        "max_grad_norm": Range(None, low=0.0, open_low=True, kind=float),
        "lr": {
            "base": Range(0.001, low=0.0),  # tuned for a global batch of base_batch
            "base_batch": Range(8, low=1),
            "rule": Choice("linear", "sqrt", "none"),
            "warmup_epochs": Range(0.0, low=0.0),
            "decay": Choice("none", "step", "cosine"),
            # step decay: from decay_epochs[i] on, LR = peak * decay_factors[i]
            "decay_epochs": Range([], low=0.0, increasing=True),
            "decay_factors": Range([], low=0.0),
            "min_lr": Range(0.0, low=0.0),  # cosine floor
        },
        "early_stop": {"metric": "val_loss", "patience": Range(0, low=0),  # patience 0 = off
                       "min_delta": Range(0.0, low=0.0), "mode": Choice("min", "max")},
        "target": {"metric": "val_loss", "value": Range(None, kind=float),
                   "mode": Choice("min", "max")},
        # Layers compute in float16/bfloat16 with float32 weights; float16 adds dynamic loss
        # scaling. Checkpoints hold float32 weights whatever the precision.
        "precision": Choice("float32", "mixed_float16", "mixed_bfloat16"),
        "jit_compile": False,  # XLA-compile forward + backward (Horovod's allreduce stays outside)
        "steps_per_call": Range(1, low=1),  # training steps per compiled call (small networks)
        # A stage that trains the previous stage's network (same model settings, every weight
        # the same shape) restarts its optimizer state unless true: then it keeps Adam's moments
        # and step count, which can be scaled wrongly for gradients at another resolution.
        "carry_optimizer": False,
        # An earlier stage's local (and global) batch becomes the last stage's times the ratio
        # of their pixels per sample (4x for 2D at half resolution, 8x for 3D): the same pixels,
        # so about the same memory, per step; the LR follows lr.rule for that batch.
        "memory_equivalent_batch": False,
        # A rank without progress (a step, a read, a validation, a checkpoint) for this long
        # stops the job, naming where each rank stood; Horovod's stall shutdown follows it.
        # Read from the base train section. 0: off.
        "stall_timeout_s": Range(1800.0, low=0.0),
    },
    "log": {
        "metrics_format": Choice("jsonl", "csv"),
        "progress": True,
        # Read the training loss back from the device every N steps (and at epoch end): each
        # read waits for the step, so reading every step stalls a GPU. A non-finite loss is
        # then caught at most N-1 steps late, before any checkpoint is written.
        "every_steps": Range(10, low=1),
        "checkpoint_keep": Range(2, low=1),
        # Also checkpoint inside an epoch every N minutes (rank 0's clock; 0: only at epoch
        # ends and on a scheduler's signal): what a hard kill or a node failure can lose. A
        # save costs a few seconds, under 0.5% of 30 minutes, while an epoch on real data can
        # run for hours.
        "checkpoint_every_minutes": Range(30.0, low=0.0),
        # Score earlier stages' models on the last stage's validation data too (final_val_*):
        # what a coarse stage contributes, measured at full resolution. Costs one extra
        # validation pass per earlier-stage epoch.
        "final_val": False,
        "tensorboard": False,  # rank 0 writes <output_dir>/tensorboard/ event files
        "mlperf": {  # rank 0 writes <output_dir>/mlperf.log in the MLPerf HPC format
            "enabled": False,
            "org": "unknown",
            "platform": "unknown",
            "division": Choice("closed", "open"),
            "status": Choice("research", "onprem", "cloud", "preview"),
        },
    },
    # Horovod's own settings for this run (null: Horovod's default or the exported HOROVOD_*).
    "horovod": {
        "compression": Choice("none", "fp16"),  # gradients travel as float16, averaged in float32
        "fusion_threshold_mb": Range(None, low=0.0, kind=float),  # HOROVOD_FUSION_THRESHOLD
        "cycle_time_ms": Range(None, low=0.0, open_low=True, kind=float),  # HOROVOD_CYCLE_TIME
        "timeline": "",  # Chrome-trace file of Horovod's collectives (under output_dir); "": off
        # Gradients averaged in grouped allreduces of about this many MB each, last layers first,
        # each started as soon as its gradients exist, behind the rest of the backward pass
        # (common/grad_buckets.py); 0: one group after the whole backward pass.
        "bucket_mb": Range(BUCKET_MB_DEFAULT, low=0.0),
    },
    "stages": [],
}

# The plain flags: (flag, config key, type, help). A value flag overrides its key in the base
# and in every stage that sets it; a bool flag is a switch that sets its key to true.
PLAIN_FLAGS = (
    ("--epochs", "train.epochs", int, "epochs of every stage"),
    ("--local-batch", "train.local_batch", int, "per-rank batch of every stage"),
    ("--lr", "train.lr.base", float, "base learning rate of every stage"),
    ("--data-dir", "data.root", str, "data root; relative stage data roots lie under it"),
    ("--output-dir", "output_dir", str, "folder for checkpoints, metrics and config"),
    ("--seed", "seed", int, "random seed of the run (initial weights, data order)"),
    ("--resume", "resume", bool, "continue from the latest checkpoint in the output folder"),
    ("--test", "test", bool, "evaluate the latest checkpoint on the test split, then exit"),
)


def flag_dest(flag):
    """The argparse destination of `flag` (--local-batch -> local_batch): resolve's flags keys."""
    return flag[2:].replace("-", "_")


def merge_defaults(*parts):
    """Deep-merge schema dicts (app sections added to COMMON_DEFAULTS)."""
    return functools.reduce(deep_merge, parts, {})


def default_config(schema):
    """The config of no YAML and no overrides: every key at its default."""
    return _plain_value(schema)


def with_defaults(section, name):
    """Section `name` of COMMON_DEFAULTS (data, train, ...) with the schema's default for every
    key it lacks: a resolved config has them all, a section built by hand (tests, tools) may
    hold only the keys it cares about. Readers index it directly: one place holds the defaults."""
    return {**_plain_value(COMMON_DEFAULTS[name]), **section}


def _plain_value(schema):
    if isinstance(schema, Choice):
        return schema.options[0]
    if isinstance(schema, Range):
        return copy.deepcopy(schema.default)
    if isinstance(schema, dict):
        return {k: _plain_value(v) for k, v in schema.items()}
    return copy.deepcopy(schema)


def _check_value(path, schema, value):
    """Return `value` converted to the schema's type, or raise naming the key."""
    if isinstance(schema, Choice):
        if value not in schema.options:
            raise ConfigError(f"config key '{path}' must be one of {list(schema.options)}, "
                              f"got {value!r}")
        return value
    if isinstance(schema, Range):
        typed = _check_type(path, schema.kind(), value) if schema.kind is not type(None) else value
        return schema.check(path, typed)
    return _check_type(path, schema, value)


def _check_type(path, schema, value):
    if schema is None or value is None:
        return value
    if isinstance(schema, bool) or isinstance(value, bool):
        if isinstance(schema, bool) and isinstance(value, bool):
            return value
    elif isinstance(schema, float) and isinstance(value, (int, float)):
        return float(value)
    elif isinstance(value, type(schema)):
        return value
    raise ConfigError(f"config key '{path}' expects {type(schema).__name__}, "
                      f"got {type(value).__name__} {value!r}")


def _overlay(path, schema, base, update):
    """Apply `update` (dict from YAML) onto `base`, validating against `schema`."""
    if not isinstance(update, dict):
        raise ConfigError(f"config key '{path or '<top>'}' expects a mapping, got {update!r}")
    for key, value in update.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in schema:
            known = ", ".join(sorted(schema))
            raise ConfigError(f"unknown config key '{where}' (known here: {known})")
        if where == "stages":
            base[key] = [_stage(f"stages.{i}", schema, s) for i, s in enumerate(value or [])]
        elif isinstance(schema[key], dict):
            _overlay(where, schema[key], base[key], value)
        else:
            base[key] = _check_value(where, schema[key], value)


def _stage(path, schema, stage):
    if not isinstance(stage, dict):
        raise ConfigError(f"config key '{path}' expects a mapping, got {stage!r}")
    stage_schema = {"name": "", **{k: schema[k] for k in STAGE_KEYS[1:] if k in schema}}
    out = {}
    for key, value in stage.items():
        if key not in stage_schema:
            raise ConfigError(f"unknown config key '{path}.{key}' "
                              f"(a stage takes {', '.join(stage_schema)})")
        if key == "name":
            out[key] = _check_value(f"{path}.name", "", value)
        else:  # validate a partial section by overlaying it on that section's defaults
            _overlay(f"{path}.{key}", stage_schema[key], _plain_value(stage_schema[key]), value)
            out[key] = value
    return out


def _parse_assignment(text):
    if "=" not in text:
        raise ConfigError(f"--set expects KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else None


def apply_override(cfg, schema, dotted_key, value):
    """Set one dotted key (list items by index: stages.1.train.epochs) with validation."""
    parts = dotted_key.split(".")
    if parts[0] == "stages" and len(parts) > 1:
        try:
            stage = cfg["stages"][int(parts[1])]
        except (ValueError, IndexError):
            raise ConfigError(f"config key '{dotted_key}': no stage {parts[1]!r} "
                              f"(there are {len(cfg['stages'])})") from None
        update = value
        for part in reversed(parts[2:]):
            update = {part: update}
        merged = deep_merge(stage, update)
        cfg["stages"][int(parts[1])] = _stage(f"stages.{parts[1]}", schema, merged)
        return
    update = value
    for part in reversed(parts):
        update = {part: update}
    _overlay("", schema, cfg, update)


def deep_merge(base, update):
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def build_parser(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="scenario YAML file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set train.lr.rule=sqrt "
                             "or --set stages.1.train.epochs=5 (repeatable)")
    for flag, key, kind, text in PLAIN_FLAGS:
        if kind is bool:  # None when absent: the YAML's value stands
            parser.add_argument(flag, action="store_true", default=None, help=text)
        else:
            parser.add_argument(flag, type=kind, help=f"{text} ({key})")
    return parser


def load_config(schema, argv=None, description=None):
    """Parse argv, read the YAML, apply overrides; return the resolved config dict."""
    args = build_parser(description).parse_args(argv)
    return resolve(schema, args.config, args.set, vars(args))


def resolve(schema, path, assignments=(), flags=None):
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path) as f:
        try:
            from_file = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"cannot parse {path}: {err}") from None
    cfg = _plain_value(schema)
    try:
        _overlay("", schema, cfg, from_file)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    for text in assignments:
        apply_override(cfg, schema, *_parse_assignment(text))
    flags = flags or {}
    for flag, key, _, _ in PLAIN_FLAGS:
        if flags.get(flag_dest(flag)) is not None:
            _set_everywhere(cfg, schema, key, flags[flag_dest(flag)])
    return cfg


def _set_everywhere(cfg, schema, dotted_key, value):
    apply_override(cfg, schema, dotted_key, value)
    section, _, rest = dotted_key.partition(".")
    if not rest or dotted_key == "data.root":
        return  # top-level keys have no stage copies; stages' own data roots are deliberate
    for i, stage in enumerate(cfg["stages"]):
        node = stage.get(section, {})
        for part in rest.split(".")[:-1]:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if rest.split(".")[-1] in node:
            apply_override(cfg, schema, f"stages.{i}.{dotted_key}", value)


def save_config(cfg, path):
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
