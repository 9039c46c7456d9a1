"""The seed's command line, with the seed's meanings, on top of --config/--set.

    mpiexec -n 2 python edsr/train.py --dataset data/climate --batchsize 32 --cropsize 32 \
        --layers 16 --filters 256 --epochs 100 [--resume] [--test]

--batchsize is the GLOBAL batch, split across the ranks (strong scaling). --test is a real
boolean: present means evaluate the latest checkpoint on the test split; `--test False` (or 0, no)
means train. Without --config the seed's defaults, edsr/configs/seed.yaml, apply.
"""
import argparse
import os

SEED_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "seed.yaml")
TO_KEYS = {"num_rows": "data.num_rows", "num_cols": "data.num_cols", "imgdepth": "data.depth",
           "cropsize": "data.crop", "layers": "model.layers", "filters": "model.filters"}
TRUE, FALSE = ("true", "1", "yes", "y", "on"), ("false", "0", "no", "n", "off")


def boolean(text):
    if text.lower() in TRUE:
        return True
    if text.lower() in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def translate(argv):
    """The seed's flags in `argv` rewritten as this repository's options."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--dataset")
    for flag in TO_KEYS:
        parser.add_argument(f"--{flag}", type=int)
    parser.add_argument("--batchsize", type=int)
    parser.add_argument("--test", type=boolean, nargs="?", const=True, default=False)
    seed, rest = parser.parse_known_args(argv)
    out = [] if any(a == "--config" or a.startswith("--config=") for a in rest) else [
        "--config", SEED_CONFIG]
    if seed.dataset is not None:
        out += ["--data-dir", seed.dataset]
    for flag, key in TO_KEYS.items():
        if getattr(seed, flag) is not None:
            out += ["--set", f"{key}={getattr(seed, flag)}"]
    if seed.batchsize is not None:
        out += ["--set", "train.scaling=strong", "--set", f"train.global_batch={seed.batchsize}"]
    if seed.test:
        out.append("--test")
    return out + rest
