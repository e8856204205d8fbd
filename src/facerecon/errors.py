"""Exceptions shared by every layer: each names the file or asset at fault and what is wrong."""


class FaceReconError(Exception):
    """Base class of facerecon's own errors."""


class InputImageError(FaceReconError, ValueError):
    """An input image cannot be read or decoded (message names the file)."""


class AssetError(FaceReconError, FileNotFoundError):
    """An asset is missing or damaged (message lists the paths searched and how to obtain it)."""


class MissingExtraError(FaceReconError, ImportError):
    """An optional dependency is not installed (message names the `pip install` to run)."""

    def __init__(self, extra: str, package: str, feature: str):
        super().__init__(
            f"{feature} needs the optional package '{package}': pip install \"facerecon[{extra}]\""
        )


class NoFaceError(FaceReconError):
    """No face was found in an image."""
