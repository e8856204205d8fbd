"""The face parser's figures (issue 17 D4; docs/parts.md): IoU per part and speed.

    # held-out synthesized views: the engine's 'val' split (photos never trained on), by |yaw| bin
    python benchmarks/parser.py val --data DS [DS...] [--weights W] [--occluders]
    # AFLW2000-3D dev: the network vs FaceMesh's contours and vs our fit's seg_visible, by |yaw| bin
    python benchmarks/parser.py dev --cache DIR [--limit N] [--weights W] [--prdl]   (--prdl: the fit guided by PRDL)
    # ms per face, batch 1, at 1 and 2 torch threads
    python benchmarks/parser.py speed [--weights W]
    # docs/images/parser.png
    python benchmarks/parser.py picture --cache DIR --out docs/images/parser.png

`dev` fits each dev photo once (method `fit`, landmark + dense stages: the engine's `--no-photometric`
fit) and caches its aligned crop and `seg_visible` in DIR, so a rerun only parses. IoU per part is
averaged over the photos where the part is in either map; the mean is over the 8 parts. The dev set
is touched for this measurement only, never for a choice.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
shared = Path(__file__).resolve().parents[2] / "shared"
if "FACERECON_ASSETS" not in os.environ and (shared / "assets").is_dir():
    os.environ["FACERECON_ASSETS"] = str(shared / "assets")

import torch

from facerecon.detect.parsing import N_CLASSES, FaceMeshParser, load_parser
from facerecon.models.annotations import PART_NAMES

BINS = (("[0,30]", 0.0, 30.0), ("(30,60]", 30.0, 60.0), (">60", 60.0, 1e9))


def iou_rows(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(N, H, W) label maps -> (N, 8) IoU per part (NaN where the part is in neither map)."""
    out = np.full((len(pred), N_CLASSES - 1), np.nan)
    for k in range(1, N_CLASSES):
        a, b = pred == k, truth == k
        u = (a | b).sum((1, 2))
        out[:, k - 1] = np.where(u > 0, (a & b).sum((1, 2)) / np.maximum(u, 1), np.nan)
    return out


def table(name: str, iou: np.ndarray, yaw: np.ndarray) -> list[str]:
    head = "| " + name + " | n | " + " | ".join(PART_NAMES) + " | mean of 8 |"
    lines = [head, "|" + "---|" * (len(PART_NAMES) + 3)]
    for label, lo, hi in BINS + (("all", -1.0, 1e9),):
        sel = (np.abs(yaw) > lo) & (np.abs(yaw) <= hi) if lo >= 0 else np.ones(len(yaw), bool)
        if lo == 0.0:
            sel |= np.abs(yaw) == 0
        if not sel.any():
            continue
        with np.errstate(all="ignore"):
            per = np.nanmean(iou[sel], 0)
        lines.append(f"| {label} | {int(sel.sum())} | " + " | ".join(f"{v:.3f}" for v in per)
                     + f" | **{np.nanmean(per):.3f}** |")
    return lines


def cmd_val(args) -> None:
    from PIL import Image

    from facerecon.dataset import load_sample, read_manifest
    from facerecon.detect.parsing import sample_label_map

    parser = load_parser(args.weights)
    torch.set_num_threads(args.threads)
    imgs, maps, yaws, photos = [], [], [], set()
    for root in map(Path, args.data):
        for row in read_manifest(root):
            if row.get("status") == "ok" and row.get("split") == "val" and (not args.views or row["view"] > 0):
                imgs.append(np.asarray(Image.open(root / row["image"]).convert("RGB")))
                maps.append(sample_label_map(load_sample(root / row["sample"])))
                yaws.append(float(row["yaw"]))
                photos.add(row["photo_id"])
    imgs, maps = np.stack(imgs), np.stack(maps)
    occluded = None
    if args.occluders:
        # One synthetic occluder per crop (detect.occluders, fixed seed): its pixels become label 0.
        # The same generator trained the parser that saw occluders: a check, not an independent test.
        from facerecon.detect.occluders import paste_occluders

        new_imgs, new_maps = paste_occluders(imgs, maps, np.random.default_rng(args.seed), p=1.0)
        occluded = (maps > 0) & (new_maps == 0)
        imgs, maps = new_imgs, new_maps
    pred = np.concatenate([parser.parse(imgs[i:i + 32]) for i in range(0, len(imgs), 32)])
    iou = iou_rows(pred, maps)
    print(f"{len(imgs)} held-out samples of {len(photos)} photos (engine 'val' split"
          f"{', synthesized views only' if args.views else ''}"
          f"{', one synthetic occluder each' if args.occluders else ''})")
    print("\n".join(table("network vs exact labels", iou, np.array(yaws))))
    if occluded is not None:
        called = (pred > 0) & occluded
        print(f"occluder pixels over the face labelled as a part: {called.sum() / max(occluded.sum(), 1):.3f} "
              f"({int(occluded.sum())} pixels); as skin: {((pred == N_CLASSES - 1) & occluded).sum() / max(occluded.sum(), 1):.3f}")


