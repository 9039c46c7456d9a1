"""Rank-sharded tf.data pipelines over a list of sample keys.

Every app describes its samples as keys (file names or integer indices) plus a TF function that
loads one key into (x, y). This module decides which rank reads which keys in which order, so that
every rank runs the same number of steps (uneven shards are the classic Horovod hang) and
validation still sees every sample exactly once.
"""
import math

import numpy as np
import tensorflow as tf


def fixed_shard(num_keys, rank, size, seed):
    """Key positions a rank keeps for the whole run under shuffle="local"."""
    return np.random.default_rng([seed]).permutation(num_keys)[rank::size]


def eval_shard(num_keys, rank, size):
    """(positions, weights) a rank evaluates: its round-robin share, padded with weight-0
    copies to the longest share so that every rank runs the same number of batches."""
    mine = np.arange(num_keys)[rank::size]
    pad = math.ceil(num_keys / size) - len(mine)
    weights = np.concatenate([np.ones(len(mine)), np.zeros(pad)]).astype(np.float32)
    mine = np.concatenate([mine, np.resize(mine if len(mine) else np.arange(num_keys), pad)])
    return mine.astype(np.int64), weights


def positions_read(num_keys, ranks, size, training, shuffle, seed):
    """Sorted key positions that any of `ranks` reads in some epoch: what a node must hold when
    its input is staged to node-local storage. Global shuffle deals every key to every rank in
    time; a local shard and an evaluation share stay fixed."""
    if training and shuffle == "global":
        return np.arange(num_keys)
    shares = [fixed_shard(num_keys, rank, size, seed) if training
              else eval_shard(num_keys, rank, size)[0] for rank in ranks]
    return np.unique(np.concatenate(shares)).astype(np.int64)


