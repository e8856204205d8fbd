"""Writing a `Reconstruction` to disk: Deep3D's .mat fields, .npz, meshes, images, JSON.

Per face, with stem S in the output folder:
  S.mat / S.npz   Deep3D's fields: cropped_img (224,224,3) uint8, recon_img (224,224,4) uint8 overlay
                  RGBA, coeff (1, dim) in the model's layout, face_shape (V,3) model space mm,
                  face_shape_posed (V,3) world mm, face_texture (V,3) albedo 0..255, face_color (V,3)
                  shaded 0..255, lm_68p (68,2) crop px, lm_5p (5,2) crop px, plus lm_68p_image (68,2)
                  original-image px, pose_deg (3,) yaw/pitch/roll, trans_mm (3,).
  S.obj           mesh (model space, mm) with shaded vertex colours
  S_textured.obj  + S_textured.mtl + S_textured.png: UV texture sampled from the photo (visible texels)
  S.ply           binary PLY with vertex colours
  S.json          pose (degrees), translation (mm), camera, ARKit blendshape weights (ICT), timings
  S_panel.png     input crop | overlay | shaded geometry | landmarks
  S_overlay.png   the reconstruction rendered over the whole original photo (RGBA composite)
Every file is written atomically.
"""

from __future__ import annotations

import io as _io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage
from PIL import ImageDraw

from .api import Reconstruction
from .io.arrays import write_mat, write_npz
from .io.atomic import write_bytes, write_text
from .io.mesh import write_obj, write_ply
from .models import MorphableModel
from .render import MeshRenderer, extract_uv_texture
from .render.shading import sh_shade

ALL = ("mat", "npz", "obj", "textured", "ply", "json", "panel", "overlay")


