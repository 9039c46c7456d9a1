"""Each app's CPU kernels as users start it: CosmoFlow and DeepCAM ask for oneDNN before
TensorFlow loads (python -m, the script path, the benchmark entry, the epoch and bucket
benchmarks), EDSR keeps TensorFlow's choice, and the user's TF_ENABLE_ONEDNN_OPTS always wins."""
import os
import subprocess
import sys

from conftest import REPO

REPORT = "from common.cpu_kernels import onednn_enabled; print('onednn', onednn_enabled())"


def onednn_after(code, **env):
    """Run `code`, then report whether this process runs oneDNN's kernels."""
    environ = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    environ.update(env, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", f"{code}\n{REPORT}"], cwd=REPO, env=environ,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.split("onednn ")[-1].strip() == "True"


def tensorflow_default():
    return onednn_after("import tensorflow")


def as_script(app):
    """`python <app>/train.py --help`: TensorFlow loads from the script's own imports."""
    return ("import runpy, sys\nsys.argv = ['train.py', '--help']\ntry:\n"
            f"    runpy.run_path('{app}/train.py', run_name='__main__')\n"
            "except SystemExit:\n    pass")


def as_module(module, *argv):
    """`python -m module argv...`: the module runs as __main__ in this process."""
    return (f"import runpy, sys\nsys.argv = [{module!r}, *{list(argv)!r}]\n"
            f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)")


def test_three_d_and_segmentation_apps_run_onednn_unless_the_user_says_no():
    assert onednn_after(as_script("cosmoflow"))
    assert onednn_after(as_script("deepcam"))
    benchmark_help = ("import contextlib, scripts.benchmark\nwith contextlib.suppress(SystemExit):"
                      "\n    scripts.benchmark.main(['--app', 'cosmoflow', '--help'])")
    assert onednn_after(benchmark_help)
    assert not onednn_after("import cosmoflow.train", TF_ENABLE_ONEDNN_OPTS="0")


def test_the_epoch_benchmark_loads_its_app_before_tensorflow(tmp_path):
    # No setting to measure: it loads the app and writes its demo data, and nothing trains.
    bench = as_module("benchmarks.epoch_bench", "--app", "cosmoflow", "--settings")
    assert onednn_after(bench, TMPDIR=str(tmp_path))
    assert not list(tmp_path.iterdir())  # its demo data is removed


def test_edsr_keeps_tensorflows_choice_and_a_late_request_changes_nothing():
    default = tensorflow_default()
    assert onednn_after("import edsr.train") == default
    # TensorFlow already loaded: its choice stands, and the variable is left alone.
    late = ("import tensorflow, os\nimport cosmoflow.train\n"
            "assert 'TF_ENABLE_ONEDNN_OPTS' not in os.environ")
    assert onednn_after(late) == default


def test_the_bucket_benchmark_imports_tensorflow_only_after_its_app():
    # Its main loads the app first; nothing it imports at module level may load TensorFlow.
    code = "import sys, benchmarks.bucket_bench\nassert 'tensorflow' not in sys.modules"
    assert onednn_after(code) == tensorflow_default()
