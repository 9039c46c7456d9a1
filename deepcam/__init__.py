"""DeepCAM: DeepLabv3+ (Xception) segmentation of extreme weather in climate fields."""
from common.cpu_kernels import prefer_onednn

prefer_onednn()  # before any deepcam module loads TensorFlow
