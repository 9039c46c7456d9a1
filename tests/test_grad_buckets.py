"""Gradient buckets (common/grad_buckets.py), the timeline analysis of their overlap
(benchmarks/overlap.py) and the scaling model's overlappable fraction; on 2 ranks: the buckets
start during the backward pass and train exactly as one group."""
import json

import numpy as np
import pytest

from conftest import REPO, run_ranks
from common.config import BUCKET_MB_DEFAULT, COMMON_DEFAULTS, ConfigError, apply_override
from common.config import merge_defaults, resolve
from common.grad_buckets import BUCKET_NAME, plan_buckets
from benchmarks.overlap import bucket_steps, load_events, overlap_report, start_epoch_us

DRIVER = REPO / "tests" / "bucket_driver.py"
EARLY = 0.25  # how far ahead of the backward pass's end the first bucket goes, in steps


def test_buckets_follow_the_backward_order_and_close_at_the_size():
    sizes = [4, 8, 4, 16, 4]
    assert plan_buckets(sizes, 10) == [[4, 3], [2, 1], [0]]
    assert plan_buckets(sizes, 0) == [[4, 3, 2, 1, 0]]
    assert plan_buckets(sizes, 1) == [[4], [3], [2], [1], [0]]
    assert plan_buckets(sizes, 1000) == [[4, 3, 2, 1, 0]]
    assert plan_buckets([], 10) == []


def test_each_bucket_is_one_grouped_allreduce_with_the_riders_in_the_last():
    # In a child process: Horovod's MPI, once started in the pytest process, breaks every later
    # mpiexec started from it (the singleton's environment leaks into the child).
    result = run_ranks(1, [REPO / "tests" / "bucket_ops_driver.py"], timeout=300)
    assert result.returncode == 0 and result.stdout.rstrip().endswith("bucket ops ok"), \
        result.stdout[-3000:]


def test_bucket_size_key_is_checked(tmp_path):
    schema = merge_defaults(COMMON_DEFAULTS, {})
    path = tmp_path / "c.yaml"
    path.write_text("horovod: {bucket_mb: 2}\n")
    cfg = resolve(schema, str(path))
    assert cfg["horovod"]["bucket_mb"] == 2.0
    path.write_text("seed: 1\n")
    assert resolve(schema, str(path))["horovod"]["bucket_mb"] == BUCKET_MB_DEFAULT
    for bad, message in ((-1, "'horovod.bucket_mb': -1.0 is out of range; it must be >= 0"),
                         ("big", "'horovod.bucket_mb' expects float")):
        with pytest.raises(ConfigError, match=message):
            apply_override(cfg, schema, "horovod.bucket_mb", bad)


def synthetic_timeline(steps, enqueue_offsets_us, period_us, allreduce_us, scope=""):
    """A Horovod timeline of `steps` steps of len(enqueue_offsets_us) buckets of 2 tensors."""
    events = [{"name": "process_name", "ph": "M", "pid": 0,
               "args": {"start_time_since_epoch_in_micros": 1_000_000}}]
    pid = 0
    for b, offset in enumerate(enqueue_offsets_us):
        for t in range(2):
            pid += 1
            events.append({"name": "process_name", "ph": "M", "pid": pid,
                           "args": {"name": f"{scope}{BUCKET_NAME}{b}_{t + 1}of2"}})
            for k in range(steps):
                start = 5000 + k * period_us + offset + 10 * t
                events += [{"ph": "B", "name": "NEGOTIATE_ALLREDUCE", "ts": start, "pid": pid},
                           {"ph": "X", "name": "0", "ts": start, "pid": pid, "dur": 0},
                           {"ph": "E", "ts": start + 100, "pid": pid},
                           {"ph": "B", "name": "ALLREDUCE", "ts": start + 100, "pid": pid},
                           {"ph": "B", "name": "MPI_ALLREDUCE", "ts": start + 150, "pid": pid},
                           {"ph": "E", "ts": start + 100 + allreduce_us, "pid": pid},
                           {"ph": "E", "ts": start + 100 + allreduce_us, "pid": pid}]
    return events


def test_overlap_report_reads_enqueue_times_and_fractions_from_the_timeline():
    events = synthetic_timeline(6, [0, 20_000, 60_000], 100_000, 30_000)
    assert start_epoch_us(events) == 1_000_000
    assert len(bucket_steps(events)) == 6
    r = overlap_report(events, skip=1)
    assert r["steps"] == 4 and r["step_ms"] == pytest.approx(100.0)
    assert [b["enqueued_ms"] for b in r["buckets"]] == pytest.approx([0, 20, 60])
    assert [b["ahead_of_backward_end_ms"] for b in r["buckets"]] == pytest.approx([60, 40, 0])
    # each allreduce: 100 us after the enqueue, 30 ms long (the second tensor 10 us later)
    assert [b["allreduce_ms"] for b in r["buckets"]] == pytest.approx([30.01] * 3)
    assert [b["hidden_ms"] for b in r["buckets"]] == pytest.approx([30.01, 30.01, 0])
    assert r["overlappable_fraction"] == pytest.approx(0.6)
    assert r["hidden_fraction"] == pytest.approx(2 / 3)
    one_group = overlap_report(synthetic_timeline(5, [0], 80_000, 10_000))
    assert one_group["overlappable_fraction"] == 0 and one_group["hidden_fraction"] == 0
    with pytest.raises(ValueError, match="need at least 4"):
        overlap_report(synthetic_timeline(3, [0, 1000], 80_000, 10_000))
    with pytest.raises(ValueError, match=r"no 'gradient_bucket_\*' .*scopes found: \[\]"):
        overlap_report(events[:1])
    scoped = synthetic_timeline(4, [0], 1000, 10, "while/")
    with pytest.raises(ValueError, match=r"scopes found: \['while/'\]"):
        overlap_report(scoped)
    assert overlap_report(scoped, skip=1, scope="while/")["steps"] == 2


