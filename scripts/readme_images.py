"""Render the README's pictures from a `facerecon demo` output folder with our own renderer.

    facerecon demo -o out/demo
    python scripts/readme_images.py out/demo docs/img

Writes (each a PNG under 300 KB):
  panel.png    the demo's astronaut_panel.png (crop | overlay | geometry | landmarks | side view)
  texture.png  the UV texture sampled from the photo (astronaut_textured.png, downscaled to 384²)
  glb.png      astronaut.glb as a viewer shows it: loaded back with trimesh, its texture sampled at the
               vertices' UVs, rendered from three angles
  head.png     the astronaut's full ICT head (astronaut_head.obj, the `head` format), grey: front,
               three-quarter, profile
"""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import numpy as np
import torch
import trimesh
from PIL import Image

from facerecon.geometry.camera import PerspectiveCamera
from facerecon.render.renderer import MeshRenderer
from facerecon.render.shading import key_light

MAX_BYTES = 300_000


def turn(v: np.ndarray, yaw_deg: float) -> np.ndarray:
    """Vertices centred on their bounding box and turned about the vertical axis (yaw > 0: the face
    turns to image left, showing its right cheek)."""
    v = v - (v.min(0) + v.max(0)) / 2
    a = math.radians(yaw_deg)
    R = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    return v @ R.T


def render(v: np.ndarray, faces: np.ndarray, colors: np.ndarray, size: int, extent_mm: float) -> np.ndarray:
    """(size, size, 3) uint8: the mesh (model space, mm, centred) on white under the soft key light,
    with a camera whose field of view spans `extent_mm` at the origin."""
    dist = 1500.0
    cam = PerspectiveCamera(focal=size / 2 * dist / (extent_mm / 2), cx=(size - 1) / 2, cy=(size - 1) / 2,
                            width=size, height=size, distance=dist)
    r = MeshRenderer(cam, torch.as_tensor(faces, dtype=torch.long), outputs=("overlay",), antialias=True)
    vt = torch.as_tensor(v, dtype=torch.float32)[None]
    white = torch.ones(1, size, size, 3)
    with torch.no_grad():
        out = r(vt, torch.as_tensor(colors, dtype=torch.float32)[None], key_light(1),
                background=white).overlay[0]
    return (out[..., :3].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)


def save_small(img: Image.Image, path: Path) -> None:
    """PNG, reducing to a 256-colour palette if the full-colour file would exceed MAX_BYTES."""
    for candidate in (img, img.quantize(256, dither=Image.Dither.FLOYDSTEINBERG)):
        buf = io.BytesIO()
        candidate.save(buf, format="PNG", optimize=True)
        if buf.tell() < MAX_BYTES:
            path.write_bytes(buf.getvalue())
            return
    raise SystemExit(f"{path}: cannot get under {MAX_BYTES} bytes")


def glb_views(glb: Path, size: int = 320) -> np.ndarray:
    m = trimesh.load(glb, force="mesh", process=False)
    tex = np.asarray(m.visual.material.baseColorTexture.convert("RGB"), np.float32) / 255
    uv = np.asarray(m.visual.uv)
    h, w = tex.shape[:2]
    # glTF UVs have v down from the top of the image; trimesh hands back v up (OBJ convention).
    px = np.clip(np.round(uv[:, 0] * (w - 1)).astype(int), 0, w - 1)
    py = np.clip(np.round((1 - uv[:, 1]) * (h - 1)).astype(int), 0, h - 1)
    colors = tex[py, px]
    # Texels the photo did not see are black in the texture: show them as neutral skin grey.
    unseen = colors.max(1) < 0.02
    colors[unseen] = 0.6
    return np.concatenate([render(turn(m.vertices, a), m.faces, colors, size, 250) for a in (-35, 0, 35)], 1)


def head_views(obj: Path, size: int = 320) -> np.ndarray:
    m = trimesh.load(obj, process=False)
    grey = np.full((len(m.vertices), 3), 0.7)
    return np.concatenate([render(turn(m.vertices, a), m.faces, grey, size, 340) for a in (0, 40, 90)], 1)


def main(demo: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save_small(Image.open(demo / "astronaut_panel.png").convert("RGB"), out / "panel.png")
    save_small(Image.open(demo / "astronaut_textured.png").convert("RGB").resize((384, 384), Image.LANCZOS),
               out / "texture.png")
    save_small(Image.fromarray(glb_views(demo / "astronaut.glb")), out / "glb.png")
    save_small(Image.fromarray(head_views(demo / "astronaut_head.obj")), out / "head.png")
    for p in sorted(out.glob("*.png")):
        print(f"{p}: {p.stat().st_size} bytes, {Image.open(p).size}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
