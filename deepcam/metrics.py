"""Weighted per-pixel cross-entropy and per-sample IoU, as per-sample values the Trainer reduces.

Class weights are frequency ** -power (the MLPerf reference: power 0.125 on the frequencies
below). Logits at another resolution than the labels (a coarse stage scored against
full-resolution labels) are first resized bilinearly to the labels' grid, parameter-free.
IoU convention: per sample, the mean over the classes of intersection / union, where a class
absent from both the prediction and the label counts as 1 (nothing to find, nothing found).
"""
import numpy as np
import tensorflow as tf

CLASS_FREQUENCIES = (0.98627, 0.00045787, 0.013274)  # background, cyclone, atmospheric river


def class_weights(power, frequencies=CLASS_FREQUENCIES):
    return np.asarray(frequencies, np.float64) ** -power


def match_logits(labels, logits):
    """Logits on the labels' grid."""
    if logits.shape[1:3] == labels.shape[1:3] and None not in logits.shape[1:3]:
        return logits
    return tf.image.resize(logits, tf.shape(labels)[1:3], method="bilinear")


def make_loss(power):
    weights = tf.constant(class_weights(power), tf.float32)

    def weighted_cross_entropy(labels, logits):
        """Per sample: sum(w[label] * CE) / sum(w[label]) over its pixels."""
        logits = match_logits(labels, logits)
        labels = tf.cast(labels, tf.int32)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        w = tf.gather(weights, labels)
        return tf.reduce_sum(w * ce, axis=[1, 2]) / tf.reduce_sum(w, axis=[1, 2])
    return weighted_cross_entropy


def iou(labels, logits, classes=3):
    """Per-sample mean IoU over the classes; a class absent from both counts as 1."""
    pred = tf.argmax(match_logits(labels, logits), axis=-1, output_type=tf.int32)
    labels = tf.cast(labels, tf.int32)
    scores = []
    for c in range(classes):
        p, t = tf.equal(pred, c), tf.equal(labels, c)
        inter = tf.reduce_sum(tf.cast(p & t, tf.float32), axis=[1, 2])
        union = tf.reduce_sum(tf.cast(p | t, tf.float32), axis=[1, 2])
        scores.append(tf.where(union > 0, inter / tf.maximum(union, 1.0), 1.0))
    return tf.reduce_mean(tf.stack(scores, axis=1), axis=1)
