"""3DDFA_V3's Part Re-projection Distance Loss (PRDL), shared by fitting and regressor training.

PRDL compares two 2-D point sets per facial part without correspondences: the target part's pixels
(a face parser's label map) and the reconstruction's part re-projected into the image. A fixed grid
of anchor points turns each set into a descriptor: for every anchor, statistics of its distances to
the set's points (V3: min, max and average). The loss is the squared difference of the two
descriptors, summed over anchors, statistics and parts. Min and max follow the part's outline (its
nearest and farthest points seen from every anchor), the average its mass; all three are
order-free and do not depend on how many times a point is repeated, so the two sets need neither
the same size nor matched points.

    anchor_grid          (A, 2) V3's uniform grid of anchors over the image
    distance_statistics  (B, A, 3) min / max / mean distance from each anchor to a (padded) point set
    point_set_loss       (B,) squared descriptor difference of two point sets (one part)
    label_map_points     a label map's part pixels as padded point sets (the target side)
    mesh_part_points     a posed mesh's visible part surface at pixel centres (the prediction side)
    prdl                 (B,) the loss over all parts: target vs predicted PartPoints
    PartMesh, prdl_term  a model's labelled mesh (eye caps included) and the loss of posed faces
    part_iou             (B, P) IoU of two batches of label maps (the measure of docs/parts.md)

**Our prediction side.** V3 re-projects the part's mesh vertices (BFM: 35k nearly evenly spaced
vertices over a closed surface). ICT's face has uneven vertex density (dense at the eyes and lips)
and open eyes: its eye part is a ring of lid-margin vertices around a hole, which V3's average and
min statistics would read as a thin ring, not the filled region the parser labels. So the
prediction's points are the part's *visible surface* sampled at the pixel centres where it is the
front-most surface (the z-buffer of `render.parts.part_label_map`, eye caps included): each point is
a fixed barycentric combination of its triangle's projected vertices, so it moves with the mesh
(gradients reach the vertices), and at the current parameters it sits exactly on a pixel centre.
Both sides of a part are sampled on the same pixel lattice (every s-th row and column, s chosen per
part from the target so that it has at most `max_points` points: the eyes keep every pixel, the
skin every ~5th: the cost is O(anchors × points)), and a reconstruction whose projected parts
equal the target masks has zero loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..render.rasterize import rasterize

#: V3's statistics, in the order of `distance_statistics`' last axis.
STATISTICS = ("min", "max", "mean")


def anchor_grid(size: int | tuple[int, int], n: int = 16, dtype=torch.float32, device=None) -> torch.Tensor:
    """(n·n, 2) anchors (x, y) in pixels: an n × n grid at the centres of equal cells of an H × W image
    (pixel centres at integers, docs/coordinates.md)."""
    H, W = (size, size) if isinstance(size, int) else size
    ys = (torch.arange(n, dtype=dtype, device=device) + 0.5) * (H / n) - 0.5
    xs = (torch.arange(n, dtype=dtype, device=device) + 0.5) * (W / n) - 0.5
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)


def distance_statistics(anchors: torch.Tensor, points: torch.Tensor, valid: torch.Tensor,
                        eps: float = 0.0) -> torch.Tensor:
    """Min, max and mean Euclidean distance from each anchor to each face's point set.

    Args:
        anchors: (A, 2) pixels.
        points: (B, N, 2) pixels, padded; valid: (B, N) bool, the real points (a face with none gets 0s).
        eps: added under the square root (px²) when > 0; 0 uses `torch.cdist` (faster and leaner; its
            gradient is 0 where an anchor lies exactly on a point, which the anchors at half-pixel
            positions of `anchor_grid` and the points at pixel centres avoid).

    Returns:
        (B, A, 3) [min, max, mean] px, differentiable w.r.t. `points` (hard min / max: the gradient
        goes to the nearest / farthest point, as in V3).
    """
    # Padding takes the value of each face's first real point: a repeated point changes neither
    # the min nor the max, so those need no masking (the mean excludes it by weight).
    first = torch.argmax(valid.to(torch.uint8), -1)  # (B,)
    filler = points.gather(1, first[:, None, None].expand(-1, 1, 2))
    pts = torch.where(valid[..., None], points, filler)
    if eps > 0:
        d = torch.sqrt(((pts[:, None, :, :] - anchors[None, :, None, :]) ** 2).sum(-1) + eps)  # (B, A, N)
    else:  # cdist: no (B, A, N, 2) intermediate (its gradient at distance 0 is 0)
        d = torch.cdist(anchors[None].expand(points.shape[0], -1, -1), pts)
    w = valid.to(d.dtype)
    dmean = (d * w[:, None, :]).sum(-1) / w.sum(-1).clamp_min(1)[:, None]
    out = torch.stack([d.amin(-1), d.amax(-1), dmean], -1)
    return torch.where(valid.any(-1)[:, None, None], out, out.new_zeros(()))


def point_set_loss(anchors: torch.Tensor, pred: torch.Tensor, pred_valid: torch.Tensor, target: torch.Tensor,
                   target_valid: torch.Tensor, stat_weights: torch.Tensor | None = None) -> torch.Tensor:
    """PRDL of one part: mean over anchors and statistics of the squared descriptor difference.

    Args:
        anchors: (A, 2); pred, target: (B, N, 2) / (B, M, 2) padded point sets in pixels with their
            (B, N) / (B, M) bool validity.
        stat_weights: (3,) weights of min, max, mean (None: equal).

    Returns:
        (B,) px²; 0 for a face where either set is empty (nothing to compare).
    """
    fp = distance_statistics(anchors, pred, pred_valid)
    ft = distance_statistics(anchors, target.to(pred.dtype), target_valid)
    sq = (fp - ft) ** 2  # (B, A, 3)
    if stat_weights is not None:
        sq = sq * stat_weights.to(sq)
        sq = sq / stat_weights.to(sq).mean()
    loss = sq.mean((1, 2))
    both = pred_valid.any(-1) & target_valid.any(-1)
    return torch.where(both, loss, loss.new_zeros(()))


@dataclass(frozen=True)
class PartPoints:
    """Per part, a batch of padded 2-D point sets.

    points: P tensors (B, N_k, 2) pixels; valid: P bool tensors (B, N_k); counts: (B, P) int64 number of
    points of each face's part; strides: P ints, the lattice each part was sampled on (pixels with
    row ≡ col ≡ s // 2 mod s).
    """

    points: tuple
    valid: tuple
    counts: torch.Tensor
    strides: tuple


def _on_lattice(x: torch.Tensor, y: torch.Tensor, stride: int) -> torch.Tensor:
    o = stride // 2
    return (x % stride == o) & (y % stride == o)


def _lattice(H: int, W: int, stride: int, device=None) -> torch.Tensor:
    """(H, W) bool: the pixels a part is sampled on (every `stride`-th row and column)."""
    y, x = torch.meshgrid(torch.arange(H, device=device), torch.arange(W, device=device), indexing="ij")
    return _on_lattice(x, y, stride)


def choose_strides(label_maps: torch.Tensor, n_parts: int = 8, max_points: int = 300) -> tuple:
    """Per part, the smallest lattice stride at which no face of the batch has more than
    `max_points` pixels of the part (by area: a part of n pixels keeps about n / s²)."""
    lm = torch.as_tensor(label_maps)
    out = []
    for k in range(n_parts):
        n = int((lm == k + 1).flatten(1).sum(-1).max()) if lm.numel() else 0
        out.append(max(1, math.ceil(math.sqrt(n / max_points))) if n else 1)
    return tuple(out)


def _pad(batch_index: torch.Tensor, xy: torch.Tensor, B: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Points (K, 2) of faces `batch_index` (K,) (sorted) -> padded (B, N, 2), valid (B, N), counts (B,)."""
    counts = torch.bincount(batch_index, minlength=B)
    N = int(counts.max()) if len(batch_index) else 0
    out = xy.new_zeros(B, max(N, 1), 2)
    valid = torch.zeros(B, max(N, 1), dtype=torch.bool, device=xy.device)
    if len(batch_index):
        start = torch.cumsum(counts, 0) - counts
        slot = torch.arange(len(batch_index), device=xy.device) - start[batch_index]
        out = out.index_put((batch_index, slot), xy)
        valid[batch_index, slot] = True
    return out, valid, counts


