"""What a run trains, kept beside its checkpoints, so that --resume and --test continue the same
run: the resolved config and the commit of every start.

A resume may change what a job chain legitimately changes (epochs, rank count and gradient
accumulation, the path of the same data, logging, output, Horovod settings, staging, speed
settings, and the learning rate, which the non-finite loss message tells users to lower); any
other difference (network, data, stage plan, optimizer, loss, seed) is refused with the differing
keys listed.
Each start's config is kept as config-<n>.yaml; config.yaml is the latest.
"""
import glob
import json
import os
import re
import sys

from common.checkpoint import write_atomically
from common.config import save_config
from common.multires import plan_stages
from common.summary import run_record

IDENTITY = "identity.json"  # in the checkpoints folder
# Keys a resume may change, per section of a resolved stage; everything else must match.
FREE = {
    "data": {"root", "stage_dir", "shuffle", "format", "compression", "eval_batch",
             "preview_images", "preview_samples"},
    # precision: checkpoints hold float32 weights and the inner optimizer, so they load across
    # precisions (a run may move to bfloat16 on GPUs that have it)
    # accumulate_steps: like the rank count, it moves the same run onto fewer or more GPUs
    "train": {"epochs", "early_stop", "target", "jit_compile", "steps_per_call", "precision",
              "stall_timeout_s", "lr", "accumulate_steps"},
    "model": set(),
}


class RunMismatch(ValueError):
    every_rank = True  # rank 0 decides and broadcasts: every rank raises it together


def trained(cfg):
    """The part of `cfg` that decides what is trained: seed and each stage's resolved sections
    without the keys a resume may change."""
    stages = [{"name": s.name, **{section: {k: v for k, v in getattr(s, section).items()
                                            if k not in FREE[section]}
                                  for section in FREE}} for s in plan_stages(cfg)]
    return {"seed": cfg["seed"], "stages": stages}


def differences(before, now, path="", defaults=None):
    """Dotted keys whose values differ, as 'key: before -> now'. A key the recorded run's code
    did not have passes at its value in `defaults` (the config's defaults): a new key's default
    keeps the behaviour the run was trained with, so upgrading the code mid-run resumes."""
    if isinstance(before, dict) and isinstance(now, dict):
        out = []
        for key in list(before) + [k for k in now if k not in before]:
            where = f"{path}.{key}" if path else str(key)
            if key not in before and defaults is not None and \
                    default_at(defaults, where) == now[key]:
                continue
            out += differences(before.get(key, "(absent)"), now.get(key, "(absent)"), where,
                               defaults)
        return out
    if isinstance(before, list) and isinstance(now, list) and before and now and \
            all(isinstance(v, dict) for v in before + now):  # the stages
        count = [] if len(before) == len(now) else [f"{path}: {len(before)} -> {len(now)}"]
        return count + [d for i, (a, b) in enumerate(zip(before, now))
                        for d in differences(a, b, f"{path}.{i}", defaults)]
    return [] if before == now else [f"{path}: {before!r} -> {now!r}"]


def default_at(defaults, path):
    """The default of a dotted identity key (stages.<i>.<section>.<key>: the section's default),
    or a marker that equals nothing when the key has none."""
    parts = path.split(".")
    value = defaults
    for part in parts[2:] if parts[0] == "stages" else parts:
        if not isinstance(value, dict) or part not in value:
            return object()
        value = value[part]
    return value


def check(cfg, checkpoints, log, commit=None, defaults=None):
    """Raise RunMismatch when `cfg` trains something other than the run recorded in
    `checkpoints`; a run recorded before identities were kept passes. `defaults`: the config's
    defaults, which keys added to the code since the recording may hold."""
    path = os.path.join(checkpoints, IDENTITY)
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            recorded = json.load(f)
        before = recorded["trained"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RunMismatch(f"{path}: cannot read the run's identity ({err})") from None
    changed = differences(before, trained(cfg), defaults=defaults)
    if changed:
        raise RunMismatch(
            f"{cfg['output_dir']} holds a run trained with other settings (recorded in {path}); "
            "these would change what is trained:\n  " + "\n  ".join(changed) +
            "\nUse the run's settings, or another --output-dir for a new run")
    if recorded.get("commit") and commit and recorded["commit"] != commit:
        log.info(f"the code changed since the checkpoint: commit {recorded['commit'][:12]} -> "
                 f"{commit[:12]}")


def has_checkpoint(checkpoints):
    return os.path.isdir(checkpoints) and any(
        n == "latest.json" or n.startswith("stage") for n in os.listdir(checkpoints))


def record_start(cfg, world, log, defaults=None):
    """Rank 0, at a training start: check a resume against the recorded run, then keep this
    start's config (config-<n>.yaml and config.yaml), run.json and the run's identity."""
    out = cfg["output_dir"]
    checkpoints = os.path.join(out, "checkpoints")
    record = run_record(world, [sys.executable, *sys.argv])
    if has_checkpoint(checkpoints):
        if not cfg["resume"]:
            return  # the trainer refuses to start over a checkpoint; leave the record alone
        check(cfg, checkpoints, log, record["commit"], defaults)
    os.makedirs(checkpoints, exist_ok=True)
    taken = [int(m.group(1)) for m in (re.search(r"config-(\d+)\.yaml$", p)
                                       for p in glob.glob(os.path.join(out, "config-*.yaml")))
             if m]
    save_config(cfg, os.path.join(out, f"config-{max(taken, default=0) + 1}.yaml"))
    save_config(cfg, os.path.join(out, "config.yaml"))
    with open(os.path.join(out, "run.json"), "w") as f:
        json.dump(record, f, indent=1)
    write_atomically(os.path.join(checkpoints, IDENTITY),
                     json.dumps({"trained": trained(cfg), "commit": record["commit"]}, indent=1))


def check_stage(latest, stages, store_dir):
    """A clear error when the checkpoint's stage is not in the configured plan."""
    if latest is not None and latest["stage"] >= len(stages):
        raise RunMismatch(
            f"{store_dir}/{latest['name']} was written in stage {latest['stage']}, but the config "
            f"plans {len(stages)} stage(s) ({', '.join(s.name for s in stages)}); use the run's "
            "stages")
