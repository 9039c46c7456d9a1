"""Throughput of an app on this machine: python scripts/benchmark.py --app APP [options].

APP is cosmoflow, deepcam or edsr; `--app APP --help` lists that app's options (its
<app>/benchmark.py). Every figure is a median over repeats measured round-robin in one run.
"""
import argparse
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
APPS = ("cosmoflow", "deepcam", "edsr")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=False)
    parser.add_argument("--app", choices=APPS, default="cosmoflow")
    args, rest = parser.parse_known_args(argv)
    return importlib.import_module(f"{args.app}.benchmark").main(rest)


if __name__ == "__main__":
    main()
