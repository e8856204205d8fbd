"""The source photos of the face parser's training build (weights/parser/MODEL_CARD.md): a folder of
symlinks, interleaved so that any prefix of it (a build stopped for time) has the same mix.

Per block of 10: 6 aflw-lm68 crops of the MERL-RAV *train* split, 3 UTKFace photos, 1 LFW photo
(one per person, 20 in all; then aflw-lm68 instead). Within each source the order is
sha256("parser-mix|<name>"). The AFLW2000-3D dev / test images are not in aflw-lm68 (its README).

    python scripts/make_parser_sources.py --data /work/shared/data --out MIX [--n 1200]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
from pathlib import Path


def _h(s: str) -> str:
    return hashlib.sha256(("parser-mix|" + s).encode()).hexdigest()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the shared data folder (aflw-lm68, utkface, identity-sets)")
    p.add_argument("--out", required=True, help="folder to fill with symlinks")
    p.add_argument("--n", type=int, default=1200)
    a = p.parse_args(argv)
    D, out = Path(a.data), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(D / "aflw-lm68" / "manifest.csv") as f:
        aflw = sorted((r for r in csv.DictReader(f) if r["merl_split"] == "train"), key=lambda r: _h(r["name"]))
    utk = sorted(os.listdir(D / "utkface" / "images"), key=_h)
    lfw = []
    for person in sorted(os.listdir(D / "identity-sets" / "lfw")):
        d = D / "identity-sets" / "lfw" / person
        if d.is_dir():
            files = sorted((f for f in os.listdir(d) if f.endswith(".jpg")), key=_h)
            if files:
                lfw.append((person, files[0]))
    ia = iu = il = 0
    items = []
    for i in range(a.n):
        r = i % 10
        if r < 6 or (r == 9 and il >= len(lfw)):
            items.append((f"aflw_{aflw[ia]['name']}.jpg", D / "aflw-lm68" / aflw[ia]["file"]))
            ia += 1
        elif r < 9:
            items.append((f"utk_{utk[iu].replace('.jpg.chip.jpg', '.jpg')}", D / "utkface" / "images" / utk[iu]))
            iu += 1
        else:
            items.append((f"lfw_{lfw[il][0]}.jpg", D / "identity-sets" / "lfw" / lfw[il][0] / lfw[il][1]))
            il += 1
    for n, (name, src) in enumerate(items):
        link = out / f"{n:05d}_{name}"
        if not link.is_symlink():
            os.symlink(src, link)
    print(f"{out}: {len(items)} links ({ia} aflw-lm68, {iu} UTKFace, {il} LFW)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
