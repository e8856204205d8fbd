"""VRN (Jackson et al., ICCV 2017): direct volumetric regression of the face (docs/vrn.md).

`voxel` (mesh -> occupancy volume aligned with the crop), `nets` (VRN-unguided: stacked
hourglasses, output channels = depth slices), `data` (data-engine samples -> image/volume pairs),
`train` (per-voxel cross-entropy, RMSProp, checkpoints), `mesh` (marching cubes, ICP surface
error), `register` (the morphable model fitted to a surface: landmarks and pose), `predict`
(weights -> one volume at a time). The method "vrn" (`methods/vrn.py`) puts them together.
"""

from .nets import VRN, VRNConfig, count_parameters
from .train import VRNTrainConfig, export_weights, train_vrn
from .voxel import FULL, REDUCED, VoxelSpec, voxelize, voxelize_sample

__all__ = ["FULL", "REDUCED", "VRN", "VRNConfig", "VRNTrainConfig", "VoxelSpec", "count_parameters",
           "export_weights", "train_vrn", "voxelize", "voxelize_sample"]
