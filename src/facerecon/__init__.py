"""facerecon: 3D face reconstruction from photos, photo sets and videos."""

__version__ = "0.1.0"
