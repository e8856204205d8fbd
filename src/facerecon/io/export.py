"""Writing one reconstructed face to disk through a registry of exporters (trimesh's pattern).

Per face, with stem S in the output folder (the format name in brackets):
  S.mat / S.npz   [mat, npz] Deep3D's fields: cropped_img (224,224,3) uint8, recon_img (224,224,4) uint8
                  overlay RGBA, coeff (1, dim) in the model's layout, face_shape (V,3) model space mm,
                  face_shape_posed (V,3) world mm, face_texture (V,3) albedo 0..255, face_color (V,3)
                  shaded 0..255, lm_68p (68,2) crop px, lm_5p (5,2) crop px, plus lm_68p_image (68,2)
                  original-image px, pose_deg (3,) yaw/pitch/roll, trans_mm (3,). (No coeff for a
                  method without model parameters.)
  S.obj           [obj] mesh (model space, mm) with shaded vertex colours
  S_textured.obj  [textured] + S_textured.mtl + S_textured.png: UV texture sampled from the photo
                  (visible texels)
  S.ply           [ply] binary PLY with vertex colours
  S.json          [json] pose (degrees), translation (mm), camera, ARKit blendshape weights (ICT), timings
  S.json          (schema_version 2) also: intrinsics_K (3x3, original photo px), world_to_camera (4x4,
                  OpenCV axes) and camera_convention, depth_png_unit_mm
  S_panel.png     [panel] input crop | overlay | shaded geometry | landmarks | shaded geometry from the side
  S_overlay.png   [overlay] the reconstruction rendered over the whole original photo
  S.glb           [glb] binary glTF of the model-space mesh (mm, upright like S.obj) with the photo's UV
                  texture when there is one (vertices split at UV seams), else shaded vertex colours
  S_posed.obj     [posed] the mesh posed in the camera frame (face_shape_posed, mm) with vertex colours
  S_neutral.obj   [neutral] same identity, expression coefficients zero, model space (mm), vertex colours
                  (only for methods with model parameters)
  S_landmarks3d.json [landmarks3d] the 68 landmarks: model space mm, posed mm (S_posed.obj's frame),
                  OpenCV camera frame mm, crop px, original-image px (needs the model's 3-D landmarks)
  S_depth.png, S_normals.png, S_pncc.png [maps] maps of the crop: depth (16-bit, depth_mm = value ×
                  DEPTH_UNIT_MM, 0 = background), camera-space normals ((n + 1)/2, black background),
                  PNCC (3DDFA's code, black background)
  S_head.obj, S_head_posed.obj [head] the model's full head (ICT: 26,719 vertices with neck, mouth
                  socket, eyes, teeth; its first V vertices are S.obj's) in model space like S.obj and
                  posed like S_posed.obj, mm, shaded vertex colours (only for models with a head)
Registered after the built-ins (3DDFA_V3's outputs; need the model's part / landmark annotations):
  S_seg_crop.png, S_seg.png [seg] the 8 part masks (3DDFA_V3's order: right eye, left eye, right brow,
                  left brow, nose, upper lip, lower lip, skin; "right" = the subject's right), each drawn
                  even where the pose hides it, as one 8-bit PNG: bit k set where part k is; crop /
                  original-photo pixels
  S_seg_visible_crop.png, S_seg_visible.png [seg_visible] the visible part per pixel (z-buffer): 0
                  background, k + 1 for part k
  S_landmarks.json [landmarks] the 68, 106 (JD layout), 106_2d (jaw contour re-picked on the silhouette)
                  and 134 landmarks in crop and original-image px (+ model/posed mm for 68, 106, 134)
  S_extracted.obj [extracted] + .mtl + S_extracted.png: the mesh with 3DDFA_V3's extractTex-like texture
                  (grazing samples faded, occluders rejected, unseen parts filled from the mirrored side,
                  then the albedo); S_albedo.png: the albedo-only UV texture
Every file is written atomically (a temp file beside it, renamed into place; deleted on error).

Exporters read an `ExportItem`: plain numpy arrays, plus the images rendered beforehand by the
caller. `images_needed(formats)` names the images a set of formats needs or wants (render them with
`facerecon.render.views.render_images`); a format whose needed image is absent is skipped (no photo:
no "overlay", "textured"; no UV layout: no "textured"); a wanted one is used when present ("glb"
takes the "texture" if there is one). This module imports no torch and no renderer.

    >>> from facerecon.io.export import export, images_needed
    >>> export(item, "out", "face0", ("obj", "json"))   # -> [Path('out/face0.obj'), Path('out/face0.json')]

New formats: `register_exporter("name", func, needs=(...), description=...)` with
``func(item, out_dir: Path, stem: str) -> list[Path]`` (return [] to decline for an item).
"""

