"""VRN's target volumes: a face mesh in crop pixels -> an occupancy grid aligned with the network's input.

Grid coordinates (`VoxelSpec`): x, y are pixels of the network's input (the 224² crop resampled to
`size`², pixel centres at integers), z is the slice index, 0 in front (towards the camera), growing
with depth. Depth in mm is turned into slices by the same px/mm factor that maps the face's x, y
(the crop camera's focal length at the face's nominal distance, scaled to `size`), so a voxel is a
cube in the face's own units, as in VRN. The face's front-most vertex sits at slice `margin`.

Filling: VRN's volumes came from 3DMM fits of an *open* face mask (3DDFA). They were closed by
extruding the front surface backwards; we do the same: `fill="plane"` fills each (x, y) column of
the rasterised face from its front surface to a back plane at the face's deepest vertex (the volume
is a relief on a flat back, what VRN's meshes look like). `fill="surface"` fills between the first
and the last surface a column meets, the exact solid of a closed mesh (spheres and ellipsoids in
the tests). A voxel is occupied when its centre is inside.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..jit import njit


@dataclass(frozen=True)
class VoxelSpec:
    """The volume's geometry.

    size: network input and output width = height (px); VRN: 192.
    depth: number of slices D; VRN: 200.
    crop_size: the aligned crop the samples live in (224, `align.Crop`).
    focal_px, distance_mm: the crop camera's focal length (crop px) and the face's nominal distance:
        z slices per mm = focal_px / distance_mm * size / crop_size (x, y's px/mm at that distance).
    margin: slice of the face's front-most vertex.
    """

    size: int = 192
    depth: int = 200
    crop_size: int = 224
    focal_px: float = 1015.0
    distance_mm: float = 1000.0
    margin: float = 2.0

    @property
    def scale(self) -> float:
        """Grid px per crop px."""
        return self.size / self.crop_size

    @property
    def slices_per_mm(self) -> float:
        return self.focal_px / self.distance_mm * self.scale

    def shape(self) -> tuple[int, int, int]:
        """(D, H, W): slices first, the network's channel order."""
        return self.depth, self.size, self.size

    def to_grid(self, vertices_px: np.ndarray, front_mm: float | None = None) -> tuple[np.ndarray, float]:
        """Crop (x px, y px, depth mm) (V, 3) -> grid (x, y, z slice) (V, 3) float64, and the depth (mm)
        at slice `margin` (default: the front-most vertex's)."""
        v = np.asarray(vertices_px, np.float64)
        front = float(v[:, 2].min()) if front_mm is None else float(front_mm)
        s = self.scale
        g = np.empty_like(v)
        g[:, 0] = (v[:, 0] + 0.5) * s - 0.5
        g[:, 1] = (v[:, 1] + 0.5) * s - 0.5
        g[:, 2] = (v[:, 2] - front) * self.slices_per_mm + self.margin
        return g, front

    def to_crop(self, grid: np.ndarray, front_mm: float) -> np.ndarray:
        """The inverse of `to_grid`: grid (N, 3) -> crop (x px, y px, depth mm) (N, 3) float64."""
        g = np.asarray(grid, np.float64)
        s = self.scale
        v = np.empty_like(g)
        v[:, 0] = (g[:, 0] + 0.5) / s - 0.5
        v[:, 1] = (g[:, 1] + 0.5) / s - 0.5
        v[:, 2] = (g[:, 2] - self.margin) / self.slices_per_mm + front_mm
        return v


#: The reference (VRN) and our reduced CPU grid.
FULL = VoxelSpec(192, 200)
REDUCED = VoxelSpec(96, 100)


@njit(cache=True)
def _raster_minmax(v, faces, front, back):  # pragma: no cover - compiled
    """Per pixel centre (x, y integer), the least and greatest z of the triangles covering it."""
    H, W = front.shape
    for f in range(faces.shape[0]):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        x0, y0, z0 = v[a, 0], v[a, 1], v[a, 2]
        x1, y1, z1 = v[b, 0], v[b, 1], v[b, 2]
        x2, y2, z2 = v[c, 0], v[c, 1], v[c, 2]
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        if abs(area) < 1e-12:
            continue  # seen edge-on: its neighbours hold the column's z
        xmin = max(int(np.ceil(min(x0, x1, x2))), 0)
        xmax = min(int(np.floor(max(x0, x1, x2))), W - 1)
        ymin = max(int(np.ceil(min(y0, y1, y2))), 0)
        ymax = min(int(np.floor(max(y0, y1, y2))), H - 1)
        inv = 1.0 / area
        # Edges inclusive (a small tolerance): a column on a shared edge is covered, never missed.
        eps = -1e-9
        for y in range(ymin, ymax + 1):
            for x in range(xmin, xmax + 1):
                w0 = ((x1 - x) * (y2 - y) - (x2 - x) * (y1 - y)) * inv
                w1 = ((x2 - x) * (y0 - y) - (x0 - x) * (y2 - y)) * inv
                w2 = 1.0 - w0 - w1
                if w0 < eps or w1 < eps or w2 < eps:
                    continue
                z = w0 * z0 + w1 * z1 + w2 * z2
                front[y, x] = min(front[y, x], z)
                back[y, x] = max(back[y, x], z)


def rasterize_depth(grid_vertices: np.ndarray, faces: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Front and back z of a mesh at each column (pixel centre) of a `size`² grid.

    Args:
        grid_vertices: (V, 3) x, y grid px, z slices.
        faces: (F, 3) int vertex indices.
    Returns:
        front, back: (size, size) float64, +inf / -inf where no triangle covers the column.
    """
    front = np.full((size, size), np.inf)
    back = np.full((size, size), -np.inf)
    _raster_minmax(np.ascontiguousarray(grid_vertices, np.float64), np.ascontiguousarray(faces, np.int64),
                   front, back)
    return front, back


def fill_columns(front: np.ndarray, back: np.ndarray, depth: int) -> np.ndarray:
    """(D, H, W) uint8 occupancy: slice k of a column is 1 when front <= k <= back (voxel centres)."""
    k = np.arange(depth, dtype=np.float64)[:, None, None]
    return ((k >= front[None]) & (k <= back[None])).astype(np.uint8)


def voxelize(grid_vertices: np.ndarray, faces: np.ndarray, spec: VoxelSpec, fill: str = "plane") -> np.ndarray:
    """The occupancy volume of a mesh already in grid coordinates (`VoxelSpec.to_grid`).

    Args:
        grid_vertices: (V, 3) float, x, y grid px, z slices.
        faces: (F, 3) int.
        fill: "plane" (open face masks: each covered column from the front surface to the plane
            z = the mesh's deepest vertex) or "surface" (closed meshes: from the first to the last
            surface of the column).
    Returns:
        (D, size, size) uint8, 1 inside.
    """
    if fill not in ("plane", "surface"):
        raise ValueError(f"fill must be 'plane' or 'surface', got {fill!r}")
    g = np.asarray(grid_vertices, np.float64)
    front, back = rasterize_depth(g, faces, spec.size)
    if fill == "plane":
        back = np.where(np.isfinite(front), g[np.unique(faces), 2].max(), -np.inf)
    return fill_columns(front, back, spec.depth)


def voxelize_sample(vertices_px: np.ndarray, faces: np.ndarray, spec: VoxelSpec,
                    fill: str = "plane") -> tuple[np.ndarray, float]:
    """A data-engine sample's target: (D, size, size) uint8 volume and the depth (mm) of slice `margin`.

    vertices_px: (V, 3) crop x px, y px, depth mm (`dataset.store.SAMPLE_KEYS`); faces: the model's triangles.
    """
    g, front = spec.to_grid(vertices_px)
    return voxelize(g, faces, spec, fill), front


def visible_vertices(vertices_px: np.ndarray, faces: np.ndarray, size: int = 224, tol_mm: float = 2.0) -> np.ndarray:
    """(V,) bool: the vertices a crop shows (front-most at their pixel within `tol_mm`, inside the crop).

    vertices_px: (V, 3) crop x px, y px, depth mm; size: the crop's width = height."""
    v = np.asarray(vertices_px, np.float64)
    front, _ = rasterize_depth(v, faces, size)
    xi, yi = np.round(v[:, 0]).astype(np.int64), np.round(v[:, 1]).astype(np.int64)
    inside = (xi >= 0) & (xi < size) & (yi >= 0) & (yi < size)
    out = np.zeros(len(v), bool)
    out[inside] = v[inside, 2] <= front[yi[inside], xi[inside]] + tol_mm
    return out


def flip_volume(volume: np.ndarray) -> np.ndarray:
    """Mirror a (..., H, W) volume left-right (x -> size - 1 - x), as a flipped input image needs."""
    return np.ascontiguousarray(volume[..., ::-1])


def iou(pred: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union of two boolean-able volumes of the same shape (1.0 when both are empty)."""
    p, t = np.asarray(pred) > 0, np.asarray(target) > 0
    union = np.count_nonzero(p | t)
    return 1.0 if union == 0 else np.count_nonzero(p & t) / union


__all__ = ["FULL", "REDUCED", "VoxelSpec", "fill_columns", "flip_volume", "iou", "rasterize_depth", "visible_vertices", "voxelize",
           "voxelize_sample"]
