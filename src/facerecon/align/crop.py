"""Deep3D-style face alignment: 5 landmarks -> a 224² crop where a frontal model face would render.

Deep3D (``preprocess_img.py``) fits, by least squares (``POS``), a scale s and translation t that
take the x, y of five 3-D reference points (mean-face eye centres, nose tip, mouth corners, in
decimetres) onto the detected 5 points, then resizes the photo by 102/s and cuts 224² around t.
102 px per decimetre approximates its camera's 1015 px focal length at 10 dm (1015/10 ≈ 101.5).

facerecon replaces the constant with the camera itself (``method="camera"``, the default): the
reference points are projected by `PerspectiveCamera.deep3d()` at zero pose (model origin at the
world origin, camera 1000 mm away), and the crop is the similarity (scale + translation, no
rotation: in-plane roll stays in the face's pose, as in Deep3D) that best maps the detected points
onto those projections. So a frontal face at the origin renders exactly where the photo's face is.
``method="deep3d"`` reproduces Deep3D's own crop (integer truncations, possibly 1-pixel
anisotropy from rounding the resized size) for compatibility with its outputs.

All coordinates: pixels, x right, y down, pixel centres at integers, in both images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..geometry.camera import PerspectiveCamera
from ..geometry.landmarks import lm5_from_lm68_corners
from ..geometry.transforms2d import (
    estimate_similarity,
    invert_affine,
    transform_points,
    transform_scale,
    warp_image,
)


def deep3d_lm3d_ref(path: str | os.PathLike | None = None) -> np.ndarray:
    """Deep3D's five 3-D alignment points of the BFM mean face, (5, 3) float64 in **mm**.

    Read from ``similarity_Lm3D_all.mat`` (``lm``: 68×3 in decimetres; asset ``bfm-metadata``, or
    the given file path), reduced to 5 points by `geometry.landmarks.lm5_from_lm68_corners` and
    converted ×100. Model space: x to the face's left = image right when frontal, y up, z towards
    the camera.
    """
    from scipy.io import loadmat

    from .. import assets

    if path is None:
        path = assets.path("bfm-metadata", "similarity_Lm3D_all.mat")
    lm = np.asarray(loadmat(os.fspath(path))["lm"], dtype=np.float64)
    return lm5_from_lm68_corners(lm) * 100.0


def reference_points_2d(lm3d_ref, camera: PerspectiveCamera) -> np.ndarray:
    """(N, 3) model-space mm -> (N, 2) pixels where `camera` sees them at zero pose. float64."""
    pts = torch.as_tensor(np.asarray(lm3d_ref, dtype=np.float64))
    return camera.project(pts)[:, :2].numpy().astype(np.float64)


@dataclass(frozen=True)
class Crop:
    """An aligned face crop and its exact relation to the original image.

    image:  (H, W, 3) uint8 RGB crop (224² by default).
    M:      (2, 3) float64, original-image pixels -> crop pixels.
    M_inv:  (2, 3) float64, crop pixels -> original-image pixels.
    lm5:    (5, 2) float32 crop pixels, or None.
    lm68:   (68, 2) float32 crop pixels, or None.
    original_shape: (height, width) of the original image.
    source: name of the original image.
    Pixel centres at integer coordinates on both sides.
    """

    image: np.ndarray
    M: np.ndarray
    M_inv: np.ndarray
    lm5: np.ndarray | None = None
    lm68: np.ndarray | None = None
    original_shape: tuple[int, int] = (0, 0)
    source: str = ""

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the crop."""
        return int(self.image.shape[0]), int(self.image.shape[1])

    @property
    def scale(self) -> float:
        """Crop pixels per original pixel."""
        return transform_scale(self.M)

    def crop_to_original(self, points):
        """(..., 2) crop pixels -> original pixels (numpy float64, or torch kept differentiable)."""
        return transform_points(self.M_inv, points)

    def original_to_crop(self, points):
        """(..., 2) original pixels -> crop pixels."""
        return transform_points(self.M, points)