def label_map_points(label_maps: torch.Tensor, n_parts: int = 8, stride: int | tuple | None = None,
                     max_points: int = 300, dtype=torch.float32) -> PartPoints:
    """The target side: each part's pixels (label k + 1 = part k, 0 = none) as point sets.

    Args:
        label_maps: (B, H, W) integer label maps (a parser's output or `render.parts.part_label_map`).
        n_parts: P; stride: the lattice stride, one for all parts or P of them; None: per part by
            `choose_strides(max_points)`. `mesh_part_points` must sample on the same strides.

    Returns:
        PartPoints with (x, y) = (column, row) pixel centres.
    """
    lm = torch.as_tensor(label_maps)
    B, H, W = lm.shape
    if stride is None:
        strides = choose_strides(lm, n_parts, max_points)
    else:
        strides = tuple(stride) if isinstance(stride, (tuple, list)) else (int(stride),) * n_parts
    pts, val, cnt = [], [], []
    for k in range(n_parts):
        b, y, x = torch.nonzero((lm == k + 1) & _lattice(H, W, strides[k], lm.device), as_tuple=True)
        p, v, c = _pad(b, torch.stack([x, y], -1).to(dtype), B)
        pts.append(p)
        val.append(v)
        cnt.append(c)
    return PartPoints(tuple(pts), tuple(val), torch.stack(cnt, 1), strides)


