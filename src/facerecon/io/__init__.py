"""Input and output: images in, meshes / arrays / images out (every write atomic).

Per-face outputs go through the exporter registry of `facerecon.io.export` (its `export` function
is not re-exported here, so that `facerecon.io.export` stays the module).
"""

from .arrays import read_mat, write_mat, write_npz
from .atomic import atomic_path
from .export import ExportItem, available_exporters, images_needed, register_exporter
from .image import Image, load_image
from .mesh import write_obj, write_ply

__all__ = ["ExportItem", "Image", "atomic_path", "available_exporters", "images_needed", "load_image", "read_mat",
           "register_exporter", "write_mat", "write_npz", "write_obj", "write_ply"]
