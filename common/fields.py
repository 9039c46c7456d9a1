"""Smooth random fields for the apps' synthetic data generators."""
import numpy as np


def red_field(rng, rows, cols, slope=3.5):
    """A zero-mean, unit-variance random field with power spectrum ~ k^-slope (large scales
    dominate, as in climate variables)."""
    ky = np.fft.fftfreq(rows)[:, None]
    kx = np.fft.rfftfreq(cols)[None, :]
    k = np.sqrt(kx ** 2 + ky ** 2)
    amplitude = np.where(k > 0, np.maximum(k, 1.0 / max(rows, cols)) ** (-slope / 2), 0.0)
    noise = rng.normal(size=(rows, cols // 2 + 1)) + 1j * rng.normal(size=(rows, cols // 2 + 1))
    field = np.fft.irfft2(noise * amplitude, s=(rows, cols))
    return (field - field.mean()) / field.std()
