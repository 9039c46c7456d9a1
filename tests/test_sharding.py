import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from common.data import ShardedDataset
from conftest import REPO


def load(key):
    return tf.fill([2], tf.cast(key, tf.float32)), tf.cast(key, tf.float32)


def shards(n, size, batch, training, epoch=0, seed=3):
    out = []
    for rank in range(size):
        ds = ShardedDataset(np.arange(n), load, batch, rank, size, training, seed)
        batches = [(y.numpy(), w.numpy()) for _, y, w in ds.epoch(epoch)]
        out.append((ds.steps_per_epoch, batches))
    return out


def test_training_shards_are_disjoint_even_and_reshuffled_per_epoch():
    per_rank = shards(n=23, size=3, batch=2, training=True)
    steps = {s for s, _ in per_rank}
    assert steps == {3}  # 23 // 3 = 7 per rank -> 3 full batches each
    seen = np.concatenate([np.concatenate([y for y, _ in b]) for _, b in per_rank])
    assert len(seen) == 18 and len(set(seen)) == 18
    assert all(len(b) == 3 for _, b in per_rank)
    again = shards(n=23, size=3, batch=2, training=True)
    other_epoch = shards(n=23, size=3, batch=2, training=True, epoch=1)
    first = [np.concatenate([y for y, _ in b]) for _, b in per_rank]
    assert all(np.array_equal(a, np.concatenate([y for y, _ in b]))
               for a, (_, b) in zip(first, again))
    assert not np.array_equal(first[0], np.concatenate([y for y, _ in other_epoch[0][1]]))


def test_local_shuffle_keeps_each_ranks_shard_and_reorders_it_per_epoch():
    """Local: a rank reads the same samples every epoch (its node's staged files), in a new
    order; shards stay disjoint with equal steps. Global: a rank's samples change per epoch."""
    def rank_keys(shuffle, rank, epoch, size=3):
        ds = ShardedDataset(np.arange(24), load, 2, rank, size, True, seed=5, shuffle=shuffle)
        return ds.steps_per_epoch, ds.shard_keys(epoch)[0]

    for rank in range(3):
        (steps, first), (_, second) = rank_keys("local", rank, 0), rank_keys("local", rank, 1)
        assert steps == 4 and len(first) == 8
        assert set(first) == set(second) and not np.array_equal(first, second)
    union = np.concatenate([rank_keys("local", r, 0)[1] for r in range(3)])
    assert sorted(union) == list(range(24))
    assert any(set(rank_keys("global", r, 0)[1]) != set(rank_keys("global", r, 1)[1])
               for r in range(3))
    with pytest.raises(ValueError, match="shuffle must be 'global' or 'local'"):
        ShardedDataset(np.arange(4), load, 2, shuffle="node")


def test_validation_sees_every_sample_once_with_padding_weighted_zero():
    per_rank = shards(n=7, size=2, batch=3, training=False)
    assert {s for s, _ in per_rank} == {2}
    counts = np.zeros(7)
    for _, batches in per_rank:
        assert len(batches) == 2
        for y, w in batches:
            np.add.at(counts, y.astype(int), w)
    assert np.array_equal(counts, np.ones(7))


def test_too_few_samples_is_a_clear_error():
    with pytest.raises(ValueError, match="3 samples cannot fill one batch of 2 on each of 2"):
        ShardedDataset(np.arange(3), load, 2, 0, 2, training=True, name="train")
    with pytest.raises(ValueError, match="val: no samples"):
        ShardedDataset(np.arange(0), load, 2, name="val")


def test_seeded_load_gets_a_seed_of_run_epoch_and_key_whatever_the_rank_count():
    def seeded(key, seed):
        draw = tf.random.stateless_uniform([], seed=seed)
        return tf.stack([tf.cast(key, tf.float32), draw]), tf.cast(key, tf.float32)

    def draws(size, epoch, seed=7):
        out = {}
        for rank in range(size):
            ds = ShardedDataset(np.arange(8), seeded, 2, rank, size, True, seed,
                                seeded_load=True)
            for x, _, _ in ds.epoch(epoch):
                out.update({int(k): float(d) for k, d in x.numpy()})
        return out

    one, two = draws(1, epoch=0), draws(2, epoch=0)
    assert one == two and len(set(one.values())) == 8
    assert draws(1, epoch=1) != one and draws(1, epoch=0, seed=8) != one


def test_one_pipeline_over_several_epochs_reads_what_a_pipeline_per_epoch_reads():
    """Epochs 1..3 from one pipeline (the Trainer's, resumed at epoch 1's batch 2) give the
    same batches, weights and seeded loads as epoch(1, first_step=2), epoch(2), epoch(3), and
    the map function is traced once instead of per epoch."""
    traces = []

    def seeded(key, seed):
        traces.append(1)
        noise = tf.random.stateless_uniform([2], seed)
        return noise + tf.cast(key, tf.float32), tf.cast(key, tf.float32)

    ds = ShardedDataset(np.arange(20), seeded, 3, rank=1, size=2, seed=7, seeded_load=True)
    per_epoch = [ds.epoch(1, first_step=2), ds.epoch(2), ds.epoch(3)]
    expected = [tuple(t.numpy() for t in batch) for epoch in per_epoch for batch in epoch]
    del traces[:]
    together = [tuple(t.numpy() for t in batch) for batch in ds.epochs(1, 4, first_step=2)]
    assert len(traces) == 1
    # Static batch shapes, as a compiled loop over several steps needs (steps_per_call).
    assert [spec.shape.as_list() for spec in ds.epochs(1, 4).element_spec] == [[3, 2], [3], [3]]
    assert len(together) == len(expected) == 1 + 2 * ds.steps_per_epoch
    for got, want in zip(together, expected):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    # Different epochs really differ: the test would not pass on a repeated single epoch.
    assert not np.array_equal(together[1][1], together[4][1])


def test_validation_pipeline_is_built_once_and_replays_the_same_batches():
    traces = []

    def counted(key):
        traces.append(1)
        return load(key)

    ds = ShardedDataset(np.arange(7), counted, 3, rank=0, size=2, training=False)
    first = [y.numpy() for _, y, _ in ds.epoch(0)]
    second = [y.numpy() for _, y, _ in ds.epoch(5)]
    assert len(traces) == 1 and len(first) == 2
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    with pytest.raises(ValueError, match="evaluation batches are per epoch"):
        ds.epochs(0, 2)


def test_deleting_a_pipeline_on_a_one_core_rank_returns_at_once():
    """On one core, tf.data's autotuning thread could miss the cancellation and make the
    deletion of an iterator (every stage switch, every validation) wait for the rest of its
    optimisation period: 0.55 s here after 0.7 s of reading, in 2-5 of 15 deletions with the
    thread on. ShardedDataset's pipelines run without it, so 15 deletions in a row are instant."""
    assert ShardedDataset(np.arange(4), load, 2).epoch(0).options().autotune.enabled is False
    out = subprocess.run([sys.executable, str(REPO / "tests" / "teardown_driver.py"),
                          "0.7", "15"], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO),
                                                      "TF_CPP_MIN_LOG_LEVEL": "2"},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    deletions = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(deletions) == 15 and max(deletions) < 0.3, deletions