def _deep3d_matrix(lm5: np.ndarray, lm3d_ref_mm: np.ndarray, shape: tuple[int, int], target: int,
                   rescale: float = 102.0) -> np.ndarray:
    """Deep3D's resize-then-crop as one (2, 3) original->crop matrix (``POS`` + ``resize_n_crop_img``)."""
    h0, w0 = shape
    xp = np.stack([lm5[:, 0], h0 - 1 - lm5[:, 1]], 1)  # Deep3D flips y to point up before POS
    x = lm3d_ref_mm / 100.0  # Deep3D works in decimetres
    n = len(xp)
    A = np.zeros((2 * n, 8))
    A[0::2, 0:3], A[0::2, 3] = x, 1.0
    A[1::2, 4:7], A[1::2, 7] = x, 1.0
    k = np.linalg.lstsq(A, xp.reshape(-1), rcond=None)[0]
    s = (np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2.0
    tx, ty = k[3], k[7]
    f = rescale / s
    w, h = int(w0 * f), int(h0 * f)  # Deep3D truncates (astype(int32))
    left = int(w / 2 - target / 2 + (tx - w0 / 2) * f)
    up = int(h / 2 - target / 2 + (h0 / 2 - ty) * f)
    # Resizing w0 -> w maps resized pixel j to source (j + 0.5)·w0/w − 0.5 (PIL and cv2 alike).
    sx, sy = w0 / w, h0 / h
    m_inv = np.array([[sx, 0.0, (left + 0.5) * sx - 0.5], [0.0, sy, (up + 0.5) * sy - 0.5]])
    return invert_affine(m_inv)


def align_face(image, lm5, lm3d_ref=None, size: int = 224, camera: PerspectiveCamera | None = None,
               lm68=None, method: str = "camera", source: str | None = None) -> Crop:
    """Crop a face the way Deep3D's R-Net expects it.

    image: (H, W, 3) uint8 RGB array or `facerecon.io.image.Image`.
    lm5: (5, 2) original pixels: eye, eye, nose tip, mouth corner, mouth corner (image left first);
        or a `facerecon.detect.base.Face`, whose lm5 (and lm68, unless given) are used.
    lm3d_ref: (5, 3) mm, the model's own 5 points in model space in the same order; None uses
        Deep3D's BFM points (`deep3d_lm3d_ref`, asset ``bfm-metadata``).
    size: crop side when `camera` is None (camera = ``PerspectiveCamera.deep3d(size)``); with a
        camera the crop is camera.height × camera.width.
    lm68: optional (68, 2) original pixels, carried into crop pixels.
    method: "camera" (see module docstring) or "deep3d" (Deep3D's exact 102-px/dm crop of
        size² pixels).
    Returns a `Crop`; parts of the crop outside the photo are black.
    """
    name = source
    if hasattr(image, "pixels"):
        name = name or getattr(image, "name", "")
        image = image.pixels
    if hasattr(lm5, "lm5"):  # a detected Face
        lm68 = lm5.lm68 if lm68 is None else lm68
        lm5 = lm5.lm5
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got {img.shape}")
    lm5 = np.asarray(lm5, dtype=np.float64).reshape(5, 2)
    ref = deep3d_lm3d_ref() if lm3d_ref is None else np.asarray(lm3d_ref, dtype=np.float64).reshape(5, 3)
    if method == "camera":
        cam = camera or PerspectiveCamera.deep3d(size)
        out_shape = (cam.height, cam.width)
        M = estimate_similarity(lm5, reference_points_2d(ref, cam), rotation=False)
    elif method == "deep3d":
        out_shape = (size, size)
        M = _deep3d_matrix(lm5, ref, img.shape[:2], size)
    else:
        raise ValueError(f"unknown alignment method '{method}'; use 'camera' or 'deep3d'")
    crop = warp_image(img, M, out_shape)
    l68 = None if lm68 is None else transform_points(M, np.asarray(lm68, dtype=np.float64)).astype(np.float32)
    return Crop(image=crop, M=M, M_inv=invert_affine(M), lm5=transform_points(M, lm5).astype(np.float32),
                lm68=l68, original_shape=(int(img.shape[0]), int(img.shape[1])), source=name or "")