def _dev_list(root: Path) -> list[tuple[str, float]]:
    rows = (root / "protocol" / "subset.tsv").read_text().splitlines()[1:]
    return [(r.split("\t")[1], float(r.split("\t")[2])) for r in rows if r.strip()]


def _fit_dev(root: Path, cache: Path, limit: int | None, prdl: bool = False) -> None:
    from facerecon.api import FaceReconstructor
    from facerecon.errors import FaceReconError
    from facerecon.log import progress

    cache.mkdir(parents=True, exist_ok=True)
    todo = [(n, y) for n, y in _dev_list(root)[:limit] if not (cache / (Path(n).stem + ".npz")).is_file()]
    if not todo:
        return
    rec = FaceReconstructor(method="fit", prdl=prdl)
    for name, yaw in progress(todo, desc="fit dev"):
        out = cache / (Path(name).stem + ".npz")
        try:
            r = rec.reconstruct(root / "AFLW2000" / name, photometric=False)[0]
            np.savez_compressed(out, crop=r.crop.image, fit=r.part_masks("crop", visible=True), yaw=yaw, ok=True)
        except FaceReconError as e:
            np.savez_compressed(out, ok=False, error=str(e), yaw=yaw)


def _load_cache(cache: Path, names) -> tuple[list, np.ndarray, np.ndarray, np.ndarray, int]:
    crops, fits, yaws, keep, failed = [], [], [], [], 0
    for n, _ in names:
        z = np.load(cache / (Path(n).stem + ".npz"))
        if not bool(z["ok"]):
            failed += 1
            continue
        crops.append(z["crop"])
        fits.append(z["fit"])
        yaws.append(float(z["yaw"]))
        keep.append(n)
    return keep, np.stack(crops), np.stack(fits), np.array(yaws), failed


def cmd_dev(args) -> None:
    root = Path(args.root)
    cache = Path(args.cache)
    _fit_dev(root, cache, args.limit, getattr(args, "prdl", False))
    names = _dev_list(root)[:args.limit]
    keep, crops, fits, yaws, failed = _load_cache(cache, names)
    parser = load_parser(args.weights)
    torch.set_num_threads(args.threads)
    net = np.concatenate([parser.parse(crops[i:i + 32]) for i in range(0, len(crops), 32)])
    fm_parser = FaceMeshParser()
    fm = fm_parser.parse(crops)
    found = np.array([m.any() for m in fm])
    print(f"{len(keep)} dev photos fitted ({failed} without a face / fit); FaceMesh found a face on "
          f"{int(found.sum())} of their crops (the comparisons with FaceMesh use those)")
    print("\n".join(table("network vs FaceMesh contours", iou_rows(net[found], fm[found]), yaws[found])))
    print()
    print("\n".join(table("network vs fit seg_visible", iou_rows(net, fits), yaws)))
    print()
    print("\n".join(table("FaceMesh contours vs fit seg_visible", iou_rows(fm[found], fits[found]), yaws[found])))
    if args.json:
        Path(args.json).write_text(json.dumps({"names": keep, "yaw": yaws.tolist()}))


