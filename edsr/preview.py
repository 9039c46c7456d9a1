"""A PNG people look at: for a few fixed images, JPEG input | restored | original, each with a 3x
zoom of its centre below, where the artifacts show."""
import os

import numpy as np
from PIL import Image

from edsr.model import clip_pixels

ZOOM = 3


def write_strip(model, lr, hr, path):
    """lr, hr: uint8 (N, H, W, depth) numpy; writes one row per image to `path`."""
    restored = np.asarray(clip_pixels(model(lr.astype(np.float32), training=False)))
    rows = [np.concatenate([with_zoom(img) for img in (a, b.astype(np.uint8), c)], axis=1)
            for a, b, c in zip(lr, np.rint(restored), hr)]
    strip = np.concatenate(rows, axis=0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(strip[..., 0] if strip.shape[-1] == 1 else strip).save(path)


def with_zoom(image):
    """The image with a ZOOMx enlargement of its central (H/ZOOM, W/ZOOM) window below it."""
    h, w = image.shape[:2]
    top, left = (h - h // ZOOM) // 2, (w - w // ZOOM) // 2
    window = image[top:top + h // ZOOM, left:left + w // ZOOM]
    zoomed = window.repeat(ZOOM, axis=0).repeat(ZOOM, axis=1)
    canvas = np.zeros((h + zoomed.shape[0], w) + image.shape[2:], np.uint8)
    canvas[:h] = image
    canvas[h:, :zoomed.shape[1]] = zoomed
    return canvas