from __future__ import annotations

import io as _io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from ..errors import FaceReconError
from .arrays import write_mat, write_npz
from .atomic import write_bytes, write_text
from .mesh import write_obj, write_ply

#: How the JSON's rotation reads (docs/coordinates.md).
POSE_CONVENTION = ("v_camera = R v_model + t; R = Rz(roll) Ry(yaw) Rx(pitch) (intrinsic x-y-z: pitch first); "
                   "model: x subject's left, y up, z out of the face; camera: x right, y up, z towards the viewer; "
                   "yaw > 0 turns the nose to image right, pitch > 0 nose up, roll > 0 counter-clockwise on screen")

#: How the JSON's camera matrices read.
CAMERA_CONVENTION = ("OpenCV: camera x right, y down, z forward (into the scene), pixel centres at integers; "
                     "[u, v, w] = intrinsics_K @ (world_to_camera @ [x, y, z, 1])[:3], pixel = (u/w, v/w), for "
                     "points in the posed/world frame (S_posed.obj, face_shape_posed: x right, y up, z towards "
                     "the viewer, mm; the camera at +z distance_mm); the original photo's pixels")

#: The depth map's unit: depth_mm = S_depth.png value × DEPTH_UNIT_MM (0: background).
DEPTH_UNIT_MM = 0.1

#: The JSON's schema version (2: intrinsics_K, world_to_camera, camera_convention, depth_png_unit_mm).
SCHEMA_VERSION = 2

#: The built-in formats, in the order `export` writes them.
ALL = ("mat", "npz", "obj", "textured", "ply", "json", "panel", "overlay", "glb", "posed", "neutral", "landmarks3d",
       "maps", "head")