def cmd_speed(args) -> None:
    parser = load_parser(args.weights)
    crop = np.random.default_rng(0).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for _ in range(5):
            parser.parse(crop)
        ts = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            parser.parse(crop)
            ts.append(time.perf_counter() - t)
        print(f"threads {threads}: median {1e3 * np.median(ts):.1f} ms, p10 {1e3 * np.percentile(ts, 10):.1f} ms "
              f"per face (batch 1, {args.repeats} runs, 224² crop -> label map)")
    n = sum(p.numel() for p in parser.net.parameters())
    print(f"{n} parameters, input {parser.net.config.input_size}²")


PALETTE = np.array([[0, 0, 0], [230, 40, 40], [40, 200, 40], [255, 150, 0], [0, 140, 255], [230, 0, 230],
                    [255, 230, 0], [0, 230, 230], [150, 150, 150]], np.uint8)


def overlay(img: np.ndarray, lab: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    a = np.where(lab[..., None] > 0, alpha, 0.0)
    return (img * (1 - a) + PALETTE[lab] * a).astype(np.uint8)


def cmd_picture(args) -> None:
    from PIL import Image, ImageDraw

    root = Path(args.root)
    names = _dev_list(root)
    _, crops, fits, yaws, _ = _load_cache(Path(args.cache), names[:args.limit])
    order = np.argsort(np.abs(yaws))
    # Frontal -> profile: evenly spaced ranks of |yaw|.
    pick = order[np.linspace(0, len(order) - 1, args.n).round().astype(int)]
    parser = load_parser(args.weights)
    net = parser.parse(crops[pick])
    fm = FaceMeshParser().parse(crops[pick])
    rows = []
    for lab_row in (None, net, fm, fits[pick]):
        row = [crops[i] if lab_row is None else overlay(crops[i], lab_row[j]) for j, i in enumerate(pick)]
        rows.append(np.concatenate(row, 1))
    sheet = Image.fromarray(np.concatenate(rows, 0))
    d = ImageDraw.Draw(sheet)

    def label(xy, text):
        x, y = xy
        d.rectangle([x - 2, y - 1, x + 6 * len(text) + 2, y + 11], fill=(0, 0, 0))
        d.text((x, y), text, fill=(255, 255, 255))

    for j, i in enumerate(pick):
        label((224 * j + 4, 4), f"yaw {yaws[i]:+.0f}")
    for r, t in enumerate(("photo (AFLW2000-3D dev)", "network", "FaceMesh contours", "fit seg_visible")):
        label((4, 224 * r + 208), t)
    if args.size != 224:
        sheet = sheet.resize((sheet.width * args.size // 224, sheet.height * args.size // 224), Image.LANCZOS)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    # A 256-colour palette (octree: keeps the label colours exact) makes the committed PNG ~3x smaller.
    sheet.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(args.out, optimize=True)
    print(f"{args.out}: {sheet.size}, yaws {[round(float(yaws[i])) for i in pick]}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=None, help="parser weights (default: load_parser's search)")
    p.add_argument("--threads", type=int, default=1)
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("val")
    v.add_argument("--data", nargs="+", required=True)
    v.add_argument("--views", action="store_true", help="synthesized views only (view > 0)")
    v.add_argument("--occluders", action="store_true", help="paste one synthetic occluder on each crop")
    v.add_argument("--seed", type=int, default=0, help="the occluders' seed")
    for name in ("dev", "picture"):
        d = sub.add_parser(name)
        d.add_argument("--root", default=str(shared / "data" / "aflw2000-3d-dev"))
        d.add_argument("--cache", required=True, help="folder for the fitted crops")
        d.add_argument("--limit", type=int, default=None)
        d.add_argument("--prdl", action="store_true", help="fit with PRDL (--prdl) guided by this parser; "
                       "use a separate --cache")
        if name == "dev":
            d.add_argument("--json", default=None)
        else:
            d.add_argument("--out", default="docs/images/parser.png")
            d.add_argument("--n", type=int, default=6)
            d.add_argument("--size", type=int, default=160)
    s = sub.add_parser("speed")
    s.add_argument("--repeats", type=int, default=50)
    args = p.parse_args(argv)
    {"val": cmd_val, "dev": cmd_dev, "speed": cmd_speed, "picture": cmd_picture}[args.cmd](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