def _u8(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.clip(np.asarray(x) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _png(path: Path, arr: np.ndarray) -> None:
    buf = _io.BytesIO()
    PILImage.fromarray(arr).save(buf, format="PNG")
    write_bytes(path, buf.getvalue())


def render_views(rec: Reconstruction, model: MorphableModel) -> dict:
    """Crop-frame images: overlay RGBA (Deep3D's recon_img) and grey shaded geometry, float [0, 1]."""
    g, p = rec.geometry, rec.params
    renderer = MeshRenderer(rec.camera_crop, model.faces, outputs=("overlay",), antialias=True)
    crop = torch.tensor(rec.crop.image, dtype=g.vertices_world.dtype) / 255.0
    with torch.no_grad():
        ov = renderer(g.vertices_world, g.albedo, p.light, background=crop[None]).overlay[0]
        grey = torch.full_like(g.albedo, 0.75)
        light = torch.zeros_like(p.light)
        for c in range(3):  # soft frontal key light, same for every face: shows geometry only
            light[:, c * 9 + 2] = 0.35
            light[:, c * 9 + 1] = 0.1
        geo = renderer(g.vertices_world, grey, light, background=torch.ones_like(crop)[None]).overlay[0]
    return {"overlay": ov.clamp(0, 1), "geometry": geo[..., :3].clamp(0, 1)}


def _landmark_image(crop: np.ndarray, fitted: np.ndarray, detected: np.ndarray | None) -> np.ndarray:
    im = PILImage.fromarray(crop).convert("RGB")
    d = ImageDraw.Draw(im)
    for pts, col in ((detected, (255, 200, 0)), (fitted, (0, 255, 80))):
        if pts is None:
            continue
        for x, y in pts:
            d.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=col)
    return np.asarray(im)


def write_reconstruction(rec: Reconstruction, model: MorphableModel, out_dir, stem: str,
                         what: tuple[str, ...] = ALL, image: np.ndarray | None = None,
                         texture_size: int = 512) -> list[Path]:
    """Write the selected outputs (`ALL` by default) for one face; returns the paths written.

    image: the original photo (H, W, 3) uint8, needed for 'textured' and 'overlay'."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    g, p = rec.geometry, rec.params
    with torch.no_grad():
        color = sh_shade(g.albedo, g.normals, p.light)[0].clamp(0, 1)
    verts = g.vertices[0]
    views = render_views(rec, model) if {"mat", "npz", "panel"} & set(what) else None

    if {"mat", "npz"} & set(what):
        pose = np.array([rec.pose_deg["yaw"], rec.pose_deg["pitch"], rec.pose_deg["roll"]], np.float32)
        fields = {
            "cropped_img": rec.crop.image, "recon_img": _u8(views["overlay"]),
            "coeff": model.layout.join(p).detach().cpu().numpy().astype(np.float32),
            "face_shape": verts.cpu().numpy().astype(np.float32),
            "face_shape_posed": g.vertices_world[0].cpu().numpy().astype(np.float32),
            "face_texture": (g.albedo[0] * 255.0).cpu().numpy().astype(np.float32),
            "face_color": (color * 255.0).cpu().numpy().astype(np.float32),
            "lm_68p": rec.lm68_crop, "lm_5p": rec.crop.lm5, "lm_68p_image": rec.lm68,
            "pose_deg": pose, "trans_mm": p.translation[0].cpu().numpy().astype(np.float32),
        }
        if "mat" in what:
            write_mat(out / f"{stem}.mat", fields)
            written.append(out / f"{stem}.mat")
        if "npz" in what:
            write_npz(out / f"{stem}.npz", fields)
            written.append(out / f"{stem}.npz")
    if "obj" in what:
        write_obj(out / f"{stem}.obj", verts, model.faces, colors=color)
        written.append(out / f"{stem}.obj")
    if "ply" in what:
        write_ply(out / f"{stem}.ply", verts, model.faces, colors=color)
        written.append(out / f"{stem}.ply")
    if "textured" in what and image is not None and model.uv.shape[0] > 0:
        with torch.no_grad():
            tex, vis = extract_uv_texture(g.vertices_world, model.faces, model.uv, rec.camera,
                                          torch.tensor(image), texture_size, uv_faces=model.uv_faces)
            # Texels the photo does not show take the fitted albedo's mean colour, not black.
            fill = g.albedo[0].mean(0)
            tex = torch.where(vis[..., None], tex, fill.to(tex))[0]
        write_obj(out / f"{stem}_textured.obj", verts, model.faces, uv=model.uv, uv_faces=model.uv_faces,
                  texture=_u8(tex))
        written += [out / f"{stem}_textured.{e}" for e in ("obj", "mtl", "png")]
    if "json" in what:
        info = {
            "source": rec.source, "model": rec.model_name, "pose_deg": rec.pose_deg,
            "translation_mm": [float(x) for x in p.translation[0]],
            "camera": {"focal_px": rec.camera.focal, "cx": rec.camera.cx, "cy": rec.camera.cy,
                       "width": rec.camera.width, "height": rec.camera.height, "distance_mm": rec.camera.distance},
            "box": [float(x) for x in rec.face.box], "detector": rec.face.source,
            "blendshapes": rec.blendshapes, "times_s": {k: round(v, 4) for k, v in rec.times.items()},
        }
        write_text(out / f"{stem}.json", json.dumps(info, indent=1))
        written.append(out / f"{stem}.json")
    if "panel" in what:
        crop = rec.crop.image
        det = rec.crop.lm68
        panel = np.concatenate([crop, _u8(views["overlay"][..., :3]), _u8(views["geometry"]),
                                _landmark_image(crop, rec.lm68_crop, det)], axis=1)
        _png(out / f"{stem}_panel.png", panel)
        written.append(out / f"{stem}_panel.png")
    if "overlay" in what and image is not None:
        H, W = image.shape[:2]
        cam = rec.camera
        scale = min(1.0, 1024.0 / max(H, W))  # bound render cost on big photos
        if scale < 1.0:
            cam = cam.scaled(scale)
            image = np.asarray(PILImage.fromarray(image).resize((cam.width, cam.height), PILImage.BILINEAR))
        renderer = MeshRenderer(cam, model.faces, outputs=("overlay",), antialias=True)
        with torch.no_grad():
            bg = torch.tensor(image, dtype=g.vertices_world.dtype) / 255.0
            ov = renderer(g.vertices_world, g.albedo, p.light, background=bg[None]).overlay[0]
        _png(out / f"{stem}_overlay.png", _u8(ov[..., :3].clamp(0, 1)))
        written.append(out / f"{stem}_overlay.png")
    return written
