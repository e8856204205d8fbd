"""Exceptions shared by every layer: each names the file or asset at fault and what is wrong."""


class FaceReconError(Exception):
    """Base class of facerecon's own errors."""


class InputImageError(FaceReconError, ValueError):
    """An input image cannot be read or decoded (message names the file).

    reason: a short name of what is wrong, for tables of failures ("truncated", "too_large", ...;
    `facerecon.io.image.REASONS` lists those `load_image` gives)."""

    def __init__(self, message: str = "", reason: str = "unreadable"):
        super().__init__(message)
        self.reason = reason


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
