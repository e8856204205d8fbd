"""Building a fit's targets (`FitTargets`) from aligned crops and their detections.

Everything lands in crop pixels of the S×S crop: the 68 landmarks and their confidences, FaceMesh's
dense points with a per-face trust from the head's yaw, 3DDFA_V2's 3-D landmarks (a second starting
pose), for the photometric stage the crop image and its face/skin mask, and for PRDL the crops'
part label maps from a face parser (`part_maps`).
"""

from __future__ import annotations

import numpy as np
import torch

from ..align import Crop, face_mask
from ..detect.base import Face
from ..errors import FaceReconError
from ..geometry.landmarks import yaw_gate
from . import FitConfig, FitTargets
from .dense import DenseMap


def _tensor(x, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(np.asarray(x), dtype=like.dtype, device=like.device)


def dense_targets(crops: list[Crop], faces: list[Face], dense_map: DenseMap | None, like: torch.Tensor):
    """FaceMesh points (B, N, 2) in crop pixels and their per-face trust (B, 1) from the head's yaw,
    or (None, None) when no face has them or there is no dense map. `like`: dtype/device source."""
    N = 0 if dense_map is None else dense_map.n_points
    if not N or all(f.dense is None or len(f.dense) < N for f in faces):
        return None, None
    pts = np.zeros((len(faces), N, 2))
    gate = np.zeros((len(faces), 1))
    for i, (c, f) in enumerate(zip(crops, faces)):
        if f.dense is not None and len(f.dense) >= N:
            pts[i] = c.original_to_crop(np.asarray(f.dense)[:N, :2])
            gate[i] = yaw_gate(f.yaw)
    return _tensor(pts, like), _tensor(gate, like)


def rotation_prior(faces: list[Face], bfm_frame: np.ndarray | None, like: torch.Tensor) -> torch.Tensor | None:
    """(B, 3, 3) the detections' own head rotations in the model's frame (R_bfm · Q, Q the model ->
    BFM frame rotation of `models.frames`), or None unless every face has one and Q is known. The
    crop is a scale and shift of the photo (no rotation), so the image frame's rotation is the crop's."""
    if bfm_frame is None or not faces or any(f.rotation is None for f in faces):
        return None
    return _tensor(np.stack([np.asarray(f.rotation, np.float64) @ bfm_frame for f in faces]), like)


def default_parser():
    """The face parser PRDL's part maps come from: `facerecon.detect.parsing.load_parser()`'s trained
    network, imported here and nowhere else: the one place to switch when the parser changes.
    FaceReconError when this install has no parser or no parser weights."""
    try:
        from ..detect import parsing
    except ImportError as e:
        raise FaceReconError(f"PRDL (--prdl) needs the face parser facerecon.detect.parsing, which is not "
                             f"available here ({e})") from None
    try:
        return parsing.load_parser()
    except FaceReconError:
        raise
    except (OSError, ValueError, TypeError) as e:
        raise FaceReconError(f"PRDL (--prdl): the face parser could not be loaded ({e})") from None


def part_maps(crops: list[Crop], parser, like: torch.Tensor) -> torch.Tensor:
    """(B, S, S) int64 part label maps of the crops (0 none, k + 1 for part k) from `parser`, any object
    with `parse(crops (B, S, S, 3) uint8) -> (B, S, S) uint8` (`default_parser()`'s FaceParser)."""
    img = np.stack([np.asarray(c.image, np.uint8) for c in crops])
    maps = np.asarray(parser.parse(img))
    if maps.shape != img.shape[:3]:
        raise FaceReconError(f"{crops[0].source or 'image'}: the face parser gave part maps of shape "
                             f"{maps.shape} for crops {img.shape[:3]}")
    return torch.as_tensor(maps.astype(np.int64), device=like.device)


def build_targets(crops: list[Crop], faces: list[Face], like: torch.Tensor, config: FitConfig,
                  dense_map: DenseMap | None = None, photometric: bool = True, mask: bool = True,
                  bfm_frame: np.ndarray | None = None, parser=None) -> FitTargets:
    """FitTargets for B crops and their detections.

    like: a tensor whose dtype/device the targets take (the model's `mean_shape`).
    photometric: include the crop images (B, S, S, 3) in [0, 1]; mask: and the face/skin masks.
    bfm_frame: the model's frame -> BFM's (`models.frames.bfm_frame`), for the rotation prior.
    parser: a face parser (`part_maps`) for PRDL's part maps, or None (no part maps).
    Every crop needs its 68 landmarks (ValueError naming the first image without them).
    """
    missing = [c.source or "image" for c in crops if c.lm68 is None]
    if missing:
        raise ValueError(f"{missing[0]}: the detector gave no 68 landmarks, which fitting needs")
    lm = _tensor(np.stack([c.lm68 for c in crops]), like)
    conf = None
    if all(f.lm68_conf is not None for f in faces):
        conf = _tensor(np.stack([f.lm68_conf for f in faces]), like)
    dense, dense_w = dense_targets(crops, faces, dense_map, like)
    lm3d = None
    if config.pose_from_3d and all(f.lm68_3d is not None for f in faces):
        pts = []
        for c, f in zip(crops, faces):
            p = np.asarray(f.lm68_3d, np.float64)
            pts.append(np.concatenate([c.original_to_crop(p[:, :2]), p[:, 2:] * c.scale], 1))
        lm3d = _tensor(np.stack(pts), like)
    img = msk = None
    if photometric:
        img = _tensor(np.stack([c.image for c in crops]), like) / 255.0
        if mask:
            msk = _tensor(np.stack([face_mask(c.image, c.lm68) for c in crops]), like)
    prior = rotation_prior(faces, bfm_frame, like) if config.w_rotation_prior > 0 else None
    parts = None if parser is None else part_maps(crops, parser, like)
    return FitTargets(lm68=lm, lm_weights=conf, image=img, mask=msk, dense=dense, dense_weights=dense_w,
                      lm68_3d=lm3d, rotation_prior=prior, parts=parts)


__all__ = ["build_targets", "default_parser", "dense_targets", "part_maps", "rotation_prior"]
