"""Throughput of an app on this machine: python scripts/benchmark.py --app APP [options].

APP is a registered app (common/apps.py: cosmoflow, deepcam, edsr); `--app APP --help` lists
that app's options (its <app>/benchmark.py). Every figure is a median over repeats measured
round-robin in one run.

    --scaling        throughput at 1 and 2 ranks and one allreduce (benchmarks/scaling.py)
    --model-scaling  predicted efficiency on a GPU cluster (benchmarks/scaling_model.py)
"""
import argparse
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from common import apps  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=False)
    parser.add_argument("--app", choices=apps.REGISTERED, default="cosmoflow")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--scaling", action="store_true")
    mode.add_argument("--model-scaling", action="store_true")
    args, rest = parser.parse_known_args(argv)
    app = apps.load(args.app)  # first: the app picks TensorFlow's CPU kernels
    if args.scaling:
        return importlib.import_module("benchmarks.scaling").main(args.app, rest)
    if args.model_scaling:
        return importlib.import_module("benchmarks.scaling_model").main(args.app, rest)
    return app.hook("benchmark")(rest)


if __name__ == "__main__":
    main()
