"""The images the exporters write (`facerecon.io.export`), rendered from one posed face.

Every function takes torch tensors of ONE face — vertices (1, V, 3) or (V, 3), any float dtype,
any device — and returns uint8 numpy images (H, W, C), channels-last, row 0 at the top, values
rounded as ``clip(x·255 + 0.5, 0, 255)``. Nothing here needs gradients (all run under no_grad).

Image names (the keys of `ExportItem.images`; `io.export.images_needed(formats)` says which a
set of formats needs, `render_images` renders exactly those, each once):

  recon_crop     (S, S, 4) Deep3D's ``recon_img``: the shaded face over the crop, RGB + coverage A
  geometry_crop  (S, S, 3) the shape alone: grey albedo 0.75 under `shading.key_light`, on white
  geometry_side  (S, S, 3) the same seen from the side: the posed mesh turned 90° about the vertical
                 axis through its centroid (the nose towards image right)
  landmarks_crop (S, S, 3) the crop with the detector's 68 points (amber) and the fitted ones (green)
  overlay        (h, w, 3) the shaded face over the whole original photo (photos larger than
                 `max_side` are rendered downscaled to it)
  texture        (T, T, 3) the photo unwrapped onto the model's UV layout; texels the photo does
                 not show take the albedo's mean colour
  depth_crop     (S, S) uint16 depth along the crop camera's axis in units of `DEPTH_UNIT_MM` (0.1 mm),
                 0 on background (no antialiasing)
  normals_crop   (S, S, 3) camera-space unit normals (x right, y up, z towards the viewer) as
                 (n + 1)/2, black on background
  pncc_crop      (S, S, 3) 3DDFA's PNCC (`pncc_code` of a reference shape, the model's mean face),
                 black on background
  seg_crop, seg_image            (S, S) / (H, W) uint8: the 8 part masks (3DDFA_V3's ``seg``, each part
                 drawn even where hidden), bit k set where part k is (`render.parts.pack_masks`);
                 crop / original-photo pixels (full size, never downscaled)
  seg_visible_crop, seg_visible_image  (S, S) / (H, W) uint8: the visible part per pixel (V3's
                 ``seg_visible``): 0 background, k + 1 for part k
  texture_extracted (T, T, 3) V3's ``extractTex``: the photo's texture with grazing samples faded,
                 occluders rejected, unseen texels filled from the mirrored side, then the albedo
                 (`texture.extract_filled_uv_texture`)
  texture_albedo (T, T, 3) the model's albedo alone on the UV layout (unlit)

S is the crop size (the crop camera's), T the texture size.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image as PILImage
from PIL import ImageDraw

from facerecon.geometry.camera import PerspectiveCamera
from facerecon.render.parts import pack_masks, part_label_map, part_masks
from facerecon.render.renderer import MeshRenderer, pncc_code
from facerecon.render.shading import ambient_light, key_light, sh_shade
from facerecon.render.texture import extract_filled_uv_texture, extract_uv_texture

#: Every image name `render_images` knows, in the order it renders them.
VIEW_NAMES = ("recon_crop", "geometry_crop", "geometry_side", "landmarks_crop", "overlay", "texture", "depth_crop",
              "normals_crop", "pncc_crop", "seg_crop", "seg_image", "seg_visible_crop", "seg_visible_image",
              "texture_extracted", "texture_albedo")
#: The images made from a part-labelled mesh (`part_images`).
PART_VIEWS = ("seg_crop", "seg_image", "seg_visible_crop", "seg_visible_image")

#: depth_crop's unit: depth_mm = value × DEPTH_UNIT_MM (io.export.DEPTH_UNIT_MM says the same).
DEPTH_UNIT_MM = 0.1


def to_u8(x) -> np.ndarray:
    """Tensor or array with values in [0, 1] -> uint8 (clip(x·255 + 0.5)), same shape, on the CPU."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.clip(np.asarray(x) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _batch(t: torch.Tensor) -> torch.Tensor:
    return t.unsqueeze(0) if t.dim() == 2 else t


def _tensor(x, dtype=None) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x), dtype=dtype)


