"""Volume -> mesh (marching cubes) and the surface error VRN's paper reports (after ICP alignment).

Iso-level: 0.5 of the sigmoid (`ISO_LEVEL`), the decision boundary of the per-voxel cross-entropy
the network was trained with. scikit-image's marching cubes returns vertices in (slice, row, col)
order; they become grid (x, y, z), crop (x px, y px, depth mm) through `VoxelSpec.to_crop` and
world mm through the crop camera (`PerspectiveCamera.unproject`).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import FaceReconError, MissingExtraError
from ..geometry.camera import PerspectiveCamera
from .voxel import VoxelSpec

#: The marching-cubes level on the sigmoid's output.
ISO_LEVEL = 0.5


def marching_cubes(volume: np.ndarray, level: float = ISO_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Grid-space surface of a (D, H, W) volume: ((N, 3) float64 x, y, z slice; (F, 3) int64), triangles
    counter-clockwise seen from outside in world axes (x right, y up, z towards the camera).

    Raises FaceReconError when the volume has no surface at `level` (empty or full)."""
    try:
        from skimage.measure import marching_cubes as mc
    except ImportError:
        raise MissingExtraError("VRN's meshing needs scikit-image: pip install 'facerecon[vrn]'") from None
    vol = np.asarray(volume, np.float32)
    if not (vol.min() < level < vol.max()):
        raise FaceReconError(f"the volume has no surface at level {level} (values {vol.min():.3f}..{vol.max():.3f})")
    verts, faces, _, _ = mc(vol, level)
    # (z, y, x) -> (x, y, z). skimage winds towards decreasing values; the axis reversal (a reflection)
    # and grid -> world (y and z flipped: a rotation) together keep it outward (tests/test_vrn.py).
    return verts[:, ::-1].astype(np.float64), faces.astype(np.int64)


def grid_to_world(grid: np.ndarray, spec: VoxelSpec, front_mm: float, camera: PerspectiveCamera) -> np.ndarray:
    """(N, 3) grid points -> (N, 3) float64 world mm in the crop camera's frame."""
    v = spec.to_crop(grid, front_mm)
    t = torch.as_tensor(v, dtype=torch.float64)
    return camera.unproject(t[:, :2], t[:, 2]).numpy()


