"""Face profiling (Zhu et al., CVPR 2016, the method behind 300W-LP): rotate a fitted head in 3-D and
re-render the photo's own texture at the new pose, with exact 3-D labels for the new view.

The scene rendered for a new view has two meshes, both textured from the ORIGINAL photo:

- the face: the fitted model mesh, each vertex sampling the photo where the source view sees it.
  Vertices the source view cannot see (self-occluded, facing away) or sees only at a grazing angle
  take the texture position of their mirror vertex (symmetric counterpart on the mean face) when that
  one is seen well; the rest fall back to the fit's shaded albedo.
- the surroundings: a 2.5-D mesh in the source crop. Anchors on the face's silhouette (the convex
  hull of the projected face, with the face's depth there), two rings around it (hair, ears, neck;
  depth pushed back from the contour), and static anchors on and far beyond the crop border (the
  background, behind the head). Rings and silhouette rotate with the head, the border anchors stay,
  so the triangles between them stretch: the background and hair move plausibly and no pixel is
  left uncovered. A copy of the silhouette anchors triangulated inside the hull, pushed behind the
  face, fills holes of the face mesh (eye and mouth openings) with the photo.

Every view is rendered by our CPU rasterizer (`render.rasterize` + `render.interpolate`) as one
mesh: per-vertex attributes (photo position, texture weight, fallback colour, face flag) are
interpolated and the photo is sampled bilinearly per pixel, so the texture keeps the photo's
resolution. The new view is then re-aligned like the pipeline (Deep3D 5-point similarity to the
model's mean face, no rotation), i.e. rendered through a scaled/shifted crop camera.

Coordinates: world mm in the crop camera's frame (docs/coordinates.md), pixels with centres at
integers; Euler angles [pitch, yaw, roll] in radians with R = Rz(roll) Ry(yaw) Rx(pitch).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from ..geometry.camera import PerspectiveCamera
from ..geometry.landmarks import lm5_from_lm68_corners
from ..geometry.mesh import vertex_normals
from ..geometry.rotations import axis_angle_to_matrix, euler_to_matrix, matrix_to_axis_angle
from ..geometry.transforms2d import estimate_similarity, invert_affine, transform_points
from ..render.rasterize import interpolate, rasterize

# A vertex seen with |n·view| below this is "grazing": its texture is smeared when rotated frontal,
# so its mirror vertex is used when that one faces the source camera clearly better.
GRAZING = 0.25
MIRROR_GAIN = 0.2


@dataclass(frozen=True)
class SourceView:
    """A fitted photo, as profiling needs it (float64 numpy, no batch dimension).

    photo: (H, W, 3) uint8 the original photo.
    M: (2, 3) original-photo pixels -> crop pixels (a similarity, `align.Crop.M`).
    camera: the crop's PerspectiveCamera (224² Deep3D camera by default).
    vertices_model: (V, 3) model-space vertices, mm (identity + expression, no pose).
    rotation: (3,) fitted [pitch, yaw, roll], radians; translation: (3,) mm (v_world = R v + t).
    fallback_rgb: (V, 3) in [0, 1]: colour of a vertex the photo cannot give (shaded albedo).
    """

    photo: np.ndarray
    M: np.ndarray
    camera: PerspectiveCamera
    vertices_model: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    fallback_rgb: np.ndarray


@dataclass(frozen=True)
class ProfiledView:
    """One synthesized (or source) view in its own aligned crop.

    image: (S, S, 3) uint8; mask: (S, S) bool, pixels of the face mesh.
    camera: the view's PerspectiveCamera (the crop camera scaled/shifted by the re-alignment).
    rotation: (3,) [pitch, yaw, roll] radians; translation: (3,) mm.
    vertices_world: (V, 3) posed vertices, mm, camera frame (= R v + t).
    vertices_px: (V, 3) (x px, y px, depth mm) in this crop.
    lm68_3d: (68, 3) posed landmarks (vertex + model-space offset), mm; lm68: (68, 2) their pixels.
    vis68: (68,) int8: 1 visible, -1 self-occluded (landmark vertex faces away or lies behind the
        face), 0 outside the crop.
    texture_from_photo: fraction of face pixels textured from the photo (the rest: mirror or
        fallback albedo, counted in `mirror_fraction` / by difference).
    """

    image: np.ndarray
    mask: np.ndarray
    camera: PerspectiveCamera
    rotation: np.ndarray
    translation: np.ndarray
    vertices_world: np.ndarray
    vertices_px: np.ndarray
    lm68_3d: np.ndarray
    lm68: np.ndarray
    vis68: np.ndarray
    texture_from_photo: float
    mirror_fraction: float


@lru_cache(maxsize=4)
def _mirror_cached(key: bytes, shape: tuple) -> np.ndarray:
    from scipy.spatial import cKDTree

    v = np.frombuffer(key, np.float64).reshape(shape)
    m = v * np.array([-1.0, 1.0, 1.0])
    return cKDTree(v).query(m)[1].astype(np.int64)


def mirror_map(mean_shape: np.ndarray) -> np.ndarray:
    """(V,) int64: the vertex nearest to each vertex's mirror image (x -> -x) on the mean face."""
    v = np.ascontiguousarray(mean_shape, np.float64)
    return _mirror_cached(v.tobytes(), v.shape)


