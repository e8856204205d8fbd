"""Input and output: images in, meshes / arrays / images out (every write atomic)."""

from .arrays import read_mat, write_mat, write_npz
from .atomic import atomic_path
from .image import Image, load_image
from .mesh import write_obj, write_ply

__all__ = ["Image", "atomic_path", "load_image", "read_mat", "write_mat", "write_npz", "write_obj", "write_ply"]
