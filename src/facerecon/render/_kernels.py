"""Visibility pass of the rasterizer: a numba z-buffer (CPU, parallel over row bands).

Only integer face ids leave this module; barycentrics are recomputed in torch so that gradients
flow. Without numba the same Python code runs uncompiled (correct, but only usable for tiny images).

Watertightness: the edge function of an edge is always evaluated with its endpoints in a canonical
(y, x)-lexicographic order and negated when needed, so the two triangles sharing an edge see
bitwise-opposite values, and a top-left rule decides pixels whose centre lies exactly on an edge.
Parallelism: triangles are binned into horizontal bands of rows; each band is owned by one thread,
which processes its triangles in index order (deterministic, no atomics; ties go to the lower id).
"""

from __future__ import annotations

import math

import numpy as np

from facerecon.jit import njit, prange


@njit(cache=True, inline="always")
def _edge(ax, ay, bx, by, px, py):
    # Canonical endpoint order: identical rounding for both triangles sharing the edge.
    if ay < by or (ay == by and ax < bx):
        return (bx - ax) * (py - ay) - (by - ay) * (px - ax)
    return -((ax - bx) * (py - by) - (ay - by) * (px - bx))


@njit(cache=True, inline="always")
def _owns(dx, dy):
    # Top-left rule for triangles oriented clockwise on screen (y down): top edges run +x,
    # left edges run -y. A shared edge runs in opposite directions in its two triangles, so
    # exactly one of them owns a pixel centre lying on it.
    return dy < 0.0 or (dy == 0.0 and dx > 0.0)


@njit(cache=True, parallel=True)
def _setup(verts, faces, H, W, near, cull, bbox):
    """Per (batch, face): clipped pixel bbox [r0, r1, c0, c1] or r0 > r1 when culled/empty."""
    B = verts.shape[0]
    F = faces.shape[0]
    for bf in prange(B * F):
        b = bf // F
        f = bf - b * F
        bbox[b, f, 0] = 1
        bbox[b, f, 1] = 0
        i0 = faces[f, 0]
        i1 = faces[f, 1]
        i2 = faces[f, 2]
        x0 = verts[b, i0, 0]
        y0 = verts[b, i0, 1]
        z0 = verts[b, i0, 2]
        x1 = verts[b, i1, 0]
        y1 = verts[b, i1, 1]
        z1 = verts[b, i1, 2]
        x2 = verts[b, i2, 0]
        y2 = verts[b, i2, 1]
        z2 = verts[b, i2, 2]
        # Written so that NaN depths are culled as well.
        if not (z0 >= near and z1 >= near and z2 >= near):
            continue
        area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        if not (area != 0.0 and math.isfinite(area)):
            continue
        # Front-facing (counter-clockwise as seen by the camera) is clockwise on a y-down screen,
        # i.e. area < 0.
        if cull and area > 0.0:
            continue
        xmin = min(x0, x1, x2)
        xmax = max(x0, x1, x2)
        ymin = min(y0, y1, y2)
        ymax = max(y0, y1, y2)
        if xmax < 0.0 or ymax < 0.0 or xmin > W - 1.0 or ymin > H - 1.0:
            continue
        c0 = max(0, math.ceil(max(xmin, -1.0)))
        c1 = min(W - 1, math.floor(min(xmax, W + 1.0)))
        r0 = max(0, math.ceil(max(ymin, -1.0)))
        r1 = min(H - 1, math.floor(min(ymax, H + 1.0)))
        if c0 > c1 or r0 > r1:
            continue
        bbox[b, f, 0] = r0
        bbox[b, f, 1] = r1
        bbox[b, f, 2] = c0
        bbox[b, f, 3] = c1