@dataclass(frozen=True, eq=False, kw_only=True)
class ExportItem:
    """Everything an exporter may write for ONE face: numpy arrays without a batch dimension.

    Float arrays are float32 (a float64 reconstruction may pass float64: every writer casts at
    the point today's files were cast, so the files are the same either way).

    vertices:        (V, 3) model space (identity + expression, no pose), mm — S.obj, S.ply, face_shape.
    vertices_posed:  (V, 3) posed in the crop camera's world frame, mm — face_shape_posed.
    faces:           (F, 3) int64 vertex indices, counter-clockwise seen from outside.
    colors:          (V, 3) shaded vertex colours in [0, 1] (SH-shaded albedo, clamped).
    albedo:          (V, 3) reflectance in [0, 1].
    crop_image:      (S, S, 3) uint8 aligned crop (Deep3D's cropped_img).
    lm68_crop:       (68, 2) float32 fitted landmarks, crop px.
    lm5_crop:        (5, 2) the crop's 5 alignment points, crop px (or None: no lm_5p field).
    lm68_image:      (68, 2) float32 fitted landmarks, original-image px.
    pose_deg:        {"yaw", "pitch", "roll"} degrees (floats).
    rotation:        (3, 3) head rotation, model frame -> camera frame (x right, y up, z towards the
                     viewer), R = Rz(roll) Ry(yaw) Rx(pitch); or None.
    translation_mm:  (3,) translation, mm.
    camera:          the original photo's camera as the JSON holds it: {"focal_px", "cx", "cy",
                     "width", "height", "distance_mm"} (`camera_json` makes it from a camera).
    box:             (4,) detection box [x0, y0, x1, y1], original px.
    uv:              (T, 2) float32 UVs in [0, 1], v up; empty (0, 2) for a model without UVs.
    uv_faces:        (F, 3) int64 indices into `uv`; empty: `uv` is per vertex (indexed by `faces`).
    coeff:           (1, D) float32 flat coefficient vector in the model's layout, or None for a
                     method without model parameters (then the .mat/.npz lack 'coeff').
    lm68_detected_crop: (68, 2) the detector's landmarks in crop px, or None (drawn in the panel's
                     landmarks image, which the caller renders).
    detector:        name of the detector backend(s).
    blendshapes:     {ARKit name: weight} (ICT), or None.
    times:           {step: seconds}.
    source:          name of the input image; model: the model's name.
    vertices_neutral: (V, 3) the same identity with expression coefficients zero, model space, mm; or
                     None (a method without model parameters, or not asked for): no S_neutral.obj.
    landmarks3d:     (68, 3) the 68 landmarks in model space (vertex + offset), mm; or None: no
                     S_landmarks3d.json.
    landmarks3d_posed: (68, 3) the same posed (the frame of `vertices_posed`), mm; or None.
    landmarks:       {"lm68" | "lm106" | "lm106_2d" | "lm134": {"crop_px": (N, 2), "image_px": (N, 2) and, but
                     for lm106_2d, "model_mm": (N, 3), "posed_mm": (N, 3)}} or None: no S_landmarks.json.
    head_vertices:   (Vh, 3) the model's full head with this face's identity and expression, model
                     space, mm (its first V rows are `vertices`); or None: no S_head*.obj.
    head_vertices_posed: (Vh, 3) the same posed like `vertices_posed`, mm; or None.
    head_faces:      (Fh, 3) int64 triangles of the head; or None.
    head_colors:     (Vh, 3) shaded vertex colours of the head in [0, 1]; or None.
    notes:           {key: JSON-able} the method's remarks (S.json "notes"), or None.
    images:          {name: uint8 (or uint16) image} rendered by the caller (`images_needed`):
                     "recon_crop" (S,S,4) RGBA, "geometry_crop" (S,S,3), "geometry_side" (S,S,3),
                     "landmarks_crop" (S,S,3), "overlay" (h,w,3), "texture" (T,T,3), "depth_crop" (S,S)
                     uint16, "normals_crop" (S,S,3), "pncc_crop" (S,S,3); see `facerecon.render.views`.
    """

    vertices: np.ndarray
    vertices_posed: np.ndarray
    faces: np.ndarray
    colors: np.ndarray
    albedo: np.ndarray
    crop_image: np.ndarray
    lm68_crop: np.ndarray
    lm5_crop: np.ndarray | None
    lm68_image: np.ndarray
    pose_deg: dict
    translation_mm: np.ndarray
    camera: dict
    box: np.ndarray
    uv: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    uv_faces: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))
    coeff: np.ndarray | None = None
    rotation: np.ndarray | None = None
    lm68_detected_crop: np.ndarray | None = None
    detector: str = ""
    blendshapes: dict | None = None
    times: dict = field(default_factory=dict)
    source: str = ""
    model: str = ""
    vertices_neutral: np.ndarray | None = None
    landmarks3d: np.ndarray | None = None
    landmarks3d_posed: np.ndarray | None = None
    images: dict = field(default_factory=dict)
    landmarks: dict | None = None
    head_vertices: np.ndarray | None = None
    head_vertices_posed: np.ndarray | None = None
    head_faces: np.ndarray | None = None
    head_colors: np.ndarray | None = None
    notes: dict | None = None

    def __post_init__(self):
        v = np.shape(self.vertices)
        if len(v) != 2 or v[1] != 3:
            raise ValueError(f"ExportItem.vertices must be (V, 3), got {v}")
        for name in ("vertices_posed", "colors", "albedo"):
            if np.shape(getattr(self, name)) != v:
                raise ValueError(f"ExportItem.{name} must be {v} like vertices, got {np.shape(getattr(self, name))}")
        f = np.shape(self.faces)
        if len(f) != 2 or f[1] != 3:
            raise ValueError(f"ExportItem.faces must be (F, 3), got {f}")
        if self.vertices_neutral is not None and np.shape(self.vertices_neutral) != v:
            raise ValueError(f"ExportItem.vertices_neutral must be {v} like vertices, "
                             f"got {np.shape(self.vertices_neutral)}")
        for name in ("landmarks3d", "landmarks3d_posed"):
            a = getattr(self, name)
            if a is not None and (np.ndim(a) != 2 or np.shape(a)[1] != 3):
                raise ValueError(f"ExportItem.{name} must be (N, 3), got {np.shape(a)}")
        head = [getattr(self, n) for n in ("head_vertices", "head_vertices_posed", "head_faces", "head_colors")]
        if any(a is not None for a in head):
            hv = np.shape(head[0])
            if any(a is None for a in head) or len(hv) != 2 or hv[1] != 3 or hv[0] < v[0] \
                    or np.shape(head[1]) != hv or np.shape(head[3]) != hv or np.ndim(head[2]) != 2:
                raise ValueError("ExportItem.head_*: all four or none; head_vertices, head_vertices_posed, "
                                 f"head_colors (Vh >= V, 3), head_faces (Fh, 3); got {[np.shape(a) for a in head]}")
        bad = {k: getattr(a, "dtype", type(a)) for k, a in self.images.items()
               if not isinstance(a, np.ndarray) or a.dtype not in (np.uint8, np.uint16)}
        if bad:
            raise ValueError(f"ExportItem.images must be uint8 (or uint16) numpy arrays; got {bad}")