def test_scaling_model_says_which_overlap_fraction_it_used():
    from benchmarks.scaling import load_app
    from benchmarks.scaling_model import efficiency, overlap_fraction, parse_args, predict
    assert overlap_fraction((0.4, "timeline"), None, 1, 2) == (0.4, "measured: timeline")
    assert overlap_fraction((0.4, "timeline"), 0.1, 1, 2)[0] == 0.1
    fraction, source = overlap_fraction(None, None, 1, 2)
    assert fraction == pytest.approx(2 / 3) and source.startswith("assumed")
    with pytest.raises(SystemExit):
        parse_args(["--overlap-fraction", "1.5"])
    sets = ["--set=data.resolution=16", "--set=model.width_scale=0.125", "--gpus", "4", "64"]
    r = predict("cosmoflow", parse_args(sets))
    measured = load_app("cosmoflow").overlap
    if measured is None:
        assert r["overlap_source"].startswith("assumed")
    else:
        assert r["overlap_fraction"] == measured[0]
        assert r["overlap_source"] == f"measured: {measured[1]}"
    for row in r["rows"]:
        assert row["efficiency_overlap"] == pytest.approx(efficiency(
            r["compute_s"], row["allreduce_s"], r["compute_s"] * r["overlap_fraction"]))
    none = predict("cosmoflow", parse_args(sets + ["--overlap-fraction", "0"]))
    assert none["overlap_source"].startswith("given")
    assert [row["efficiency_overlap"] for row in none["rows"]] == \
        [row["efficiency"] for row in none["rows"]]


def test_two_ranks_start_buckets_during_the_backward_pass_and_match_one_group(tmp_path):
    result = run_ranks(2, [DRIVER, tmp_path, "0.2"], timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    info = json.loads((tmp_path / "evidence.json").read_text())
    n = info["weights"]
    ranks = [np.load(tmp_path / f"results-rank{r}.npz") for r in (0, 1)]
    for res in ranks:  # buckets train exactly as one group; the loss and requests ride along
        for i in range(n):
            np.testing.assert_allclose(res[f"arr_{n + i}"], res[f"arr_{i}"], rtol=1e-4,
                                       atol=1e-6)
        np.testing.assert_allclose(res["bucket_returned"], res["single_returned"], rtol=1e-4)
        np.testing.assert_array_equal(res["bucket_returned"][:, 1:], [[0, 0.5, 0, 0]] * 4)
    for i in range(2 * n):  # and the ranks agree
        np.testing.assert_array_equal(ranks[0][f"arr_{i}"], ranks[1][f"arr_{i}"])
    np.testing.assert_array_equal(ranks[0]["bucket_returned"], ranks[1]["bucket_returned"])

    # The training step's buckets (optimizer update included), from its timeline: several, and in
    # every step the first one (the last layers) enqueued well before the backward pass ends (the
    # last bucket's enqueue). The driver gives each rank a second inter-op thread: with one
    # (mpiexec binds each rank to a core) every bucket went at that end.
    events = load_events(tmp_path / "timeline.json")
    report = overlap_report(events, skip=1)
    steps = bucket_steps(events)[-4:]
    ahead = np.array([step[-1][0] - step[0][0] for step in steps]) / 1e3 / report["step_ms"]
    assert len(steps[0]) > 2 and np.all(ahead > EARLY), (ahead, report)
    assert report["overlappable_fraction"] > EARLY

    # Against the ops themselves: the first bucket reaches Horovod before any rank has computed
    # its last gradient (tf.timestamp once every gradient exists, on the timeline's clock), by
    # the same margin; one group only then, the control (its allreduce and the timestamp become
    # ready together and may run in either order: 0.02 of a step apart at most).
    origin = start_epoch_us(events)
    for name, scope in (("buckets", ""), ("one_group", "one_group/")):
        last_gradient = np.min(info["times"][name], axis=0) * 1e6  # per step, the earliest rank
        first = np.array([origin + step[0][0] for step in bucket_steps(events, scope)[-4:]])
        assert len(first) == len(last_gradient) == 4
        ahead = (last_gradient - first) / 1e3 / report["step_ms"]
        assert np.all(ahead > EARLY) if name == "buckets" else np.all(ahead < 0.02), \
            (name, ahead)
