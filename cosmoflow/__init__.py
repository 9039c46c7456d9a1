"""CosmoFlow: a 3D CNN regressing 4 cosmological parameters from dark-matter density cubes."""
from common.cpu_kernels import prefer_onednn

prefer_onednn()  # before any cosmoflow module loads TensorFlow
