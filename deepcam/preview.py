"""A PNG people look at: for a few fixed validation samples, the TMQ channel, the true mask and
the predicted mask side by side (background dark, cyclones red, rivers blue)."""
import os

import numpy as np
from PIL import Image

from deepcam.metrics import match_logits

COLOURS = np.array([[30, 30, 30], [220, 40, 40], [60, 110, 230]], np.uint8)


def write_masks(model, x, labels, path):
    """x (N, H, W, C) normalised inputs, labels (N, h, w); channel 0 is shown as TMQ."""
    pred = np.argmax(np.asarray(match_logits(labels, model(x, training=False))), axis=-1)
    rows = []
    for sample, truth, guess in zip(x, labels, pred):
        tmq = np.asarray(Image.fromarray(grey(sample[..., 0])).resize(truth.shape[::-1]))
        rows.append(np.concatenate([np.repeat(tmq[..., None], 3, axis=-1), COLOURS[truth],
                                    COLOURS[guess]], axis=1))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def grey(channel):
    low, high = float(channel.min()), float(channel.max())
    return np.uint8(255 * (channel - low) / (high - low if high > low else 1.0))
