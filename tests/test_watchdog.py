"""The stall watchdog on its own: Horovod's stall settings follow train.stall_timeout_s, and a
process without progress ends with code 3, saying where it stood; progress keeps it alive."""
import subprocess
import sys
import time

from common.distributed import horovod_environment
from conftest import REPO, launch_env


def test_horovod_stall_shutdown_follows_the_timeout():
    env = horovod_environment({}, ".", stall_timeout_s=1800)
    assert env["HOROVOD_STALL_CHECK_TIME_SECONDS"] == "60"
    assert env["HOROVOD_STALL_SHUTDOWN_TIME_SECONDS"] == "1820"  # after the watchdog's report
    assert "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS" not in horovod_environment({}, ".", 0)


SCRIPT = """
import time
from common import watchdog
watchdog.start({timeout}, 0, 1)
for step in range(1, 6):
    watchdog.progress("step", 0, 2, step)
    time.sleep(0.3)
time.sleep({stall})
print("finished", flush=True)
"""


def run(timeout, stall):
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", SCRIPT.format(timeout=timeout, stall=stall)],
                            cwd=REPO, env=launch_env(), capture_output=True, text=True,
                            timeout=60)
    return result, time.monotonic() - start


def test_no_progress_ends_the_process_saying_where():
    result, took = run(timeout=1.0, stall=30)
    assert result.returncode == 3, result.stderr
    assert "stalled: no progress for 1 s (train.stall_timeout_s 1), last at stage 0, epoch 3, " \
           "after step 5, phase step" in result.stderr
    assert took < 10 and "finished" not in result.stdout


def test_steady_progress_and_a_zero_timeout_never_fire():
    for timeout, stall in ((1.0, 0.0), (0, 1.5)):
        result, _ = run(timeout, stall)
        assert result.returncode == 0 and "finished" in result.stdout, result.stderr