def mesh_part_points(screen: torch.Tensor, faces: torch.Tensor, labels: torch.Tensor, image_size: int | tuple[int, int],
                     strides: tuple, n_parts: int = 8) -> PartPoints:
    """The prediction side: each part's visible surface at the pixel centres where it is front-most.

    The z-buffer of the whole labelled mesh decides visibility (as `render.parts.part_label_map`:
    back faces and unlabelled surface count as no part); each kept pixel becomes the point
    Σ_k w_k · screen[corner_k, :2] with its triangle's screen-space barycentrics w held fixed, i.e.
    the pixel centre now, and a point glued to the surface when the vertices move.

    Args:
        screen: (B, V, 3) projected vertices (x px, y px, depth mm), e.g. `camera.project`; gradients
            flow to x and y.
        faces: (F, 3) int64; labels: (F,) int64 part per triangle (>= n_parts: no part).
        image_size: H, W; strides: P lattice strides (the target's `PartPoints.strides`); n_parts: P.

    Returns:
        PartPoints in the dtype of `screen`.
    """
    H, W = (image_size, image_size) if isinstance(image_size, int) else image_size
    faces = faces.to(screen.device, torch.int64)
    labels = labels.to(screen.device, torch.int64)
    B, V = screen.shape[:2]
    frags = rasterize(screen.detach(), faces, (H, W))
    p2f = frags.pix_to_face.reshape(B, -1)
    with torch.no_grad():
        # Each pixel's part (back faces: none), then only the pixels on their part's lattice.
        s2 = screen.detach()[..., :2]
        c = s2[:, faces]  # (B, F, 3, 2)
        back = ((c[..., 1, 0] - c[..., 0, 0]) * (c[..., 2, 1] - c[..., 0, 1])
                - (c[..., 1, 1] - c[..., 0, 1]) * (c[..., 2, 0] - c[..., 0, 0])) > 0
        face_part = torch.where(back, torch.full_like(back, n_parts, dtype=torch.int64), labels[None])  # (B, F)
        stride_of = torch.tensor(list(strides) + [1], device=screen.device)
        b, pix = torch.nonzero(p2f >= 0, as_tuple=True)
        f = p2f[b, pix]
        lab = face_part[b, f]
        ix, iy = pix % W, torch.div(pix, W, rounding_mode="floor")
        st = stride_of[lab.clamp_max(n_parts)]
        keep = (lab < n_parts) & (ix % st == st // 2) & (iy % st == st // 2)
        b, f, lab, ix, iy = b[keep], f[keep], lab[keep], ix[keep], iy[keep]
    corner = faces[f]  # (K, 3)
    tri = screen.reshape(B * V, 3)[(corner + (b * V)[:, None]).reshape(-1)].view(-1, 3, 3)[..., :2]  # (K, 3, 2)
    with torch.no_grad():
        t = tri.detach()
        px, py = ix.to(t.dtype), iy.to(t.dtype)
        x0, y0, x1, y1, x2, y2 = t[:, 0, 0], t[:, 0, 1], t[:, 1, 0], t[:, 1, 1], t[:, 2, 0], t[:, 2, 1]
        area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        w0 = ((x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)) / area
        w1 = ((x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)) / area
        w = torch.stack([w0, w1, 1 - w0 - w1], -1)
    xy = (tri * w[..., None]).sum(1)  # (K, 2)
    pts, val, cnt = [], [], []
    for k in range(n_parts):
        sel = lab == k
        p, v, c = _pad(b[sel], xy[sel], B)
        pts.append(p)
        val.append(v)
        cnt.append(c)
    return PartPoints(tuple(pts), tuple(val), torch.stack(cnt, 1), tuple(strides))


def minor_axis_variance(points: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B,) the smaller eigenvalue of each face's point covariance, px² (0 for points on a line).

    points: (B, N, 2) padded; valid: (B, N) bool."""
    w = valid.to(points.dtype)
    n = w.sum(-1).clamp_min(1)
    c = (points * w[..., None]).sum(1) / n[:, None]
    d = (points - c[:, None]) * w[..., None]
    a, b, e = (d[..., 0] ** 2).sum(-1) / n, (d[..., 0] * d[..., 1]).sum(-1) / n, (d[..., 1] ** 2).sum(-1) / n
    return (a + e) / 2 - torch.sqrt(((a - e) / 2) ** 2 + b ** 2 + 1e-12)


def prdl(pred: PartPoints, target: PartPoints, anchors: torch.Tensor, part_weights: torch.Tensor | None = None,
         min_points: int = 3, collapse_parts: tuple = (0, 1)) -> torch.Tensor:
    """The PRDL over all parts: Σ_k λ_k · `point_set_loss`(part k) / Σ_k λ_k over the parts both sides
    have (at least `min_points` points each, so a sliver of a few pixels does not pull).

    A part of `collapse_parts` (default the eyes) that the target lacks but the prediction shows
    (a closed eye fitted open) adds, in its place, the predicted points' variance across the part
    (`minor_axis_variance`, px²), which is 0 once the part has shut to a line: V3's statistics need
    both sets, and the skin around a closed eye, on its coarse lattice, says little about the lids.
    (Our addition; V3 does not say how it treats a part missing on one side. The whole spread was
    tried first and shrank the eyes' width too, moving squint weights instead of blinks.)

    Args:
        pred, target: PartPoints with the same number of parts P and batch B.
        anchors: (A, 2); part_weights: (P,) λ (None: all 1).

    Returns:
        (B,) px²; 0 for a face with no part on both sides.
    """
    P = len(pred.points)
    if len(target.points) != P:
        raise ValueError(f"PRDL: {P} predicted parts vs {len(target.points)} target parts")
    if tuple(pred.strides) != tuple(target.strides):
        raise ValueError(f"PRDL: the two sides are sampled on different lattices ({pred.strides} vs {target.strides})")
    lam = (torch.ones(P) if part_weights is None else torch.as_tensor(part_weights)).to(anchors)
    total = num = 0
    for k in range(P):
        has_p, has_t = pred.counts[:, k] >= min_points, target.counts[:, k] >= min_points
        both = (has_p & has_t).to(anchors)
        shut = (has_p & ~has_t).to(anchors) if k in collapse_parts else torch.zeros_like(both)
        if float(lam[k]) == 0 or not bool((both + shut).any()):
            continue
        lk = 0
        if bool(both.any()):
            lk = both * point_set_loss(anchors, pred.points[k], pred.valid[k], target.points[k], target.valid[k])
        if bool(shut.any()):
            lk = lk + shut * minor_axis_variance(pred.points[k], pred.valid[k])
        total = total + lam[k] * lk
        num = num + lam[k] * (both + shut)
    if isinstance(total, int):
        return anchors.new_zeros(pred.counts.shape[0])
    return total / num.clamp_min(1e-12)


class PartMesh:
    """A model's mesh as PRDL sees it: its triangles plus the eye caps, with one part per triangle
    (`models.annotations.FaceAnnotations.part_mesh`), so a closed eye has no eye pixels.

    annotations: the topology's FaceAnnotations; faces: (F, 3) the model's triangles.
    """

    def __init__(self, annotations, faces):
        f, lab = annotations.part_mesh(np.asarray(torch.as_tensor(faces).cpu(), np.int64))
        self.annotations = annotations
        self.faces = torch.from_numpy(f)
        self.labels = torch.from_numpy(lab)

    def screen(self, vertices_world: torch.Tensor, camera) -> torch.Tensor:
        """(B, V, 3) posed vertices (mm) -> (B, V + 2, 3) screen coordinates, eye-cap centres appended."""
        return camera.project(self.annotations.cap_vertices(vertices_world))

    def points(self, vertices_world: torch.Tensor, camera, strides: tuple) -> PartPoints:
        """The prediction side (`mesh_part_points`) of posed vertices (B, V, 3) seen by `camera`,
        sampled on `strides` (the target's)."""
        return mesh_part_points(self.screen(vertices_world, camera), self.faces, self.labels,
                                (camera.height, camera.width), strides)

    def label_maps(self, vertices_world: torch.Tensor, camera) -> np.ndarray:
        """(B, H, W) uint8 label maps of posed vertices (B, V, 3): `render.parts.part_label_map` per face."""
        from ..render.parts import part_label_map

        v = self.annotations.cap_vertices(vertices_world)
        return np.stack([part_label_map(v[i], self.faces.numpy(), self.labels.numpy(), camera) for i in range(len(v))])


def prdl_term(part_mesh: PartMesh, vertices_world: torch.Tensor, camera, target: PartPoints, anchors: torch.Tensor,
              part_weights: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) PRDL of posed faces (B, V, 3) against target part points (`label_map_points`), in px²;
    the prediction is sampled on the target's strides."""
    return prdl(part_mesh.points(vertices_world, camera, target.strides), target, anchors, part_weights)


def part_iou(pred_maps: np.ndarray | torch.Tensor, target_maps: np.ndarray | torch.Tensor,
             n_parts: int = 8) -> np.ndarray:
    """(B, P) IoU of each part between two batches of (B, H, W) label maps (NaN where neither has it)."""
    a, t = np.asarray(pred_maps), np.asarray(target_maps)
    out = np.full((a.shape[0], n_parts), np.nan)
    for k in range(n_parts):
        inter = ((a == k + 1) & (t == k + 1)).sum((1, 2))
        union = ((a == k + 1) | (t == k + 1)).sum((1, 2))
        out[:, k] = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    return out


__all__ = ["STATISTICS", "PartMesh", "PartPoints", "anchor_grid", "choose_strides", "distance_statistics",
           "label_map_points", "mesh_part_points", "minor_axis_variance", "part_iou", "point_set_loss", "prdl",
           "prdl_term"]