class ShardedDataset:
    """Samples `keys` split across `size` ranks; `epoch(e)` yields batches of (x, y, weight).

    Training: the key order is reshuffled per epoch from (seed, epoch), identically on every rank,
    then dealt round-robin; each rank takes `steps_per_epoch` full batches, so a few samples may be
    left out of an epoch but never the same ones twice in a row. With shuffle="local" each rank
    keeps one fixed shard (dealt once from the seed) and reshuffles only within it. Evaluation:
    every sample is seen
    once; shorter shards are padded with weight-0 copies so all ranks run the same batch count.
    """

    def __init__(self, keys, load_fn, local_batch, rank=0, size=1, training=True, seed=0,
                 name="dataset", seeded_load=False, shuffle="global"):
        self.keys = np.asarray(keys)
        # seeded_load: load_fn(key, seed) also gets an int64 [2] seed unique to (seed, epoch,
        # key), for random crops that replay identically after a resume and at any rank count.
        self.load_fn, self.seeded_load = load_fn, seeded_load
        self.local_batch = int(local_batch)
        self.rank, self.size = rank, size
        self.training = training
        self.seed = seed
        self.name = name
        if shuffle not in ("global", "local"):
            raise ValueError(f"{name}: shuffle must be 'global' or 'local', got {shuffle!r}")
        self.shuffle = shuffle
        self._eval_pipeline = None
        if len(self.keys) == 0:
            raise ValueError(f"{name}: no samples")
        if training and self.steps_per_epoch == 0:
            raise ValueError(
                f"{name}: {len(self.keys)} samples cannot fill one batch of {self.local_batch} "
                f"on each of {size} ranks; lower the batch size or add data")

    @property
    def num_samples(self):
        return len(self.keys)

    @property
    def steps_per_epoch(self):
        if self.training:
            return (len(self.keys) // self.size) // self.local_batch
        return math.ceil(self._padded_shard_len() / self.local_batch)

    def _padded_shard_len(self):
        return math.ceil(len(self.keys) / self.size)

    def shard_positions(self, epoch):
        """(positions in `keys`, weights) this rank reads in `epoch`, in order."""
        n = len(self.keys)
        if self.training:
            take = self.steps_per_epoch * self.local_batch
            if self.shuffle == "local":  # a fixed shard, in a new order each epoch
                shard = fixed_shard(n, self.rank, self.size, self.seed)
                mine = np.random.default_rng([self.seed, epoch, self.rank]).permutation(shard)
            else:
                order = np.random.default_rng([self.seed, epoch]).permutation(n)
                mine = order[self.rank::self.size]
            return mine[:take].astype(np.int64), np.ones(take, np.float32)
        return eval_shard(n, self.rank, self.size)

    def shard_keys(self, epoch):
        """(keys, weights) this rank reads in `epoch`, in order."""
        positions, weights = self.shard_positions(epoch)
        return self.keys[positions], weights

    def epoch(self, epoch, first_step=0):
        """The epoch's batches from its `first_step`-th on: a resumed epoch reads the samples
        it had not reached, in the same order (random crops are seeded by key, not position).
        Evaluation data is the same every epoch: its pipeline is built (and traced) once."""
        if self.training or first_step:
            return self.epochs(epoch, epoch + 1, first_step)
        if self._eval_pipeline is None:
            self._eval_pipeline = self.epochs(0, 1)
        return self._eval_pipeline

    def epochs(self, first, end, first_step=0):
        """Batches of epochs first .. end-1 (the first from its `first_step`-th batch) from one
        pipeline, built and traced once: like a repeated dataset, its prefetch runs on across
        epoch ends and validation, where a pipeline per epoch starts empty and traces its map
        again (seconds per epoch at 128^3 on a loaded CPU). A training epoch is whole batches,
        so no batch straddles two epochs; each epoch's order is drawn when the pipeline
        reaches it."""
        if not self.training and end - first > 1:
            raise ValueError(f"{self.name}: evaluation batches are per epoch, not {first}..{end}")

        def positions(epoch, skip):
            mine, weights = self.shard_positions(int(epoch))
            return mine[skip:], weights[skip:], np.full(len(mine) - skip, epoch, np.int64)

        def one_epoch(epoch):
            skip = tf.where(epoch == first, first_step * self.local_batch, 0)
            columns = tf.numpy_function(positions, [epoch, skip],
                                        (tf.int64, tf.float32, tf.int64), stateful=False)
            for column in columns:  # vectors: their elements (and batches) get static shapes
                column.set_shape([None])
            return tf.data.Dataset.from_tensor_slices(tuple(columns))

        keys = tf.constant(self.keys)

        def load(position, weight, epoch):
            key = tf.gather(keys, position)
            if self.seeded_load:
                seed = tf.stack([self.seed * 100003 + epoch, tf.cast(key, tf.int64)])
                x, y = self.load_fn(key, seed)
            else:
                x, y = self.load_fn(key)
            return x, y, weight

        ds = tf.data.Dataset.range(first, end).flat_map(one_epoch)
        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(self.local_batch, drop_remainder=self.training)
        # Input ops share the intra-op thread pool with the step (no max_intra_op_parallelism
        # of 1): with oneDNN's kernels a 128^3 CosmoFlow epoch from files then runs as fast as
        # from memory, where single-threaded decoding cost ~0.3 s per step (docs/performance.md).
        # No tf.data autotuning thread: deleting an iterator cancels it, but TensorFlow wakes it
        # before marking the cancellation done, and a thread that runs first (likely on a
        # one-core rank, possible on more) sleeps out its period, up to 60 s, with the deletion
        # waiting: at every stage switch and after every validation (docs/performance.md).
        # Without it the map runs min(16, pool threads) calls at once and the prefetch buffer
        # grows whenever the step finds it empty.
        options = tf.data.Options()
        options.autotune.enabled = False
        return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def common_spec(datasets):
    """The most specific batch spec that fits every ShardedDataset's batches: dimensions that
    differ between them (resolution, a last partial batch) become None."""
    specs = [tf.nest.flatten(d.epoch(0).element_spec) for d in datasets]
    return tuple(first.most_specific_common_supertype(others)
                 for first, *others in zip(*specs))


def loosened(dataset, spec):
    """`dataset` with its batches' static shapes loosened to `spec` (None: unchanged), so that
    one traced step serves several stages' batches without tracing again."""
    if spec is None:
        return dataset
    return dataset.map(lambda *batch: tuple(
        tf.compat.v1.placeholder_with_default(t, s.shape) for t, s in zip(batch, spec)))