def camera_json(camera) -> dict:
    """The JSON's camera dict from a camera (anything with focal, cx, cy, width, height, distance)."""
    return {"focal_px": camera.focal, "cx": camera.cx, "cy": camera.cy, "width": camera.width,
            "height": camera.height, "distance_mm": camera.distance}


def intrinsics_K(camera: dict) -> np.ndarray:
    """(3, 3) float64 pinhole matrix of a `camera_json` dict, pixels (centres at integers, y down):
    [[f, 0, cx], [0, f, cy], [0, 0, 1]] for OpenCV camera axes (`world_to_camera_cv`)."""
    f, cx, cy = float(camera["focal_px"]), float(camera["cx"]), float(camera["cy"])
    return np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])


def world_to_camera_cv(camera: dict) -> np.ndarray:
    """(4, 4) float64 rigid map from the posed/world frame (x right, y up, z towards the viewer, the
    camera at +z distance_mm) to OpenCV camera axes (x right, y down, z forward), mm:
    (x, y, z) -> (x, -y, distance - z). With `intrinsics_K` it projects like `PerspectiveCamera.project`."""
    d = float(camera["distance_mm"])
    return np.array([[1.0, 0, 0, 0], [0, -1.0, 0, 0], [0, 0, -1.0, d], [0, 0, 0, 1.0]])


def to_camera_cv(camera: dict, points: np.ndarray) -> np.ndarray:
    """(N, 3) posed/world points, mm -> (N, 3) OpenCV camera coordinates, mm (`world_to_camera_cv`)."""
    Rt = world_to_camera_cv(camera)
    return np.asarray(points, np.float64) @ Rt[:3, :3].T + Rt[:3, 3]


def project_cv(camera: dict, points: np.ndarray) -> np.ndarray:
    """(N, 3) posed/world points, mm -> (N, 2) pixels of the camera through K @ [R|t]."""
    uvw = to_camera_cv(camera, points) @ intrinsics_K(camera).T
    return uvw[:, :2] / uvw[:, 2:]


# -- the registry ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Exporter:
    """One output format: ``func(item, out_dir, stem) -> [paths written]``; `needs`: the
    `ExportItem.images` entries it reads (absent ones skip the format); `wants`: entries it uses
    when present (rendered when possible, never a reason to skip)."""

    name: str
    func: Callable[[ExportItem, Path, str], list[Path]]
    needs: tuple[str, ...] = ()
    description: str = ""
    wants: tuple[str, ...] = ()


#: name -> Exporter, in the order `export` writes them (built-ins first, in `ALL` order).
EXPORTERS: dict[str, Exporter] = {}


def register_exporter(name: str, func: Callable[[ExportItem, Path, str], list[Path]],
                      needs: Iterable[str] = (), description: str = "", overwrite: bool = False,
                      wants: Iterable[str] = ()) -> Exporter:
    """Add an output format. A new name is written after the existing ones; replacing one
    (``overwrite=True``) keeps its place. Raises FaceReconError for a taken name. `wants`: images
    used when present (see `Exporter`)."""
    if not isinstance(name, str) or not name:
        raise FaceReconError(f"an exporter name must be a non-empty string, got {name!r}")
    if name in EXPORTERS and not overwrite:
        raise FaceReconError(f"an exporter '{name}' is already registered (pass overwrite=True to replace it)")
    ex = Exporter(name, func, tuple(needs), description, tuple(wants))
    EXPORTERS[name] = ex
    return ex


def available_exporters() -> dict[str, str]:
    """{format name: description}, in writing order."""
    return {k: e.description for k, e in EXPORTERS.items()}


