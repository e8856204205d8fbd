"""Fine-tune RetinaFace-MobileNet0.25 (WIDER FACE weights) so that it finds profiles.

    python scripts/train_detector.py --out RUN --engine DS [DS...] [--images 3000] [--steps 1200]
        [--threads 2] [--resume]
    python scripts/train_detector.py --export RUN/last.pt weights/retinaface/retinaface_profiles.pth

Training images (`RUN/images.pkl`, made once, `detect.placement`): a face crop placed on a padded
canvas or beside another person's photo (UTKFace photos), half MERL-RAV *train* faces of aflw-lm68
(real photos; the faces `benchmarks/detection.py --split train --seed 11 --per-bin 100` draws for
tuning are left out), half data-engine views (`facerecon dataset build` folders, their 'train'
split; exact landmarks at every yaw). Labels:
- the placed face: the WIDER detector's own box when it finds the face at score >= 0.9 (so the box
  convention does not move), else the face's landmark box mapped to that convention by the median
  offsets of the found ones (per source and |yaw| bin); its 5 landmarks from the 68 when all are
  labelled (engine views), else no landmark loss;
- every other face the WIDER detector finds at >= 0.9 (the photo beside it), with its own landmarks:
  the fine-tuned net keeps what the original found.

Training: 480² inputs (the picture, longer side <= 480, at a random place on a mean-grey canvas,
mirrored with p 0.5), `nets.retinaface.multibox_loss`, batch norm frozen at the WIDER statistics,
Adam with cosine decay, batch 8. Checkpoints RUN/last.pt every 250 steps (model, optimiser, step,
RNG); --resume continues. Measured: weights/retinaface/MODEL_CARD.md, docs/detection.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

S = 480  # training input side
BATCH = 8


def _data_root() -> Path:
    return Path(os.environ.get("FACERECON_DATA", ROOT.parent / "shared" / "data"))


def make_images(n: int, engines: list[str], seed: int, log=print) -> dict:
    """n labelled training pictures (see the module docstring) as a dict of lists."""
    import detection as bench  # benchmarks/detection.py: the tuning faces to leave out
    from PIL import Image

    from facerecon.detect.placement import place_beside, place_on_padding, points_box
    from facerecon.detect.retinaface import RetinaFaceDetector
    from facerecon.eval.aflw2000 import yaw_bins
    from facerecon.eval.detection import iou, matches
    from facerecon.geometry.landmarks import lm5_from_lm68_corners

    data = _data_root()
    lab = np.load(data / "aflw-lm68" / "labels.npz")
    tune = {name for name, *_ in bench.merl_faces(data / "aflw-lm68", 100, 11, "train")}
    merl = [i for i in np.flatnonzero(lab["merl_split"] == "train") if str(lab["names"][i]) not in tune]
    views = []
    for root in engines:
        for line in (Path(root) / "manifest.jsonl").read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:  # a torn last line of a build in progress
                continue
            if r.get("status") == "ok" and r.get("split") == "train":
                views.append((Path(root), r))
    photos = sorted((data / "utkface" / "images").glob("*.jpg"))
    log(f"faces: {len(merl)} MERL-RAV train, {len(views)} engine views; {len(photos)} UTKFace photos beside")
    teacher = RetinaFaceDetector(weights="wider", score_threshold=0.5)
    rng = np.random.default_rng(seed)
    recs = []
    for k in range(n):
        if rng.random() < 0.5:
            i = int(rng.choice(merl))
            src, yaw = "merl", float(lab["yaw_deg"][i])
            crop = np.asarray(Image.open(data / "aflw-lm68" / "images" / f"{lab['names'][i]}.jpg").convert("RGB"))
            pts = lab["lm68"][i].astype(np.float32)
        else:
            root, r = views[int(rng.integers(len(views)))]
            src, yaw = "engine", float(r["yaw"])
            with np.load(root / r["sample"]) as z:
                pts = z["lm68"].astype(np.float32)
            crop = np.asarray(Image.open(root / r["image"]).convert("RGB"))
        if rng.random() < 0.5:
            img, pts = place_on_padding(crop, pts, rng)
        else:
            photo = np.asarray(Image.open(photos[int(rng.integers(len(photos)))]).convert("RGB"))
            img, pts = place_beside(crop, pts, photo, rng)
        g = points_box(pts).astype(np.float32)
        found = teacher.detect(img)
        # the benchmark's match rule for a box-only face: g's centre in the box, IoU(box, g) >= 0.3
        on_face = sorted((f for f in found if matches(f, pts)), key=lambda f: -f.score)
        box = np.asarray(on_face[0].box, np.float32) if on_face and on_face[0].score >= 0.9 else None
        others = [(np.asarray(f.box, np.float32), np.asarray(f.lm5, np.float32)) for f in found
                  if f.score >= 0.9 and all(f is not o for o in on_face) and iou(np.asarray(f.box, np.float64), g) < 0.1]
        full = bool(np.isfinite(pts).all())
        lm5 = lm5_from_lm68_corners(pts.astype(np.float64)).astype(np.float32) if full else np.zeros((5, 2), np.float32)
        recs.append({"src": src, "bin": int(yaw_bins(np.array([yaw]))[0]), "img": img, "g": g, "box": box,
                     "lm5": lm5, "lm_w": float(full), "others": others})
        if (k + 1) % 250 == 0:
            log(f"images {k + 1}/{n}")
    # the boxes the teacher missed: the landmark box in the teacher's convention (median offsets)
    rel: dict = {}
    for r in recs:
        if r["box"] is not None:
            g, b = r["g"], r["box"]
            w, h = g[2] - g[0], g[3] - g[1]
            rel.setdefault((r["src"], r["bin"]), []).append([(b[0] - g[0]) / w, (b[1] - g[1]) / h,
                                                             (b[2] - g[2]) / w, (b[3] - g[3]) / h])
    med = {k: np.median(np.array(v), 0) for k, v in rel.items()}
    mapped = 0
    for r in recs:
        if r["box"] is None:
            g, m = r["g"], med[(r["src"], r["bin"])]
            w, h = g[2] - g[0], g[3] - g[1]
            r["box"] = np.float32([g[0] + m[0] * w, g[1] + m[1] * h, g[2] + m[2] * w, g[3] + m[3] * h])
            mapped += 1
        _shrink(r)
    log(f"{mapped} of {n} placed faces missed by the WIDER detector (box from landmarks)")
    return {"recs": recs, "offsets": {f"{k[0]}/{k[1]}": v.tolist() for k, v in med.items()}}


def _shrink(r: dict) -> None:
    """Longer side <= S, labels moved alike (pixel centres)."""
    from PIL import Image

    h, w = r["img"].shape[:2]
    s = min(1.0, S / max(h, w))
    if s < 1.0:
        r["img"] = np.asarray(Image.fromarray(r["img"]).resize((max(1, round(w * s)), max(1, round(h * s))),
                                                              Image.BILINEAR))

        def f(a):
            return ((np.asarray(a, np.float32) + 0.5) * s - 0.5).astype(np.float32)

        r["box"], r["lm5"], r["g"] = f(r["box"]), f(r["lm5"]), f(r["g"])
        r["others"] = [(f(b), f(lm)) for b, lm in r["others"]]


def training_item(r: dict, rng) -> tuple:
    """A record -> (input (3, S, S) float32 BGR - mean, boxes (G, 4) and lm5 (G, 5, 2) normalised by
    S, lm_w (G,)): mirrored with p 0.5 (landmarks re-ordered: eyes and mouth corners swap), at a
    random place on a canvas of the mean colour (0 after the mean is taken off)."""
    from facerecon.nets.retinaface import MEAN_BGR

    img = r["img"]
    h, w = img.shape[:2]
    boxes = np.stack([r["box"]] + [b for b, _ in r["others"]]).astype(np.float32)
    lms = np.stack([r["lm5"]] + [lm for _, lm in r["others"]]).astype(np.float32)
    lm_w = np.float32([r["lm_w"]] + [1.0] * len(r["others"]))
    x = img[..., ::-1].astype(np.float32) - np.float32(MEAN_BGR)
    if rng.random() < 0.5:
        x = x[:, ::-1]
        boxes = np.stack([w - 1 - boxes[:, 2], boxes[:, 1], w - 1 - boxes[:, 0], boxes[:, 3]], 1)
        lms = lms[:, [1, 0, 2, 4, 3]].copy()
        lms[..., 0] = w - 1 - lms[..., 0]
    canvas = np.zeros((S, S, 3), np.float32)
    oy, ox = int(rng.integers(0, S - h + 1)), int(rng.integers(0, S - w + 1))
    canvas[oy:oy + h, ox:ox + w] = x
    boxes = (boxes + np.float32([ox, oy, ox, oy])) / S
    lms = (lms + np.float32([ox, oy])) / S
    return (torch.from_numpy(np.ascontiguousarray(canvas.transpose(2, 0, 1))), torch.from_numpy(boxes),
            torch.from_numpy(lms), torch.from_numpy(lm_w))


def train(out: Path, recs: list, steps: int, lr: float, resume: bool, log=print) -> Path:
    from facerecon.io.atomic import atomic_path
    from facerecon.nets import retinaface as rf

    torch.manual_seed(0)
    net = rf.load_retinaface(_wider())
    net.train()
    for m in net.modules():  # batch 8 is too small for batch statistics: keep WIDER's
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
            m.requires_grad_(False)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
    rng, step = np.random.default_rng(0), 0
    last = out / "last.pt"
    if resume and last.is_file():
        ck = torch.load(last, map_location="cpu", weights_only=False)
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        rng.bit_generator.state, step = ck["rng"], ck["step"]
        log(f"resumed at step {step}")
    priors = torch.from_numpy(rf.prior_boxes(S, S))
    t0 = time.perf_counter()
    while step < steps:
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        batch = [training_item(recs[int(i)], rng) for i in rng.integers(len(recs), size=BATCH)]
        loc, cls, lm = net(torch.stack([b[0] for b in batch]))
        targets = [(*rf.match_anchors(b[1], b[2], priors), b[3]) for b in batch]
        loss, parts = rf.multibox_loss(loc, cls, lm, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0 or step in (1, steps):
            log(f"step {step}/{steps} loss {float(loss):.3f} " + " ".join(f"{k} {v:.3f}" for k, v in parts.items())
                + f" {(time.perf_counter() - t0) / 50:.2f} s/step")
            t0 = time.perf_counter()
        if step % 250 == 0 or step == steps:
            with atomic_path(last) as tmp:
                torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "rng": rng.bit_generator.state,
                            "step": step}, tmp)
    return last


def _wider() -> Path:
    from facerecon.assets import path

    return path("retinaface", "mobilenet0.25_Final.pth")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="run folder (images.pkl, last.pt)")
    ap.add_argument("--engine", nargs="*", default=[], help="data-engine folders (their 'train' split)")
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--export", nargs=2, metavar=("CKPT", "FILE"), help="write CKPT's network as a plain state dict")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.export:
        from facerecon.io.atomic import atomic_path

        ck = torch.load(args.export[0], map_location="cpu", weights_only=False)
        with atomic_path(Path(args.export[1])) as tmp:
            torch.save(ck["model"], tmp)
        return 0
    if args.out is None or not args.engine:
        ap.error("--out and --engine are required for training")
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "images.pkl"
    if cache.is_file():
        with open(cache, "rb") as fh:
            made = pickle.load(fh)
    else:
        made = make_images(args.images, args.engine, args.seed)
        from facerecon.io.atomic import atomic_path

        with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
            pickle.dump(made, fh, protocol=4)
    (args.out / "offsets.json").write_text(json.dumps(made["offsets"], indent=1))
    train(args.out, made["recs"], args.steps, args.lr, args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
