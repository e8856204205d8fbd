"""The before/after picture of docs/parts.md: seg_visible, today's `textured` UV texture, the new
`extracted` one and the albedo-only texture, for one photo (default: scikit-image's astronaut,
public domain), reconstructed with the `fit` method.

    python scripts/picture_texture.py [--photo PATH] [--out docs/images/texture_before_after.jpg]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
if "FACERECON_ASSETS" not in os.environ and (ROOT.parent / "shared" / "assets").is_dir():
    os.environ["FACERECON_ASSETS"] = str(ROOT.parent / "shared" / "assets")

from facerecon.api import FaceReconstructor

PALETTE = np.array([(0, 0, 0), (0, 205, 0), (0, 138, 0), (139, 76, 57), (139, 54, 38), (154, 50, 205),
                    (255, 140, 60), (200, 40, 40), (238, 214, 175)], np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photo", default=None, help="a photo (default: scikit-image's astronaut)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "images" / "texture_before_after.jpg"))
    args = ap.parse_args()
    photo = args.photo
    if photo is None:
        from skimage import data

        photo = str(Path(tempfile.mkdtemp()) / "astronaut.png")
        Image.fromarray(data.astronaut()).save(photo)
    face = FaceReconstructor(method="fit").reconstruct(photo)[0]
    img = face.image
    lab = face.part_masks("image", visible=True)
    ov = np.where(lab[..., None] > 0, (0.45 * img + 0.55 * PALETTE[lab]).astype(np.uint8), img)
    x0, y0, x1, y1 = face.face.box.astype(int)
    m = int(0.25 * (x1 - x0))
    ov = ov[max(y0 - m, 0):y1 + m, max(x0 - m, 0):x1 + m]
    tex = face.extracted_texture(512)
    item = face.export_item(("textured",))
    tiles = []
    for im, label in ((ov, "seg_visible"), (item.images["texture"], "textured (before)"),
                      (tex["texture_extracted"], "extracted (after)"), (tex["texture_albedo"], "albedo only")):
        t = Image.fromarray(im).convert("RGB").resize((320, 320))
        d = ImageDraw.Draw(t)
        d.rectangle([0, 0, 150, 14], fill=(255, 255, 255))
        d.text((4, 2), label, fill=(0, 0, 0))
        tiles.append(np.asarray(t))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(tiles, 1)).save(out, quality=85)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