def exporter(name: str) -> Exporter:
    """The exporter of a format; FaceReconError listing the valid names for an unknown one."""
    try:
        return EXPORTERS[name]
    except (KeyError, TypeError):
        raise FaceReconError(f"unknown output format {name!r}; choose from {', '.join(EXPORTERS)}") from None


def _select(formats) -> list[Exporter]:
    """Validated exporters of `formats` (a name or names), in registry order, each once."""
    wanted = [formats] if isinstance(formats, str) else list(formats)
    bad = [f for f in wanted if f not in EXPORTERS]
    if bad:
        raise FaceReconError(f"unknown output format(s) {', '.join(map(repr, bad))}; "
                             f"choose from {', '.join(EXPORTERS)}")
    return [e for k, e in EXPORTERS.items() if k in wanted]


def images_needed(formats=ALL) -> set[str]:
    """The `ExportItem.images` names the given formats read, needed or wanted (render these, each once)."""
    return {n for e in _select(formats) for n in e.needs + e.wants}


def export(item: ExportItem, out_dir, stem: str, formats=ALL) -> list[Path]:
    """Write the selected formats (a name or names; all built-ins by default) of one face into
    `out_dir` (created), in registry order; returns the paths written.

    Unknown names raise FaceReconError (before anything is written). A format whose needed image
    is not in `item.images` is skipped, as is "textured" for an item without UVs.
    """
    chosen = _select(formats)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for e in chosen:
        if all(n in item.images for n in e.needs):
            written += [Path(p) for p in e.func(item, out, stem)]
    return written


# -- the built-in formats -----------------------------------------------------------------------

def write_png(path, image: np.ndarray) -> None:
    """(H, W, 3|4) uint8 or (H, W) uint8/uint16 -> PNG (PIL's default settings), atomically."""
    buf = _io.BytesIO()
    PILImage.fromarray(image).save(buf, format="PNG")
    write_bytes(path, buf.getvalue())


def deep3d_fields(item: ExportItem) -> dict:
    """The .mat/.npz fields (see the module doc), in Deep3D's order; needs images["recon_crop"].
    A None value (coeff, lm_5p) is left out of the files."""
    pose = np.array([item.pose_deg["yaw"], item.pose_deg["pitch"], item.pose_deg["roll"]], np.float32)
    return {
        "cropped_img": item.crop_image, "recon_img": item.images["recon_crop"],
        "coeff": None if item.coeff is None else np.asarray(item.coeff).astype(np.float32),
        "face_shape": np.asarray(item.vertices).astype(np.float32),
        "face_shape_posed": np.asarray(item.vertices_posed).astype(np.float32),
        "face_texture": (np.asarray(item.albedo) * 255.0).astype(np.float32),
        "face_color": (np.asarray(item.colors) * 255.0).astype(np.float32),
        "lm_68p": item.lm68_crop, "lm_5p": item.lm5_crop, "lm_68p_image": item.lm68_image,
        "pose_deg": pose, "trans_mm": np.asarray(item.translation_mm).astype(np.float32),
    }


def export_mat(item: ExportItem, out: Path, stem: str) -> list[Path]:
    path = out / f"{stem}.mat"
    write_mat(path, deep3d_fields(item))
    return [path]


def export_npz(item: ExportItem, out: Path, stem: str) -> list[Path]:
    path = out / f"{stem}.npz"
    write_npz(path, deep3d_fields(item))
    return [path]


def export_obj(item: ExportItem, out: Path, stem: str) -> list[Path]:
    path = out / f"{stem}.obj"
    write_obj(path, item.vertices, item.faces, colors=item.colors)
    return [path]


def export_textured(item: ExportItem, out: Path, stem: str) -> list[Path]:
    if len(item.uv) == 0:
        return []
    path = out / f"{stem}_textured.obj"
    write_obj(path, item.vertices, item.faces, uv=item.uv, uv_faces=item.uv_faces if len(item.uv_faces) else None,
              texture=item.images["texture"])
    return [out / f"{stem}_textured.{e}" for e in ("obj", "mtl", "png")]


def export_ply(item: ExportItem, out: Path, stem: str) -> list[Path]:
    path = out / f"{stem}.ply"
    write_ply(path, item.vertices, item.faces, colors=item.colors)
    return [path]


