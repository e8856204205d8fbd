"""Draw the ICT part annotation and the 68 / 106 / 134 landmarks on the mean face (docs/images/ict_parts.png).

Three views of the labelled mean face (front, 35° and 70° yaw; `seg_visible` colouring: eye
green, brows brown, nose purple, lips orange/red, skin beige, other grey), then the mean face with
the 106 points (red: jaw contour) and the 134 points.

    python scripts/picture_ict_parts.py [--out docs/images/ict_parts.png]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
if "FACERECON_ASSETS" not in os.environ and (ROOT.parent / "shared" / "assets").is_dir():
    os.environ["FACERECON_ASSETS"] = str(ROOT.parent / "shared" / "assets")

from facerecon.geometry.camera import PerspectiveCamera
from facerecon.geometry.rotations import euler_to_matrix
from facerecon.models import load_model
from facerecon.models.annotations import annotations_for
from facerecon.render.parts import part_label_map

#: Background, then the eight parts in PART_NAMES order (V3's demo palette, roughly).
COLOURS = np.array([(255, 255, 255), (0, 205, 0), (0, 138, 0), (139, 76, 57), (139, 54, 38), (154, 50, 205),
                    (255, 140, 60), (200, 40, 40), (238, 214, 175)], np.uint8)


def render(model, ann, yaw_deg: float, size: int = 320):
    cam = PerspectiveCamera.from_fov(14.0, size, size, distance=1000.0)
    faces, labels = ann.part_mesh(model.faces.numpy())
    R = euler_to_matrix(torch.tensor([0.0, math.radians(yaw_deg), 0.0], dtype=torch.float64))
    v = model.mean_shape.double()
    v = ann.cap_vertices(v) @ R.T + torch.tensor([0.0, -10.0, 0.0], dtype=torch.float64)
    lab = part_label_map(v, faces, labels, cam)
    img = COLOURS[lab]
    # grey where the mesh is but no part is (OTHER, back faces)
    from facerecon.render.rasterize import rasterize
    cov = rasterize(cam.project(v), torch.as_tensor(faces), (size, size)).mask[0].numpy()
    img[(lab == 0) & cov] = (170, 170, 170)
    return img, cam, R


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "docs" / "images" / "ict_parts.png"))
    args = ap.parse_args()
    model = load_model("ict")
    ann = annotations_for(model)
    tiles = [render(model, ann, y)[0] for y in (0.0, 35.0, 70.0)]
    for name, lmset, size in (("106", ann.lm106, 320), ("134", ann.lm134, 320)):
        img, cam, R = render(model, ann, 0.0, size)
        im = Image.fromarray((img * 0.5 + 127).astype(np.uint8))
        d = ImageDraw.Draw(im)
        pts = cam.project(lmset(model.mean_shape.double()) @ R.T + torch.tensor([0.0, -10.0, 0.0],
                                                                               dtype=torch.float64))
        for j, (x, y, _) in enumerate(pts.numpy()):
            col = (220, 0, 0) if (name == "106" and j < 33) else (0, 60, 220)
            d.ellipse([x - 1.6, y - 1.6, x + 1.6, y + 1.6], fill=col)
        d.text((6, 4), f"{name} points", fill=(0, 0, 0))
        tiles.append(np.asarray(im))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(tiles, 1)).save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
