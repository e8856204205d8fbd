"""Input and output: images in, meshes / arrays / images out (every write atomic)."""

from .arrays import read_mat, write_mat, write_npz
from .atomic import atomic_path
from .image import Image, load_image
from .mesh import write_obj, write_ply

__all__ = ["Image", "load_image", "write_obj", "write_ply", "write_npz", "write_mat", "read_mat", "atomic_path"]