def export_json(item: ExportItem, out: Path, stem: str) -> list[Path]:
    info = {
        "source": item.source, "model": item.model, "pose_deg": item.pose_deg,
        "translation_mm": [float(x) for x in item.translation_mm],
        "camera": item.camera,
        "box": [float(x) for x in item.box], "detector": item.detector,
        "blendshapes": item.blendshapes, "times_s": {k: round(v, 4) for k, v in item.times.items()},
    }
    if item.notes:
        info["notes"] = item.notes
    if item.rotation is not None:
        info["rotation"] = {
            "matrix": [[float(x) for x in row] for row in np.asarray(item.rotation, np.float64)],
            "euler_deg": {k: float(item.pose_deg[k]) for k in ("pitch", "yaw", "roll")},
            "convention": POSE_CONVENTION,
        }
    info["schema_version"] = SCHEMA_VERSION
    info["intrinsics_K"] = intrinsics_K(item.camera).tolist()
    info["world_to_camera"] = world_to_camera_cv(item.camera).tolist()
    info["camera_convention"] = CAMERA_CONVENTION
    info["depth_png_unit_mm"] = DEPTH_UNIT_MM
    path = out / f"{stem}.json"
    write_text(path, json.dumps(info, indent=1))
    return [path]


def export_panel(item: ExportItem, out: Path, stem: str) -> list[Path]:
    im = item.images
    panel = np.concatenate([item.crop_image, im["recon_crop"][..., :3], im["geometry_crop"], im["landmarks_crop"],
                            im["geometry_side"]], axis=1)
    path = out / f"{stem}_panel.png"
    write_png(path, panel)
    return [path]


def export_overlay(item: ExportItem, out: Path, stem: str) -> list[Path]:
    path = out / f"{stem}_overlay.png"
    write_png(path, item.images["overlay"])
    return [path]


