"""The whole-epoch benchmark of the step settings runs (tiny sizes) and reports every setting with
a positive rate, a ratio to the default Trainer that matches the rates per repeat, and the same
validation metric where the setting does not change the arithmetic."""
import re

from conftest import run_ranks

LINE = (r"  {name}\s+([0-9.]+) samples/s\s+\[([0-9.]+) - ([0-9.]+)\]"
        r"(?:\s+x([0-9.]+) \[([0-9.]+)-([0-9.]+)\])?(?:\s+last val_mae ([0-9.]+))?")


def test_every_setting_is_measured_over_whole_epochs(tmp_path):
    result = run_ranks(1, ["-m", "benchmarks.epoch_bench", "--app", "cosmoflow", "--epochs", "2",
                           "--repeats", "1", "--set", "data.max_train=8",
                           "--set", "data.max_val=4", "--set", "model.width_scale=0.0625",
                           "--set", "train.local_batch=2"],
                       timeout=600, env={"TMPDIR": str(tmp_path)})
    assert result.returncode == 0, result.stdout[-4000:]
    found = {}
    for name in ("trainer (defaults)", "loss read back every step", "mixed_bfloat16",
                 "XLA (jit_compile)", "8 steps per call", "accumulate_steps 2",
                 "keras model.fit"):
        match = re.search(LINE.format(name=re.escape(name)), result.stdout)
        assert match, (name, result.stdout[-3000:])
        rate, low, high, ratio, *_, metric = match.groups()
        assert 0 < float(low) <= float(rate) <= float(high)
        found[name] = (float(rate), ratio and float(ratio), metric and float(metric))
    base_rate, _, base_metric = found["trainer (defaults)"]
    for name, (rate, ratio, metric) in found.items():
        if name != "trainer (defaults)":  # one repeat of one timed epoch: the ratio of rates
            assert abs(ratio - rate / base_rate) <= 0.01 * rate / base_rate + 0.005, name
    # Reading losses back, or running 8 steps per call, leaves the arithmetic unchanged.
    assert found["loss read back every step"][2] == base_metric
    assert found["8 steps per call"][2] == base_metric
    assert not list(tmp_path.glob("epoch-bench-*"))  # its data and runs are removed