def volume_to_mesh(volume: np.ndarray, spec: VoxelSpec, front_mm: float, camera: PerspectiveCamera,
                   level: float = ISO_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """(D, H, W) occupancy probability -> ((N, 3) float64 world mm, (F, 3) int64) in `camera`'s frame
    (the 224² crop camera); slice `spec.margin` lies at depth `front_mm`."""
    grid, faces = marching_cubes(volume, level)
    return grid_to_world(grid, spec, front_mm, camera), faces


def front_facing(vertices: np.ndarray, faces: np.ndarray, camera_z: float, min_cos: float = 0.1) -> np.ndarray:
    """(N,) bool: vertices whose normal faces the camera (on the +z axis at `camera_z`): the surface a
    photo shows, without the volume's back plane and sides."""
    from ..geometry.mesh import vertex_normals

    v = torch.as_tensor(vertices, dtype=torch.float64)[None]
    n = vertex_normals(v, torch.as_tensor(faces))[0].numpy()
    view = np.array([0.0, 0.0, camera_z]) - vertices
    view /= np.linalg.norm(view, axis=1, keepdims=True) + 1e-12
    return (n * view).sum(1) > min_cos


def sample_surface(vertices: np.ndarray, faces: np.ndarray, per_face: int = 6, seed: int = 0) -> np.ndarray:
    """Points on a triangle mesh: its vertices and `per_face` uniform barycentric samples per triangle,
    dense enough that nearest-point distances approximate point-to-surface ones."""
    rng = np.random.default_rng(seed)
    r = rng.random((len(faces), per_face, 2))
    flip = r.sum(-1) > 1
    r[flip] = 1 - r[flip]
    a, b, c = (vertices[faces[:, k]][:, None] for k in range(3))
    pts = a + r[..., :1] * (b - a) + r[..., 1:] * (c - a)
    return np.concatenate([vertices, pts.reshape(-1, 3)])


def umeyama(src: np.ndarray, dst: np.ndarray, scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (s, R, t) with dst ≈ s R src + t for paired (N, 3) points (no reflection);
    numpy (the batched torch `geometry.rotations.fit_similarity` is slower for one large set)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    U, S, Vt = np.linalg.svd(b.T @ a / len(a))
    D = np.ones(3)
    D[-1] = np.sign(np.linalg.det(U @ Vt))
    R = U @ np.diag(D) @ Vt
    s = float((S * D).sum() / (a ** 2).sum(1).mean()) if scale else 1.0
    return s, R, mu_d - s * R @ mu_s


def icp_similarity(src: np.ndarray, dst: np.ndarray, iters: int = 30, scale: bool = True,
                   trim: float = 3.0) -> tuple[float, np.ndarray, np.ndarray]:
    """Align point set `src` (N, 3) onto `dst` (M, 3): s, R (3, 3), t with dst ≈ s R src + t.

    Each iteration pairs every dst point with its nearest transformed src point and solves the
    similarity (Umeyama; `scale` False: rigid); pairs farther than `trim` × the median distance
    are dropped (the surfaces need not cover the same region). Give the denser set as `src` (a
    surface sampled with `sample_surface`): point-to-point ICP stalls once the pairs stop
    changing, which on a sparse `src` happens within its point spacing. Starts from the centroids.
    """
    from scipy.spatial import cKDTree

    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    s, R, t = 1.0, np.eye(3), dst.mean(0) - src.mean(0)
    for _ in range(iters):
        d, j = cKDTree(s * src @ R.T + t).query(dst)
        keep = d <= trim * max(float(np.median(d)), 1e-9)
        s_new, Rn, t_new = umeyama(src[j[keep]], dst[keep], scale)
        change = abs(s_new - s) + np.abs(Rn - R).max() + np.abs(t_new - t).max()
        s, R, t = s_new, Rn, t_new
        if change < 1e-7:
            break
    return s, R, t


def surface_error(pred_vertices: np.ndarray, pred_faces: np.ndarray, gt_vertices: np.ndarray,
                  gt_mask: np.ndarray | None = None, front_only: bool = True, camera_z: float = 1000.0,
                  scale: bool = True, max_icp_points: int = 30000) -> float:
    """Mean distance (mm) from the true mesh's vertices to the predicted surface after ICP (VRN's
    protocol: the prediction is aligned to the ground truth first).

    pred_vertices (N, 3), pred_faces (F, 3): a reconstruction in mm (any topology); gt_vertices
    (V, 3) mm, the true posed mesh; gt_mask (V,) bool: the vertices to measure (e.g.
    `voxel.visible_vertices`: what the photo shows), None = all. front_only: align and measure
    against the prediction's camera-facing part (a volume's back plane is no face). scale:
    similarity (True) or rigid ICP.
    """
    from scipy.spatial import cKDTree

    pv, pf = np.asarray(pred_vertices, np.float64), np.asarray(pred_faces, np.int64)
    gt = np.asarray(gt_vertices, np.float64)
    if gt_mask is not None:
        gt = gt[np.asarray(gt_mask, bool)]
    if front_only:
        pf = pf[front_facing(pv, pf, camera_z)[pf].all(1)]
        if len(pf) == 0:
            raise FaceReconError("the predicted surface has no camera-facing triangle")
    used = np.unique(pf)
    pts = np.concatenate([pv[used], sample_surface(pv, pf, per_face=2)[len(pv):]])
    sub = pts
    if len(pts) > max_icp_points:
        sub = pts[np.random.default_rng(0).choice(len(pts), max_icp_points, replace=False)]
    s, R, t = icp_similarity(sub, gt, scale=scale)
    d, _ = cKDTree(s * pts @ R.T + t).query(gt)
    return float(d.mean())


__all__ = ["ISO_LEVEL", "front_facing", "grid_to_world", "icp_similarity", "marching_cubes", "sample_surface",
           "surface_error", "umeyama", "volume_to_mesh"]