@njit(cache=True)
def _bin(bbox, band_rows, nbands, starts):
    """CSR lists of faces per (batch, band), faces in increasing index order."""
    B = bbox.shape[0]
    F = bbox.shape[1]
    counts = np.zeros(B * nbands + 1, np.int64)
    for b in range(B):
        for f in range(F):
            if bbox[b, f, 0] <= bbox[b, f, 1]:
                for k in range(bbox[b, f, 0] // band_rows, bbox[b, f, 1] // band_rows + 1):
                    counts[b * nbands + k + 1] += 1
    for k in range(B * nbands):
        counts[k + 1] += counts[k]
    total = counts[B * nbands]
    starts[:] = counts
    fill = counts[:-1].copy()
    out = np.empty(total, np.int32)
    for b in range(B):
        for f in range(F):
            if bbox[b, f, 0] <= bbox[b, f, 1]:
                for k in range(bbox[b, f, 0] // band_rows, bbox[b, f, 1] // band_rows + 1):
                    out[fill[b * nbands + k]] = f
                    fill[b * nbands + k] += 1
    return out


@njit(cache=True, parallel=True)
def _raster(verts, faces, bbox, band_rows, nbands, starts, items, zbuf, p2f):
    """Z-buffer every band: keep the largest interpolated 1/depth (nearest surface) per pixel."""
    B = verts.shape[0]
    for job in prange(B * nbands):
        b = job // nbands
        band = job - b * nbands
        r_lo = band * band_rows
        r_hi = r_lo + band_rows - 1
        for k in range(starts[job], starts[job + 1]):
            f = items[k]
            i0 = faces[f, 0]
            i1 = faces[f, 1]
            i2 = faces[f, 2]
            x0 = verts[b, i0, 0]
            y0 = verts[b, i0, 1]
            x1 = verts[b, i1, 0]
            y1 = verts[b, i1, 1]
            x2 = verts[b, i2, 0]
            y2 = verts[b, i2, 1]
            iz0 = 1.0 / verts[b, i0, 2]
            iz1 = 1.0 / verts[b, i1, 2]
            iz2 = 1.0 / verts[b, i2, 2]
            area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
            s = 1.0 if area > 0.0 else -1.0
            inv_area = 1.0 / (area * s)
            # Ownership of each edge (edge k is opposite corner k) for on-edge pixel centres.
            o0 = _owns(s * (x2 - x1), s * (y2 - y1))
            o1 = _owns(s * (x0 - x2), s * (y0 - y2))
            o2 = _owns(s * (x1 - x0), s * (y1 - y0))
            ra = max(bbox[b, f, 0], r_lo)
            rb = min(bbox[b, f, 1], r_hi)
            c0 = bbox[b, f, 2]
            c1 = bbox[b, f, 3]
            for r in range(ra, rb + 1):
                py = float(r)
                for c in range(c0, c1 + 1):
                    px = float(c)
                    e0 = s * _edge(x1, y1, x2, y2, px, py)
                    if e0 < 0.0 or (e0 == 0.0 and not o0):
                        continue
                    e1 = s * _edge(x2, y2, x0, y0, px, py)
                    if e1 < 0.0 or (e1 == 0.0 and not o1):
                        continue
                    e2 = s * _edge(x0, y0, x1, y1, px, py)
                    if e2 < 0.0 or (e2 == 0.0 and not o2):
                        continue
                    # 1/depth is affine in screen space: perspective-correct z-test.
                    iz = (e0 * iz0 + e1 * iz1 + e2 * iz2) * inv_area
                    if iz > zbuf[b, r, c]:
                        zbuf[b, r, c] = iz
                        p2f[b, r, c] = f


def rasterize_visibility(verts: np.ndarray, faces: np.ndarray, height: int, width: int, near: float,
                         cull_backfaces: bool, band_rows: int = 0) -> np.ndarray:
    """Face id per pixel (-1 background) for screen-space vertices.

    Args:
        verts: (B, V, 3) float64 C-contiguous (x px, y px, depth > 0).
        faces: (F, 3) int64 C-contiguous.
        band_rows: rows per parallel work item; 0 picks a size that gives every thread several
            bands to balance load.

    Returns:
        (B, H, W) int64 face ids.
    """
    B = verts.shape[0]
    F = faces.shape[0]
    p2f = np.full((B, height, width), -1, np.int64)
    if F == 0 or B == 0:
        return p2f
    if band_rows <= 0:
        band_rows = max(4, min(32, height // 16 or 1))
    nbands = (height + band_rows - 1) // band_rows
    bbox = np.empty((B, F, 4), np.int32)
    _setup(verts, faces, height, width, near, cull_backfaces, bbox)
    starts = np.zeros(B * nbands + 1, np.int64)
    items = _bin(bbox, band_rows, nbands, starts)
    zbuf = np.zeros((B, height, width), np.float64)
    _raster(verts, faces, bbox, band_rows, nbands, starts, items, zbuf, p2f)
    return p2f