def _np64(t) -> np.ndarray:
    return t.detach().cpu().double().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, np.float64)


def vertex_visibility(vertices_world: np.ndarray, faces: np.ndarray, camera: PerspectiveCamera,
                      depth_tol_mm: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Which vertices the camera sees: front-most at their pixel (z-buffer of `faces`, `depth_tol_mm`)
    and facing the camera. Image bounds are ignored (the z-buffer is rendered with a margin).

    Args:
        vertices_world: (V, 3) mm; faces: (F, 3) int64; camera: the view.

    Returns:
        visible (V,) bool and facing (V,) float64 = cos of the angle between normal and view ray.
    """
    v = torch.as_tensor(vertices_world, dtype=torch.float64)[None]
    f = torch.as_tensor(faces, dtype=torch.int64)
    screen = camera.project(v)[0]
    # Rasterize over the points' own bounding box so vertices outside the crop are tested too.
    lo = torch.floor(screen[:, :2].min(0).values) - 2
    hi = torch.ceil(screen[:, :2].max(0).values) + 2
    W, H = int(hi[0] - lo[0]) + 1, int(hi[1] - lo[1]) + 1
    shifted = screen.clone()
    shifted[:, 0] -= lo[0]
    shifted[:, 1] -= lo[1]
    frags = rasterize(shifted[None], f, (H, W), near=camera.near)
    depth = frags.depth[0]
    face_id = frags.pix_to_face[0]
    x = shifted[:, 0].round().long().clamp(0, W - 1)
    y = shifted[:, 1].round().long().clamp(0, H - 1)
    zd = depth[y, x]
    covered = face_id[y, x] >= 0
    front = ~covered | (screen[:, 2] <= zd + depth_tol_mm)
    normals = vertex_normals(v, f)[0]
    ray = torch.tensor([0.0, 0.0, camera.distance], dtype=torch.float64) - v[0]
    facing = (normals * ray).sum(-1) / ray.norm(dim=-1).clamp_min(1e-9)
    return (front & (facing > 0)).numpy(), facing.numpy()


def boundary_loops(faces: np.ndarray) -> list[np.ndarray]:
    """The closed boundary loops of a triangle mesh (edges used by one triangle), as vertex index
    arrays in order around the loop. faces: (F, 3) int64."""
    f = np.asarray(faces, np.int64)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    key = np.sort(e, 1)
    _, inv, cnt = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    border = e[cnt[inv.reshape(-1)] == 1]
    nxt = {int(a): int(b) for a, b in border}  # a boundary edge's direction follows its triangle
    loops, seen = [], set()
    for start in nxt:
        if start in seen:
            continue
        loop, cur = [], start
        while cur not in seen and cur in nxt:
            seen.add(cur)
            loop.append(cur)
            cur = nxt[cur]
        loops.append(np.asarray(loop, np.int64))
    return loops


def _convex_hull(points: np.ndarray) -> np.ndarray:
    from scipy.spatial import ConvexHull

    return ConvexHull(points).vertices


def _unproject(camera: PerspectiveCamera, xy: np.ndarray, depth: np.ndarray) -> np.ndarray:
    return camera.unproject(torch.as_tensor(xy, dtype=torch.float64),
                            torch.as_tensor(depth, dtype=torch.float64)).numpy()


@dataclass(frozen=True)
class Scene:
    """The source's textured scene (world mm, crop camera frame), built once per photo.

    points: (P, 3) all vertices (face first: V of them); faces: (T, 3) int64 triangles;
    rotate_weight: (P,) how much of the head rotation each vertex follows (1 face/hair, 0 background);
    tex_xy: (P, 2) photo pixels each vertex samples; tex_w: (P,) 1 = photo, 0 = fallback colour;
    fallback: (P, 3) colour in [0, 1]; is_face: (P,) 1 for face-mesh vertices;
    mirrored: (P,) 1 where the photo position is the mirror vertex's; n_face: V; centre: (3,) mm, the head's
    rotation centre (the model origin, `translation`).
    """

    points: np.ndarray
    faces: np.ndarray
    rotate_weight: np.ndarray
    tex_xy: np.ndarray
    tex_w: np.ndarray
    fallback: np.ndarray
    is_face: np.ndarray
    mirrored: np.ndarray
    n_face: int
    n_face_tris: int
    centre: np.ndarray


class Profiler:
    """Builds scenes and renders profiled views for one morphable model.

    Args:
        faces: (F, 3) int64 model triangles; mean_shape: (V, 3) mean face (for the mirror map);
        landmark_vertices: (68,) int64 and landmark_offsets: (68, 3) mm, model space (`MorphableModel`).
        size: output crop size S; lm5_ref_px: (5, 2) where the pipeline puts the 5 alignment points in
        an S² crop (the mean face's, projected at zero pose) — the re-alignment target.
    """

    def __init__(self, faces, mean_shape, landmark_vertices, landmark_offsets, camera: PerspectiveCamera,
                 lm5_ref_px: np.ndarray):
        self.faces = np.asarray(_np64(faces), np.int64)
        self.mirror = mirror_map(_np64(mean_shape))
        self.lm_vertices = np.asarray(_np64(landmark_vertices), np.int64)
        self.lm_offsets = _np64(landmark_offsets)
        self.camera = camera
        self.lm5_ref_px = np.asarray(lm5_ref_px, np.float64)
        # The mesh's inner boundary loops (eye sockets, the mouth's inside) are capped with a fan to
        # their centre, so they show the photo's eyes and mouth, not the background behind the face.
        loops = boundary_loops(self.faces)
        self.caps = sorted(loops, key=len)[:-1] if len(loops) > 1 else []

    @staticmethod
    def of_model(model, camera: PerspectiveCamera) -> Profiler:
        ref = camera.project(model.mean_lm5().detach().double().cpu())[:, :2].numpy()
        return Profiler(model.faces, model.mean_shape, model.landmarks68, model.landmark_offsets, camera, ref)

    # -- geometry ----------------------------------------------------------------------------
    def posed(self, src: SourceView, rotation: np.ndarray) -> np.ndarray:
        """(V, 3) model vertices posed with `rotation` (3,) radians and the source's translation, mm."""
        R = euler_to_matrix(torch.as_tensor(rotation, dtype=torch.float64)).numpy()
        return src.vertices_model @ R.T + src.translation

    def landmarks3d(self, src: SourceView, rotation: np.ndarray) -> np.ndarray:
        R = euler_to_matrix(torch.as_tensor(rotation, dtype=torch.float64)).numpy()
        lm = src.vertices_model[self.lm_vertices] + self.lm_offsets
        return lm @ R.T + src.translation

    # -- the source scene ------------------------------------------------------------------------
    def scene(self, src: SourceView) -> Scene:
        cam = src.camera
        S = cam.width
        verts = self.posed(src, src.rotation)
        screen = cam.project(torch.as_tensor(verts))[:, :3].numpy()
        vis, facing = vertex_visibility(verts, self.faces, cam)
        M_inv = invert_affine(src.M)
        own = transform_points(M_inv, screen[:, :2])
        mir = self.mirror
        good = vis & (facing > GRAZING)
        use_mirror = (~good) & vis[mir] & (facing[mir] > np.maximum(facing, 0) + MIRROR_GAIN)
        tex = np.where(use_mirror[:, None], own[mir], own)
        seen = vis | use_mirror
        # Never seen, not even mirrored (the sides towards the ears, the mouth's inside): the photo
        # position of the nearest well-seen vertex (model space), i.e. the contour's texture stretched
        # over it, as 300W-LP does; the fit's shaded albedo only when the photo shows nothing at all.
        tex_w = np.ones(len(verts))
        unseen = ~seen
        anchor = good if good.any() else seen
        if unseen.any() and anchor.any():
            from scipy.spatial import cKDTree

            ids = np.flatnonzero(anchor)
            near = ids[cKDTree(src.vertices_model[ids]).query(src.vertices_model[unseen])[1]]
            tex[unseen] = tex[near]
        elif unseen.any():
            tex_w[unseen] = 0.0
        V = len(verts)
        # Caps: centre vertex (mean of its loop), textured where the photo sees it, else from its rim.
        cap_pts, cap_tex, cap_tris = [], [], []
        for j, loop in enumerate(self.caps):
            c = verts[loop].mean(0)
            cap_pts.append(c)
            seen_rim = good[loop].mean() >= 0.5
            cs = cam.project(torch.as_tensor(c))[:2].numpy()
            cap_tex.append(transform_points(M_inv, cs) if seen_rim else tex[loop].mean(0))
            cap_tris.append(np.stack([loop, np.roll(loop, -1), np.full(len(loop), V + j)], 1))
        n_cap = len(cap_pts)
        cap_pts = np.asarray(cap_pts, np.float64).reshape(-1, 3)
        cap_tex = np.asarray(cap_tex, np.float64).reshape(-1, 2)
        cap_tris = np.concatenate(cap_tris) if cap_tris else np.zeros((0, 3), np.int64)

        # Silhouette anchors: the convex hull of the projected face, at the face's depth there.
        hull = _convex_hull(screen[:, :2])
        hxy, hdepth = screen[hull, :2], screen[hull, 2]
        centre_px = hxy.mean(0)
        head_depth = float(cam.distance - src.translation[2])
        # Rings around the face (hair, ears, neck) at about the contour's depth, following the head's
        # rotation less and less with distance; the border anchors stay (the background does not turn).
        # The fading weights spread the stretch over two rings instead of folding one.
        rings, ring_depth, ring_w = [], [], []
        for scale, back_mm, w in ((1.25, 10.0, 0.8), (1.55, 25.0, 0.4)):
            rings.append(np.clip(centre_px + (hxy - centre_px) * scale, -0.05 * S, 1.05 * S))
            ring_depth.append(hdepth + back_mm)
            ring_w.append(np.full(len(hxy), w))
        border = np.concatenate([_square(-0.1 * S, 1.1 * S, 8), _square(-1.0 * S, 2.0 * S, 6)])
        bdepth = np.full(len(border), head_depth + 250.0)

        outer_xy = np.concatenate([hxy, *rings, border])
        outer_depth = np.concatenate([hdepth, *ring_depth, bdepth])
        outer_w = np.concatenate([np.ones(len(hxy)), *ring_w, np.zeros(len(border))])
        from scipy.spatial import Delaunay

        tri = Delaunay(outer_xy).simplices.astype(np.int64)
        n_h = len(hxy)
        outer_tris = tri[~(tri < n_h).all(1)]  # drop the hull's inside (the face and the filler cover it)
        inner_tris = Delaunay(hxy).simplices.astype(np.int64)
        # The filler sits behind the face (by 15 mm at the contour): seen only through the face's holes.
        inner_depth = hdepth + 15.0
        bg_xy = np.concatenate([outer_xy, hxy])
        bg_depth = np.concatenate([outer_depth, inner_depth])
        bg_w = np.concatenate([outer_w, np.ones(n_h)])
        bg_points = _unproject(cam, bg_xy, bg_depth)
        bg_tex = transform_points(M_inv, bg_xy)
        n_outer = len(outer_xy)

        B0 = V + n_cap  # first background vertex
        faces = np.concatenate([self.faces, cap_tris, outer_tris + B0, inner_tris + B0 + n_outer])
        n_bg = len(bg_points)
        fallback = np.concatenate([np.clip(src.fallback_rgb, 0, 1), np.full((n_cap + n_bg, 3), 0.5)])
        return Scene(points=np.concatenate([verts, cap_pts, bg_points]), faces=faces,
                     rotate_weight=np.concatenate([np.ones(V + n_cap), bg_w]),
                     tex_xy=np.concatenate([tex, cap_tex, bg_tex]),
                     tex_w=np.concatenate([tex_w, np.ones(n_cap + n_bg)]), fallback=fallback,
                     is_face=np.concatenate([np.ones(V + n_cap), np.zeros(n_bg)]),
                     mirrored=np.concatenate([use_mirror.astype(np.float64), np.zeros(n_cap + n_bg)]), n_face=V,
                     n_face_tris=len(self.faces) + len(cap_tris), centre=np.asarray(src.translation, np.float64))

    # -- a view ----------------------------------------------------------------------------------
    def aligned_camera(self, lm68_world: np.ndarray) -> PerspectiveCamera:
        """The crop camera re-aligned like the pipeline: the similarity (scale + shift) that takes the
        view's 5 points (from its 68 landmarks) onto the mean face's, folded into the camera."""
        cam = self.camera
        lm = cam.project(torch.as_tensor(lm68_world))[:, :2].numpy()
        A = estimate_similarity(lm5_from_lm68_corners(lm), self.lm5_ref_px, rotation=False)
        s = float(A[0, 0])
        return PerspectiveCamera(cam.focal * s, s * cam.cx + A[0, 2], s * cam.cy + A[1, 2], cam.width, cam.height,
                                 cam.distance, cam.near)

    def render(self, src: SourceView, scene: Scene, rotation: np.ndarray, realign: bool = True) -> ProfiledView:
        """Render the scene with the head at `rotation` (3,) [pitch, yaw, roll] radians."""
        R_src = euler_to_matrix(torch.as_tensor(src.rotation, dtype=torch.float64))
        R_new = euler_to_matrix(torch.as_tensor(rotation, dtype=torch.float64))
        aa = matrix_to_axis_angle((R_new @ R_src.T)[None])[0]
        c = torch.as_tensor(scene.centre)
        pts = torch.as_tensor(scene.points)
        moved = pts.clone()
        for w in np.unique(scene.rotate_weight):  # a handful of weights: one matrix each
            sel = torch.as_tensor(scene.rotate_weight == w)
            Rw = axis_angle_to_matrix(float(w) * aa)
            moved[sel] = (pts[sel] - c) @ Rw.T + c
        V = scene.n_face
        # Exact: the rotated face equals the model re-posed at the new rotation.
        moved[:V] = torch.as_tensor(self.posed(src, rotation))
        cam = self.aligned_camera(self.landmarks3d(src, rotation)) if realign else self.camera
        S = cam.width

        screen = cam.project(moved[None])
        faces = torch.as_tensor(scene.faces)
        frags = rasterize(screen, faces, (cam.height, S), near=cam.near)
        attrs = torch.cat([torch.as_tensor(scene.tex_xy), torch.as_tensor(scene.tex_w)[:, None],
                           torch.as_tensor(scene.fallback), torch.as_tensor(scene.is_face)[:, None],
                           torch.as_tensor(scene.mirrored)[:, None]], 1)[None]
        img_attr = interpolate(attrs, frags, faces)[0]  # (S, S, 8)
        covered = frags.mask[0]
        is_face = (frags.pix_to_face[0] >= 0) & (frags.pix_to_face[0] < scene.n_face_tris)
        photo = torch.from_numpy(np.asarray(src.photo, np.float64) / 255.0)
        col = _sample_clamped(photo, img_attr[..., :2])
        tw = img_attr[..., 2:3].clamp(0, 1)
        rgb = tw * col + (1 - tw) * img_attr[..., 3:6]
        if not bool(covered.all()):  # the border anchors cover the crop; guard anyway
            rgb[~covered] = _sample_clamped(photo, _pixel_grid(cam, src)[~covered])
        image = (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()

        mask = is_face.numpy()
        n_face_px = max(int(mask.sum()), 1)
        from_photo = float((tw[..., 0][is_face] > 0.5).sum()) / n_face_px
        mirrored = float((img_attr[..., 7][is_face] > 0.5).sum()) / n_face_px

        lab = self.labels(src, rotation, cam)
        return ProfiledView(image=image, mask=mask, texture_from_photo=from_photo, mirror_fraction=mirrored, **lab)

    def labels(self, src: SourceView, rotation: np.ndarray, cam: PerspectiveCamera) -> dict:
        """The 3-D labels of the head at `rotation` seen by `cam`: ProfiledView's fields except the
        image, the mask and the texture fractions."""
        face_world = self.posed(src, rotation)
        lm3d = self.landmarks3d(src, rotation)
        vpx = cam.project(torch.as_tensor(face_world)).numpy()
        lm_px = cam.project(torch.as_tensor(lm3d)).numpy()[:, :2]
        vis, _ = vertex_visibility(face_world, self.faces, cam)
        inside = ((lm_px[:, 0] > -0.5) & (lm_px[:, 0] < cam.width - 0.5) & (lm_px[:, 1] > -0.5)
                  & (lm_px[:, 1] < cam.height - 0.5))
        vis68 = np.where(vis[self.lm_vertices], 1, -1).astype(np.int8)
        vis68[~inside] = 0
        return {"camera": cam, "rotation": np.asarray(rotation, np.float64),
                "translation": np.asarray(src.translation, np.float64), "vertices_world": face_world,
                "vertices_px": vpx, "lm68_3d": lm3d, "lm68": lm_px, "vis68": vis68}

    def face_mask(self, vertices_world: np.ndarray, cam: PerspectiveCamera) -> np.ndarray:
        """(H, W) bool: pixels the face mesh covers in `cam`."""
        screen = cam.project(torch.as_tensor(vertices_world))
        frags = rasterize(screen[None], torch.as_tensor(self.faces), (cam.height, cam.width), near=cam.near)
        return frags.mask[0].numpy()

    def source_view(self, src: SourceView, crop_image: np.ndarray) -> ProfiledView:
        """The source itself as a view: its aligned crop and the fit's labels (nothing synthesized)."""
        lab = self.labels(src, src.rotation, src.camera)
        return ProfiledView(image=np.asarray(crop_image, np.uint8), mask=self.face_mask(lab["vertices_world"], src.camera),
                            texture_from_photo=1.0, mirror_fraction=0.0, **lab)


def _square(lo: float, hi: float, n: int) -> np.ndarray:
    """Points on the boundary of the square [lo, hi]², n per side (corners once)."""
    t = np.linspace(lo, hi, n + 1)[:-1]
    return np.concatenate([np.stack([t, np.full(n, lo)], 1), np.stack([np.full(n, hi), t], 1),
                           np.stack([t[::-1] + (hi - lo) / n, np.full(n, hi)], 1),
                           np.stack([np.full(n, lo), t[::-1] + (hi - lo) / n], 1)])


def _sample_clamped(image: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup of (H, W, C) at pixel coordinates (..., 2), clamped to the image's edge."""
    H, W, C = image.shape
    lead = xy.shape[:-1]
    g = xy.reshape(1, -1, 1, 2)
    gx = g[..., 0] / max(W - 1, 1) * 2 - 1
    gy = g[..., 1] / max(H - 1, 1) * 2 - 1
    out = F.grid_sample(image.permute(2, 0, 1)[None], torch.stack([gx, gy], -1), mode="bilinear",
                        padding_mode="border", align_corners=True)
    return out[0, :, :, 0].T.reshape(*lead, C)


def _pixel_grid(cam: PerspectiveCamera, src: SourceView) -> torch.Tensor:
    """(S, S, 2) photo positions of the output crop's pixels at the source's depth-free mapping."""
    ys, xs = np.mgrid[0:cam.height, 0:cam.width].astype(np.float64)
    s = cam.focal / src.camera.focal
    crop_xy = np.stack([(xs - cam.cx) / s + src.camera.cx, (ys - cam.cy) / s + src.camera.cy], -1)
    return torch.as_tensor(transform_points(invert_affine(src.M), crop_xy))


__all__ = ["GRAZING", "ProfiledView", "Profiler", "Scene", "SourceView", "boundary_loops", "mirror_map", "vertex_visibility"]
