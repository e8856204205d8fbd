"""2-D part masks from a labelled mesh (3DDFA_V3's ``seg`` and ``seg_visible``).

The mesh is the reconstruction's posed mesh plus whatever the labelling adds (ICT's eye caps, see
`models.annotations.FaceAnnotations.part_mesh`), with one part label per triangle. Pixels follow
the rasterizer: a pixel belongs to a triangle when its centre lies inside it (docs/rendering.md),
no antialiasing.

  part_masks      (P, H, W) bool: part k drawn alone, so it shows even where the pose hides it
                  behind another part of the face (V3's ``seg``)
  part_label_map  (H, W) uint8: 0 background, k + 1 where the front-most surface is part k; pixels
                  of unlabelled surface (label >= P) and of back faces (the inside of an open mesh
                  seen past its border) are 0 (V3's ``seg_visible``)
  screen_label_map  the same from projected vertices (px + depth), e.g. a data-engine sample's
                  ``vertices_px``
"""

from __future__ import annotations

import numpy as np
import torch

from facerecon.geometry.camera import PerspectiveCamera
from facerecon.render import _kernels


def _screen(vertices_world: torch.Tensor, camera: PerspectiveCamera) -> np.ndarray:
    v = vertices_world[0] if vertices_world.dim() == 3 else vertices_world
    return camera.project(v.detach()).cpu().double().numpy()


def _face_ids(scr: np.ndarray, faces: np.ndarray, camera: PerspectiveCamera) -> np.ndarray:
    """(H, W) int64 front-most triangle per pixel, -1 background: the rasterizer's visibility pass
    alone (`render.rasterize` without its barycentrics, which masks do not need)."""
    return _kernels.rasterize_visibility(np.ascontiguousarray(scr[None]), np.ascontiguousarray(faces, np.int64),
                                         camera.height, camera.width, max(float(camera.near), 1e-12), False)[0]


@torch.no_grad()
def part_masks(vertices_world: torch.Tensor, faces, labels, camera: PerspectiveCamera,
               n_parts: int = 8) -> np.ndarray:
    """Each part's silhouette, drawn alone.

    Args:
        vertices_world: (V, 3) or (1, V, 3) posed vertices, mm.
        faces: (F, 3) int64; labels: (F,) int64 part per triangle (values >= n_parts are never drawn).
        camera: the image's camera (its width × height is the mask size).
        n_parts: P.

    Returns:
        (P, H, W) bool.
    """
    scr = _screen(vertices_world, camera)
    faces = np.asarray(faces, np.int64)
    labels = np.asarray(labels)
    out = np.zeros((n_parts, camera.height, camera.width), bool)
    for k in range(n_parts):
        sel = labels == k
        if sel.any():
            out[k] = _face_ids(scr, faces[sel], camera) >= 0
    return out


@torch.no_grad()
def part_label_map(vertices_world: torch.Tensor, faces, labels, camera: PerspectiveCamera,
                   n_parts: int = 8) -> np.ndarray:
    """The visible part at every pixel (z-buffer of the whole labelled mesh).

    Args: as `part_masks`.

    Returns:
        (H, W) uint8: 0 background (or unlabelled / back-facing surface), k + 1 for part k.
    """
    return screen_label_map(_screen(vertices_world, camera), faces, labels, camera.height, camera.width,
                            n_parts=n_parts, near=float(camera.near))


def screen_label_map(screen, faces, labels, height: int, width: int, n_parts: int = 8,
                     near: float = 1e-12) -> np.ndarray:
    """`part_label_map` from already projected vertices (e.g. a data-engine sample's ``vertices_px``).

    Args:
        screen: (V, 3) x px, y px (pixel centres at integers), depth mm (larger = farther).
        faces: (F, 3) int64; labels: (F,) int64 part per triangle.
        height, width: the map's size; near: depth below which triangles are clipped.

    Returns:
        (H, W) uint8: 0 background (or unlabelled / back-facing surface), k + 1 for part k.
    """
    scr = np.ascontiguousarray(np.asarray(screen, np.float64))
    f = np.asarray(faces, np.int64)
    p2f = _kernels.rasterize_visibility(scr[None], np.ascontiguousarray(f), int(height), int(width),
                                        max(float(near), 1e-12), False)[0]
    s = scr[:, :2][f]
    # Back faces are clockwise on the y-down screen: positive signed area (render.rasterize).
    area = ((s[:, 1, 0] - s[:, 0, 0]) * (s[:, 2, 1] - s[:, 0, 1])
            - (s[:, 1, 1] - s[:, 0, 1]) * (s[:, 2, 0] - s[:, 0, 0]))
    lab = np.asarray(labels, np.int64) + 1
    lab[(lab > n_parts) | (area > 0)] = 0
    return np.where(p2f >= 0, lab[np.maximum(p2f, 0)], 0).astype(np.uint8)


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """(P <= 8, H, W) bool -> (H, W) uint8 with bit k set where part k is (``seg`` files)."""
    out = np.zeros(masks.shape[1:], np.uint8)
    for k, m in enumerate(masks):
        out |= (m.astype(np.uint8) << k)
    return out


def unpack_masks(packed: np.ndarray, n_parts: int = 8) -> np.ndarray:
    """Inverse of `pack_masks`: (H, W) uint8 -> (P, H, W) bool."""
    return np.stack([(packed >> k) & 1 for k in range(n_parts)]).astype(bool)


__all__ = ["pack_masks", "part_label_map", "part_masks", "screen_label_map", "unpack_masks"]
