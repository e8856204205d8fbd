"""Contact sheet of the face-profiling engine: each source photo (rows) re-rendered by
`dataset.profile` at |yaw| 0, 30, 60, 90 degrees (columns; turned the way the photo faces), next to
the photo's aligned crop. A .png output is palette-quantised to stay small (docs/dataset_views.png).

    python benchmarks/dataset_sheet.py PHOTOS... -o docs/dataset_views.png [--size 112]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
shared = Path(__file__).resolve().parents[2] / "shared"
if "FACERECON_ASSETS" not in os.environ and (shared / "assets").is_dir():
    os.environ["FACERECON_ASSETS"] = str(shared / "assets")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("photos", nargs="+")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--size", type=int, default=112, help="tile size in the sheet (px)")
    ap.add_argument("--yaws", default="0,30,60,90")
    ap.add_argument("--landmarks", action="store_true", help="draw the stored 68 landmarks (visible green, hidden red)")
    args = ap.parse_args(argv)

    import torch
    from PIL import Image, ImageDraw

    from facerecon.dataset import BuildConfig
    from facerecon.dataset.build import Engine

    torch.set_num_threads(1)
    eng = Engine(BuildConfig())
    yaws = [float(y) for y in args.yaws.split(",")]
    T = args.size
    rows = []
    for path in args.photos:
        rec, src, _ = eng.fit(path)
        scene = eng.profiler.scene(src)
        side = 1.0 if src.rotation[1] >= 0 else -1.0
        tiles = [eng.profiler.source_view(src, rec.crop.image)]
        for y in yaws:
            rot = np.array([src.rotation[0], side * np.radians(y), src.rotation[2]])
            tiles.append(eng.profiler.render(src, scene, rot))
        ims = []
        for v in tiles:
            im = Image.fromarray(v.image)
            if args.landmarks:
                d = ImageDraw.Draw(im)
                for (x, yv), f in zip(v.lm68, v.vis68):
                    d.point((float(x), float(yv)), fill=(0, 255, 0) if f == 1 else (255, 0, 0))
            ims.append(im.resize((T, T), Image.LANCZOS))
        rows.append(ims)
    sheet = Image.new("RGB", (T * len(rows[0]), T * len(rows)), "white")
    for r, ims in enumerate(rows):
        for c, im in enumerate(ims):
            sheet.paste(im, (c * T, r * T))
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".png":
        sheet.quantize(colors=256, method=Image.MEDIANCUT, dither=Image.NONE).save(out, optimize=True)
    else:
        sheet.save(out, quality=88)
    print(f"{out}: {sheet.size[0]}x{sheet.size[1]}, {out.stat().st_size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
