"""Which CPU kernels TensorFlow uses: oneDNN's or Eigen's, chosen per app before TensorFlow loads.

TensorFlow turns oneDNN on by default only on CPUs with AVX-512 VNNI/BF16/AMX; elsewhere (AVX2
CPUs such as AMD EPYC) it runs Eigen's kernels. Measured on a 2-core AMD EPYC (AVX2), one rank,
median s/step with oneDNN off -> on: CosmoFlow's MLPerf network at 64^3, batch 4, 1.9 -> 0.30
(6x; 128^3: 24 -> about 4); DeepCAM's full network at 768x1152, batch 1, 17.3 -> 12.2; EDSR's
16x256 network at 32x32 crops, batch 16, 15.4 -> 18.2 (Eigen's 2D convolutions win there). So
CosmoFlow and DeepCAM ask for oneDNN and EDSR keeps TensorFlow's choice.

The switch is the environment variable TF_ENABLE_ONEDNN_OPTS, read once when TensorFlow is
imported: the apps call `prefer_onednn()` from their package's __init__, which runs before any
of their modules import TensorFlow. A user's own setting of the variable always wins.
"""
import os
import sys

VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def prefer_onednn():
    """Ask for oneDNN's CPU kernels unless the user chose (TF_ENABLE_ONEDNN_OPTS set) or
    TensorFlow is already loaded (then its choice stands; nothing changes mid-process)."""
    if "tensorflow" not in sys.modules:
        os.environ.setdefault(VARIABLE, "1")


def onednn_enabled():
    """Is TensorFlow running oneDNN's CPU kernels in this process (run.json records it)?"""
    from tensorflow.python.util import _pywrap_util_port
    return bool(_pywrap_util_port.IsMklEnabled())