def _light(light: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """(1, 27) light; None (a method without a lighting estimate) -> zeros: the ambient term only."""
    if light is None:
        return ambient_light(like.shape[0], like.dtype, like.device)
    return light.unsqueeze(0) if light.dim() == 1 else light


def shaded_colors(albedo: torch.Tensor, normals: torch.Tensor, light: torch.Tensor | None) -> np.ndarray:
    """Per-vertex shaded colour, Deep3D's ``face_color`` / 255: ``sh_shade(albedo, normals, light)``
    clamped to [0, 1].

    Args:
        albedo, normals: (1, V, 3) or (V, 3) (normals: unit, posed/world axes).
        light: (1, 27) SH coefficients, or None for zeros (the shader's ambient term only).

    Returns:
        (V, 3) numpy in the inputs' float dtype (float32 for a float32 model).
    """
    a, n = _batch(albedo), _batch(normals)
    with torch.no_grad():
        c = sh_shade(a, n, _light(light, a))[0].clamp(0, 1)
    return c.detach().cpu().numpy()


def _crop_views(vertices_world, albedo, light, faces, camera_crop, crop_image, names) -> dict[str, np.ndarray]:
    v = _batch(vertices_world)
    a = _batch(albedo)
    lit = _light(light, v)
    renderer = MeshRenderer(camera_crop, _tensor(faces), outputs=("overlay",), antialias=True)
    crop = torch.tensor(np.asarray(crop_image), dtype=v.dtype) / 255.0
    out = {}
    with torch.no_grad():
        if "recon_crop" in names:
            ov = renderer(v, a, lit, background=crop[None]).overlay[0]
            out["recon_crop"] = to_u8(ov.clamp(0, 1))
        if "geometry_crop" in names:
            out["geometry_crop"] = _grey_geometry(renderer, v, camera_crop)
        if "geometry_side" in names:
            out["geometry_side"] = side_view(v, faces, camera_crop, renderer)
    return out


def _grey_geometry(renderer: MeshRenderer, v: torch.Tensor, camera: PerspectiveCamera) -> np.ndarray:
    """(1, V, 3) posed vertices rendered grey (albedo 0.75) under the soft frontal `key_light` on
    white: the geometry alone, the same for every face. Returns (H, W, 3) uint8."""
    key = key_light(v.shape[0], v.dtype, v.device)
    white = torch.ones(v.shape[0], camera.height, camera.width, 3, dtype=v.dtype, device=v.device)
    with torch.no_grad():
        geo = renderer(v, torch.full_like(v, 0.75), key, background=white).overlay[0]
    return to_u8(geo[..., :3].clamp(0, 1))


def side_view(vertices_world: torch.Tensor, faces: torch.Tensor, camera: PerspectiveCamera,
              renderer: MeshRenderer | None = None) -> np.ndarray:
    """The grey shaded geometry (as "geometry_crop") of the posed mesh turned +90° about the vertical
    (y) axis through its centroid: the face looks towards image right. Returns (H, W, 3) uint8."""
    v = _batch(vertices_world)
    c = v.mean(dim=1, keepdim=True)
    # +90° about y: (x, y, z) -> (z, y, -x) around the centroid.
    d = v - c
    turned = torch.stack([d[..., 2], d[..., 1], -d[..., 0]], -1) + c
    if renderer is None:
        renderer = MeshRenderer(camera, _tensor(faces), outputs=("overlay",), antialias=True)
    return _grey_geometry(renderer, turned, camera)


def crop_maps(vertices_world: torch.Tensor, faces: torch.Tensor, camera_crop: PerspectiveCamera,
              reference: torch.Tensor | None = None, names=("depth_crop", "normals_crop", "pncc_crop")
              ) -> dict[str, np.ndarray]:
    """Depth, normal and PNCC maps of the crop (no antialiasing).

    Args:
        vertices_world: (1, V, 3) or (V, 3) posed vertices, mm.
        faces: (F, 3) int64; camera_crop: the crop's camera.
        reference: (V, 3) the shape whose `pncc_code` colours the PNCC map (the model's mean face);
            None: no "pncc_crop".
        names: which of the three to make.

    Returns:
        {"depth_crop": (S, S) uint16 depth / DEPTH_UNIT_MM rounded (0 background), "normals_crop":
        (S, S, 3) uint8 (n + 1)/2 (0 background), "pncc_crop": (S, S, 3) uint8 (0 background)}.
    """
    v = _batch(vertices_world)
    want = [n for n in names if n != "pncc_crop" or reference is not None]
    outputs = tuple({"depth_crop": "depth", "normals_crop": "normals", "pncc_crop": "pncc"}[n] for n in want)
    if not outputs:
        return {}
    renderer = MeshRenderer(camera_crop, _tensor(faces), outputs=outputs + ("mask",))
    code = None if reference is None else pncc_code(_tensor(reference).to(v))
    with torch.no_grad():
        r = renderer(v, pncc=code)
    m = r.mask[0].cpu().numpy() > 0.5
    out = {}
    if "depth_crop" in want:
        d = r.depth[0].detach().cpu().double().numpy()
        out["depth_crop"] = np.where(m, np.clip(np.round(d / DEPTH_UNIT_MM), 1, 65535), 0).astype(np.uint16)
    if "normals_crop" in want:
        n = to_u8((r.normals[0] + 1) / 2)
        out["normals_crop"] = np.where(m[..., None], n, 0).astype(np.uint8)
    if "pncc_crop" in want:
        out["pncc_crop"] = np.where(m[..., None], to_u8(r.pncc[0].clamp(0, 1)), 0).astype(np.uint8)
    return out


def crop_views(vertices_world: torch.Tensor, albedo: torch.Tensor, light: torch.Tensor | None,
               faces: torch.Tensor, camera_crop: PerspectiveCamera, crop_image: np.ndarray) -> dict[str, np.ndarray]:
    """The two crop-frame renders (antialiased), as the panel and the .mat/.npz hold them.

    Args:
        vertices_world: (1, V, 3) or (V, 3) posed vertices, mm (FaceGeometry.vertices_world).
        albedo: (1, V, 3) or (V, 3) in [0, 1].
        light: (1, 27) SH coefficients, or None (a method without a lighting estimate): zeros,
            i.e. the shader's ambient term only. The geometry view ignores it (`key_light`).
        faces: (F, 3) int64.
        camera_crop: the camera of the crop (S × S).
        crop_image: (S, S, 3) uint8, the background of the overlay.

    Returns:
        {"recon_crop": (S, S, 4) uint8 RGBA (Deep3D's recon_img: the shaded face composited over
        the crop, A = coverage), "geometry_crop": (S, S, 3) uint8 (grey albedo 0.75 under the
        soft frontal `key_light`, on white)}.
    """
    return _crop_views(vertices_world, albedo, light, faces, camera_crop, crop_image,
                       ("recon_crop", "geometry_crop"))


def photo_overlay(vertices_world: torch.Tensor, albedo: torch.Tensor, light: torch.Tensor | None,
                  faces: torch.Tensor, camera_photo: PerspectiveCamera, photo: np.ndarray,
                  max_side: int | None = 1024, renderer: MeshRenderer | None = None) -> np.ndarray:
    """The shaded face rendered (antialiased) over the whole original photo.

    Args:
        vertices_world, albedo, light, faces: as `crop_views`.
        camera_photo: the camera of the original photo (`api.camera_for_original`).
        photo: (H, W, 3) uint8.
        max_side: photos with a longer side are resized (bilinear) so that it is `max_side`, and
            rendered with the camera scaled alike (bounds the render cost); None: never.
        renderer: a `MeshRenderer` of `faces` with the "overlay" output to reuse (a video's frames:
            building one costs more than a small frame's render); its camera is replaced per call.

    Returns:
        (h, w, 3) uint8: (H, W) or the downscaled size.
    """
    v = _batch(vertices_world)
    photo = np.asarray(photo)
    H, W = photo.shape[:2]
    cam = camera_photo
    scale = 1.0 if max_side is None else min(1.0, float(max_side) / max(H, W))
    if scale < 1.0:
        cam = cam.scaled(scale)
        photo = np.asarray(PILImage.fromarray(photo).resize((cam.width, cam.height), PILImage.BILINEAR))
    renderer = renderer or MeshRenderer(cam, _tensor(faces), outputs=("overlay",), antialias=True)
    with torch.no_grad():
        bg = torch.tensor(photo, dtype=v.dtype) / 255.0
        ov = renderer(v, _batch(albedo), _light(light, v), background=bg[None], camera=cam,
                      outputs=("overlay",)).overlay[0]
    return to_u8(ov[..., :3].clamp(0, 1))


def uv_texture(vertices_world: torch.Tensor, faces: torch.Tensor, uv: torch.Tensor, uv_faces: torch.Tensor | None,
               camera_photo: PerspectiveCamera, photo: np.ndarray, albedo: torch.Tensor,
               size: int = 512) -> np.ndarray:
    """The photo unwrapped onto the UV layout (`extract_uv_texture`); texels the photo does not show
    (hidden, facing away, or outside the layout) take the albedo's mean colour instead of black.

    Args:
        vertices_world: (1, V, 3) or (V, 3) posed vertices, mm.
        faces: (F, 3) int64; uv: (T, 2) in [0, 1], v up; uv_faces: (F, 3) into `uv` (None: `faces`).
        camera_photo: the camera of `photo`; photo: (H, W, 3) uint8 (full size, not downscaled).
        albedo: (1, V, 3) or (V, 3) in [0, 1].
        size: the texture is size × size.

    Returns:
        (size, size, 3) uint8, row 0 at v = 1.
    """
    v = _batch(vertices_world)
    uvt = _tensor(uv)
    uvf = None if uv_faces is None else _tensor(uv_faces)
    with torch.no_grad():
        tex, vis = extract_uv_texture(v, _tensor(faces), uvt, camera_photo, torch.tensor(np.asarray(photo)),
                                      size, uv_faces=uvf)
        fill = _batch(albedo)[0].mean(0)
        tex = torch.where(vis[..., None], tex, fill.to(tex))[0]
    return to_u8(tex)


def part_images(names, vertices_world: torch.Tensor, faces, labels, camera_crop: PerspectiveCamera,
                camera_photo: PerspectiveCamera | None = None) -> dict[str, np.ndarray]:
    """The part masks and label maps (`PART_VIEWS`) of a part-labelled mesh, no antialiasing.

    Args:
        names: which of PART_VIEWS to make ("*_image" ones need `camera_photo`).
        vertices_world: (V', 3) or (1, V', 3) posed vertices of the labelled mesh (mm), e.g. the
            model's plus the eye caps' (`models.annotations.FaceAnnotations.cap_vertices`).
        faces: (F', 3) int64; labels: (F',) int64 part per triangle (8 and above: never drawn).
        camera_crop, camera_photo: the crop's and the original photo's cameras.

    Returns:
        {name: (h, w) uint8}, see the module doc.
    """
    out = {}
    for suffix, cam in (("crop", camera_crop), ("image", camera_photo)):
        if cam is None:
            continue
        if f"seg_{suffix}" in names:
            out[f"seg_{suffix}"] = pack_masks(part_masks(vertices_world, faces, labels, cam))
        if f"seg_visible_{suffix}" in names:
            out[f"seg_visible_{suffix}"] = part_label_map(vertices_world, faces, labels, cam)
    return out


def extracted_texture(vertices_world: torch.Tensor, faces: torch.Tensor, uv: torch.Tensor,
                      uv_faces: torch.Tensor | None, camera_photo: PerspectiveCamera, photo: np.ndarray,
                      albedo: torch.Tensor, mirror: torch.Tensor | None = None, size: int = 512,
                      skin_mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """V3's ``extractTex`` beside the albedo-only texture (`texture.extract_filled_uv_texture`).

    Args: as `uv_texture`, plus mirror: (V,) int64 mirror-image vertex of each vertex, or None;
        skin_mask: (H, W) skin probability in photo pixels from a face parser, or None.

    Returns:
        {"texture_extracted": (T, T, 3) uint8, "texture_albedo": (T, T, 3) uint8}.
    """
    with torch.no_grad():
        r = extract_filled_uv_texture(_batch(vertices_world)[0], _tensor(faces), _tensor(uv), camera_photo,
                                      torch.tensor(np.asarray(photo)), _batch(albedo)[0],
                                      None if mirror is None else _tensor(mirror), size,
                                      uv_faces=None if uv_faces is None else _tensor(uv_faces), skin_mask=skin_mask)
    return {"texture_extracted": to_u8(r["texture"]), "texture_albedo": to_u8(r["albedo"])}


def landmark_image(crop_image: np.ndarray, fitted: np.ndarray, detected: np.ndarray | None = None) -> np.ndarray:
    """The crop with landmarks drawn as 3-px dots: `detected` (68, 2) amber (when given), then
    `fitted` (68, 2) green on top; both in crop pixels. Returns (S, S, 3) uint8."""
    im = PILImage.fromarray(np.asarray(crop_image)).convert("RGB")
    d = ImageDraw.Draw(im)
    for pts, col in ((detected, (255, 200, 0)), (fitted, (0, 255, 80))):
        if pts is None:
            continue
        for x, y in np.asarray(pts):
            d.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=col)
    return np.asarray(im)


def render_images(names, *, vertices_world: torch.Tensor, albedo: torch.Tensor, light: torch.Tensor | None,
                  faces: torch.Tensor, camera_crop: PerspectiveCamera, crop_image: np.ndarray,
                  lm68_crop: np.ndarray | None = None, lm68_detected_crop: np.ndarray | None = None,
                  camera_photo: PerspectiveCamera | None = None, photo: np.ndarray | None = None,
                  uv: torch.Tensor | None = None, uv_faces: torch.Tensor | None = None,
                  texture_size: int = 512, max_side: int | None = 1024,
                  pncc_reference: torch.Tensor | None = None, parts: tuple | None = None,
                  mirror: torch.Tensor | None = None, skin_mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Render each of the named images once (see the module doc for names, shapes and dtypes).

    Images that cannot be made are left out, and the exporters that need them are then skipped:
    "overlay" and "texture" without a photo (or its camera), "texture" for a model without UVs
    (`uv` None or empty), "landmarks_crop" without `lm68_crop`, "pncc_crop" without
    `pncc_reference`. Names this module does not know
    (images a custom exporter needs) are ignored: the caller supplies those.

    Args:
        names: the image names wanted, e.g. `io.export.images_needed(formats)`.
        vertices_world, albedo, light, faces, camera_crop, crop_image: as `crop_views`.
        lm68_crop: (68, 2) fitted landmarks in crop px; lm68_detected_crop: the detector's, or None.
        camera_photo, photo: the original photo (H, W, 3) uint8 and its camera.
        uv, uv_faces: the model's UV layout (T, 2) and (F, 3).
        texture_size, max_side: as `uv_texture`'s size and `photo_overlay`'s max_side.
        pncc_reference: (V, 3) the shape the PNCC code is made of (the model's mean face), or None.
        parts: (vertices_world', faces', labels) of the part-labelled mesh (`part_images`), or None:
            no part images.
        mirror, skin_mask: as `extracted_texture`.

    Returns:
        {name: uint8 image}.
    """
    want = set(names)
    out = {}
    if want & {"recon_crop", "geometry_crop", "geometry_side"}:
        out.update(_crop_views(vertices_world, albedo, light, faces, camera_crop, crop_image, want))
    if "landmarks_crop" in want and lm68_crop is not None:
        out["landmarks_crop"] = landmark_image(crop_image, lm68_crop, lm68_detected_crop)
    has_photo = photo is not None and camera_photo is not None
    if "overlay" in want and has_photo:
        out["overlay"] = photo_overlay(vertices_world, albedo, light, faces, camera_photo, photo, max_side)
    if "texture" in want and has_photo and uv is not None and len(uv) > 0:
        out["texture"] = uv_texture(vertices_world, faces, uv, uv_faces, camera_photo, photo, albedo, texture_size)
    if want & set(PART_VIEWS) and parts is not None:
        out.update(part_images(want, parts[0], parts[1], parts[2], camera_crop, camera_photo))
    if want & {"texture_extracted", "texture_albedo"} and has_photo and uv is not None and len(uv) > 0:
        tex = extracted_texture(vertices_world, faces, uv, uv_faces, camera_photo, photo, albedo, mirror,
                                texture_size, skin_mask)
        out.update({k: v for k, v in tex.items() if k in want})
    maps = [n for n in ("depth_crop", "normals_crop", "pncc_crop") if n in want]
    if maps:
        out.update(crop_maps(vertices_world, faces, camera_crop, pncc_reference, maps))
    return out
