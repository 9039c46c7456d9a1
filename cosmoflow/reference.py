"""The MLPerf HPC CosmoFlow reference as a user would run it instead of this suite: its network in
stock Keras layers (Conv3D, LeakyReLU, MaxPool3D, Dropout, Dense in a Sequential model), its
input pipeline (TFRecordDataset with parallel reads, parallel parse, batch, prefetch, repeated)
and Keras model.fit with validation every epoch. The benchmark trains it on the same files as
the Trainer (cosmoflow/epochs_bench.py) and states the Trainer's speed as a ratio to it."""
import time

import tensorflow as tf
from tensorflow.keras import layers

from cosmoflow.data import CHANNELS, NUM_TARGETS


def build_reference_model(spec, input_shape):
    """The reference's network for a cosmoflow.model.network_spec: per level Conv3D (same
    padding), LeakyReLU (alpha 0.3), MaxPool3D 2 (same padding, so that cubes below 32^3 work;
    on even sizes, as 128^3, the shapes are the reference's); then Dense + LeakyReLU + Dropout per hidden
    size, and a tanh output scaled by 1.2."""
    model = tf.keras.Sequential([tf.keras.Input(input_shape)], name="mlperf_reference")
    for filters in spec["filters"]:
        model.add(layers.Conv3D(filters, spec["kernel_size"], padding="same"))
        model.add(layers.LeakyReLU())
        model.add(layers.MaxPool3D(2, padding="same"))  # the reference's "valid" at 128^3
    model.add(layers.Flatten())
    for units in spec["dense"]:
        model.add(layers.Dense(units))
        model.add(layers.LeakyReLU())
        model.add(layers.Dropout(spec["dropout"]))
    model.add(layers.Dense(NUM_TARGETS, activation="tanh"))
    model.add(layers.Rescaling(1.2))
    return model


def reference_dataset(files, local_batch, resolution, gzip, shuffle, seed=0):
    """Endless batches of (log(x + 1), y), read the reference's way: file names shuffled each
    pass, records read in parallel, parsed in parallel, prefetched."""
    shape = (resolution,) * 3 + (CHANNELS,)

    def parse(record):
        features = tf.io.parse_single_example(record, {
            "x": tf.io.FixedLenFeature([], tf.string),
            "y": tf.io.FixedLenFeature([NUM_TARGETS], tf.float32)})
        x = tf.reshape(tf.io.decode_raw(features["x"], tf.int16), shape)
        return tf.math.log(tf.cast(x, tf.float32) + 1.0), features["y"]

    names = tf.data.Dataset.from_tensor_slices(list(files))
    if shuffle:
        names = names.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    records = tf.data.TFRecordDataset(names.repeat(), "GZIP" if gzip else None,
                                      num_parallel_reads=tf.data.AUTOTUNE)
    batches = records.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    return batches.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


class EpochTimes(tf.keras.callbacks.Callback):
    """Seconds of each epoch's training (up to validation) and of the whole epoch."""

    def __init__(self):
        super().__init__()
        self.train_s, self.epoch_s = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.start, self.trained = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        self.trained = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        end = time.perf_counter()
        self.train_s.append((self.trained or end) - self.start)
        self.epoch_s.append(end - self.start)


def fit_reference(spec, optimizer, data, epochs, seed):
    """Build, compile and fit the reference on `data` (train files, validation files, local
    batch, resolution, gzip); returns (EpochTimes, seconds of the whole run)."""
    start = time.perf_counter()
    train_files, val_files, batch, resolution, gzip = data
    tf.keras.utils.set_random_seed(seed)
    model = build_reference_model(spec, (resolution,) * 3 + (CHANNELS,))
    model.compile(optimizer, loss="mse", metrics=["mae"])
    times = EpochTimes()
    val_batch = min(batch, len(val_files))
    model.fit(reference_dataset(train_files, batch, resolution, gzip, True, seed),
              steps_per_epoch=len(train_files) // batch, epochs=epochs, verbose=0,
              validation_data=reference_dataset(val_files, val_batch, resolution, gzip, False),
              validation_steps=len(val_files) // val_batch, callbacks=[times])
    return times, time.perf_counter() - start
