"""The seed's command line, with the seed's meanings, on top of --config/--set.

    mpiexec -n 2 python edsr/train.py --dataset data/climate --batchsize 32 --cropsize 32 \
        --layers 16 --filters 256 --epochs 100 [--resume] [--test]

--batchsize is the GLOBAL batch, split across the ranks (strong scaling). --test is a real
boolean: present means evaluate the latest checkpoint on the test split; `--test False` (or 0, no)
means train. Without --config the seed's defaults, edsr/configs/seed.yaml, apply.
"""
import argparse
import os

from common.config import build_parser

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


def add_seed_flags(group):
    """The seed's flags and what they set; the same table parses and documents them."""
    group.add_argument("--dataset", metavar="DIR",
                       help="data folder with train/, test/, val/ of HR/ and LR/ PNGs (as --data-dir)")
    meanings = {"num_rows": "image height in pixels", "num_cols": "image width in pixels",
                "imgdepth": "channels: 1 grayscale, 3 RGB",
                "cropsize": "edge of the random aligned training crops",
                "layers": "residual blocks", "filters": "filters of every convolution"}
    for flag, key in TO_KEYS.items():
        group.add_argument(f"--{flag}", type=int, metavar="N", help=f"{meanings[flag]} ({key})")
    group.add_argument("--batchsize", type=int, metavar="N",
                       help="GLOBAL batch, split across the ranks (strong scaling: "
                            "train.scaling=strong, train.global_batch=N; N must divide by the "
                            "number of ranks)")
    group.add_argument("--test", type=boolean, nargs="?", const=True, default=False,
                       metavar="BOOL", help="a boolean: --test (or --test true) evaluates the "
                       "latest checkpoint on the test split; --test false (0, no) trains")


def translate(argv, description="EDSR"):
    """The seed's flags in `argv` rewritten as this repository's options; -h/--help prints the
    common options and the seed's flags, then exits."""
    parser = argparse.ArgumentParser(add_help=False)
    add_seed_flags(parser)
    seed, rest = parser.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        print_help(description)
        raise SystemExit(0)
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


def print_help(description):
    """The common parser's help with --config optional (the seed's defaults apply without it)
    and the seed's flags in their own group; its --test is the seed's boolean one."""
    parser = build_parser(description)
    for action in parser._actions:
        if action.dest == "config":
            action.required = False
            action.help = "scenario YAML file (default: edsr/configs/seed.yaml)"
    parser.conflict_handler = "resolve"  # the seed's --test replaces the plain switch
    add_seed_flags(parser.add_argument_group(
        "the seed's command line",
        "Run unchanged, e.g. `edsr/train.py --dataset DIR --batchsize 32 --layers 16 "
        "--filters 256 --epochs 100 [--resume] [--test]`; --epochs and --resume are the ones "
        "above. Without --config the seed's defaults (edsr/configs/seed.yaml) apply."))
    parser.print_help()