def glb_mesh(item: ExportItem):
    """The `trimesh.Trimesh` the GLB holds: model-space vertices (mm); with `images["texture"]` and a
    UV layout, one vertex per distinct (vertex, UV) corner pair (split at UV seams) and the texture;
    otherwise the shaded vertex colours."""
    import trimesh

    v = np.asarray(item.vertices, np.float64)
    f = np.asarray(item.faces, np.int64)
    tex = item.images.get("texture")
    if tex is not None and len(item.uv):
        uv = np.asarray(item.uv, np.float64)
        tf = np.asarray(item.uv_faces, np.int64) if len(item.uv_faces) else f
        pairs = np.stack([f.reshape(-1), tf.reshape(-1)], 1)
        uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
        visual = trimesh.visual.TextureVisuals(uv=uv[uniq[:, 1]], image=PILImage.fromarray(tex))
        return trimesh.Trimesh(v[uniq[:, 0]], inverse.reshape(-1, 3), visual=visual, process=False)
    c = np.clip(np.asarray(item.colors, np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    rgba = np.hstack([c, np.full((len(c), 1), 255, np.uint8)])
    return trimesh.Trimesh(v, f, vertex_colors=rgba, process=False)


def export_glb(item: ExportItem, out: Path, stem: str) -> list[Path]:
    path = out / f"{stem}.glb"
    write_bytes(path, glb_mesh(item).export(file_type="glb"))
    return [path]


def export_posed(item: ExportItem, out: Path, stem: str) -> list[Path]:
    path = out / f"{stem}_posed.obj"
    write_obj(path, item.vertices_posed, item.faces, colors=item.colors)
    return [path]


def export_neutral(item: ExportItem, out: Path, stem: str) -> list[Path]:
    if item.vertices_neutral is None:
        return []
    path = out / f"{stem}_neutral.obj"
    write_obj(path, item.vertices_neutral, item.faces, colors=item.colors)
    return [path]


def landmarks3d_json(item: ExportItem) -> dict | None:
    """The S_landmarks3d.json content (None without 3-D landmarks)."""
    if item.landmarks3d is None:
        return None
    rows = lambda a: [[float(x) for x in r] for r in np.asarray(a, np.float64)]
    info = {"schema_version": SCHEMA_VERSION, "source": item.source, "model": item.model,
            "model_mm": rows(item.landmarks3d)}
    if item.landmarks3d_posed is not None:
        info["posed_mm"] = rows(item.landmarks3d_posed)
        info["camera_cv_mm"] = rows(to_camera_cv(item.camera, item.landmarks3d_posed))
    info["crop_px"] = rows(item.lm68_crop)
    info["image_px"] = rows(item.lm68_image)
    info["convention"] = ("iBUG 68 points; model_mm: model space (x subject's left, y up, z out of the face); "
                          "posed_mm: the frame of S_posed.obj/face_shape_posed (x right, y up, z towards the "
                          "viewer); camera_cv_mm: world_to_camera of S.json applied (OpenCV: x right, y down, "
                          "z forward); crop_px / image_px: pixels of the crop / original photo (centres at "
                          "integers, y down)")
    return info


def _write_json(info: dict | None, path: Path) -> list[Path]:
    """Write `info` as JSON to `path` (nothing when None); the written paths."""
    if info is None:
        return []
    write_text(path, json.dumps(info, indent=1))
    return [path]


def export_landmarks3d(item: ExportItem, out: Path, stem: str) -> list[Path]:
    return _write_json(landmarks3d_json(item), out / f"{stem}_landmarks3d.json")


def _write_images(item: ExportItem, out: Path, stem: str, names: tuple[tuple[str, str], ...]) -> list[Path]:
    """S_<suffix>.png for each (image name, suffix) the caller rendered; the written paths."""
    paths = []
    for name, suffix in names:
        if name in item.images:
            path = out / f"{stem}_{suffix}.png"
            write_png(path, item.images[name])
            paths.append(path)
    return paths


def export_maps(item: ExportItem, out: Path, stem: str) -> list[Path]:
    return _write_images(item, out, stem, (("depth_crop", "depth"), ("normals_crop", "normals"), ("pncc_crop", "pncc")))


def export_head(item: ExportItem, out: Path, stem: str) -> list[Path]:
    if item.head_vertices is None:
        return []
    model, posed = out / f"{stem}_head.obj", out / f"{stem}_head_posed.obj"
    write_obj(model, item.head_vertices, item.head_faces, colors=item.head_colors)
    write_obj(posed, item.head_vertices_posed, item.head_faces, colors=item.head_colors)
    return [model, posed]


register_exporter("mat", export_mat, ("recon_crop",), "S.mat: Deep3D's fields (MATLAB v5)")
register_exporter("npz", export_npz, ("recon_crop",), "S.npz: the .mat's fields as a compressed .npz")
register_exporter("obj", export_obj, (), "S.obj: model-space mesh (mm) with shaded vertex colours")
register_exporter("textured", export_textured, ("texture",),
                  "S_textured.obj/.mtl/.png: mesh with the photo's UV texture (needs the photo and UVs)")
register_exporter("ply", export_ply, (), "S.ply: binary PLY with vertex colours")
register_exporter("json", export_json, (), "S.json: pose, translation, camera, blendshapes, timings")
register_exporter("panel", export_panel, ("recon_crop", "geometry_crop", "landmarks_crop", "geometry_side"),
                  "S_panel.png: crop | overlay | shaded geometry | landmarks | shaded geometry from the side")
register_exporter("overlay", export_overlay, ("overlay",),
                  "S_overlay.png: the reconstruction over the whole photo (needs the photo)")
register_exporter("glb", export_glb, (), "S.glb: binary glTF, model-space mesh (mm, upright like S.obj) with the "
                  "photo's UV texture when there is one, else shaded vertex colours", wants=("texture",))
register_exporter("posed", export_posed, (), "S_posed.obj: the mesh posed in the camera frame (mm, "
                  "face_shape_posed's vertices) with shaded vertex colours; S.obj stays model space")
register_exporter("neutral", export_neutral, (), "S_neutral.obj: same identity, neutral expression (expression "
                  "coefficients zero), model space (mm); only for methods with model parameters")
register_exporter("landmarks3d", export_landmarks3d, (), "S_landmarks3d.json: the 68 landmarks in 3-D (model "
                  "space and camera frame, mm) and 2-D (crop and original-image px)")
register_exporter("maps", export_maps, ("depth_crop", "normals_crop"), "S_depth.png (16-bit, 0.1 mm units), "
                  "S_normals.png, S_pncc.png: depth, camera-space normal and PNCC maps of the crop",
                  wants=("pncc_crop",))


register_exporter("head", export_head, (), "S_head.obj (model space, like S.obj) and S_head_posed.obj (camera frame, "
                  "like S_posed.obj): the model's full head (ICT: neck, mouth socket, eyes, teeth), mm")


# -- 3DDFA_V3's outputs (registered after the built-ins) -------------------------------------------

#: The part order of the seg files (bit k / label k + 1); models.annotations.PART_NAMES says the same.
SEG_PARTS = ("right_eye", "left_eye", "right_brow", "left_brow", "nose", "upper_lip", "lower_lip", "skin")


def export_seg(item: ExportItem, out: Path, stem: str) -> list[Path]:
    return _write_images(item, out, stem, (("seg_crop", "seg_crop"), ("seg_image", "seg")))


def export_seg_visible(item: ExportItem, out: Path, stem: str) -> list[Path]:
    return _write_images(item, out, stem, (("seg_visible_crop", "seg_visible_crop"), ("seg_visible_image", "seg_visible")))


#: What S_landmarks.json's sets are.
LANDMARK_CONVENTIONS = {
    "lm68": "iBUG/Multi-PIE 68 points in the BFM/3DDFA/AFLW2000-3D convention (index 0 on the subject's right)",
    "lm106": "JD 106-point layout (Grand Challenge of 106-Point Facial Landmark Localization) as 3DDFA_V3 uses it: "
             "0-32 jaw, 33-42 brows (upper), 43-46 nose bridge, 47-51 nose base, 52-63 eyes, 64-71 brows (lower), "
             "72-77 lid midpoints and eye centres, 78-83 nose sides, 84-103 lips, 104-105 pupils (docs/landmarks.md)",
    "lm106_2d": "lm106 with the jaw points 0-32 (but 16) re-picked per pose on the silhouette (3DDFA_V3's ldm106_2d)",
    "lm134": "facerecon's 134 (3DDFA_V3's set covers brows, eyes and lips only; its exact layout is unpublished): "
             "0-19 brows, 20-67 eyes, 68-101 outer lip, 102-133 inner lip (docs/landmarks.md)",
}


def landmarks_json(item: ExportItem) -> dict | None:
    """The S_landmarks.json content (None without landmark sets)."""
    if item.landmarks is None:
        return None
    rows = lambda a: [[float(x) for x in r] for r in np.asarray(a, np.float64)]
    info = {"schema_version": SCHEMA_VERSION, "source": item.source, "model": item.model,
            "frames": "crop_px / image_px: pixels of the crop / original photo (centres at integers, y down); "
                      "model_mm: model space; posed_mm: the frame of S_posed.obj"}
    for name, sets in item.landmarks.items():
        info[name] = {k: rows(v) for k, v in sets.items()}
        if name in LANDMARK_CONVENTIONS:
            info[name]["convention"] = LANDMARK_CONVENTIONS[name]
    return info


def export_landmarks(item: ExportItem, out: Path, stem: str) -> list[Path]:
    return _write_json(landmarks_json(item), out / f"{stem}_landmarks.json")


def export_extracted(item: ExportItem, out: Path, stem: str) -> list[Path]:
    if len(item.uv) == 0:
        return []
    path = out / f"{stem}_extracted.obj"
    write_obj(path, item.vertices, item.faces, uv=item.uv, uv_faces=item.uv_faces if len(item.uv_faces) else None,
              texture=item.images["texture_extracted"])
    paths = [out / f"{stem}_extracted.{e}" for e in ("obj", "mtl", "png")]
    if "texture_albedo" in item.images:
        write_png(out / f"{stem}_albedo.png", item.images["texture_albedo"])
        paths.append(out / f"{stem}_albedo.png")
    return paths


register_exporter("seg", export_seg, ("seg_crop",), "S_seg_crop.png, S_seg.png: the 8 part masks (bit k = part k; "
                  "each part drawn even where hidden), crop and original-photo pixels", wants=("seg_image",))
register_exporter("seg_visible", export_seg_visible, ("seg_visible_crop",), "S_seg_visible_crop.png, "
                  "S_seg_visible.png: visible part per pixel (0 background, k + 1 part k), crop and photo pixels",
                  wants=("seg_visible_image",))
register_exporter("landmarks", export_landmarks, (), "S_landmarks.json: 68, 106, 106_2d and 134 landmarks, crop "
                  "and original-image px (needs the model's annotations)")
register_exporter("extracted", export_extracted, ("texture_extracted",), "S_extracted.obj/.mtl/.png: mesh with a "
                  "texture from the photo, unseen parts filled (mirror, then albedo); S_albedo.png: the albedo-only "
                  "texture (needs the photo and UVs)", wants=("texture_albedo",))
