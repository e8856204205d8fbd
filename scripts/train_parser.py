"""Train the face-part network (`nets.parser.PartNet`) on the data engine's views.

    python scripts/train_parser.py --data DS [DS...] --out RUN [--steps 4000] [--resume]
    python scripts/train_parser.py --export RUN/last.pt weights/parser/parser.pt

Labels: each sample's `seg_visible` map from its exact geometry (`detect.parsing.sample_label_map`),
cached as PNG in RUN/labels/. The manifest is re-read every `--refresh` steps, so training can start
while `facerecon dataset build` is still adding samples. Only the 'train' split is used; the 'val'
split's IoU is logged (never used to pick a checkpoint: the last one is exported).

Augmentation (batched, on the 224² crop): random similarity transform (scale, rotation, shift) and
mirror with the right/left label swap, sampled straight to the network's input size; colour
(brightness, contrast, saturation, per-channel gain, gamma, grey), Gaussian blur, pixel noise.
Loss: cross-entropy + soft Dice over the eight parts (small parts — eyes, brows — count as much as
the skin). AdamW, linear warm-up then cosine. Checkpoints RUN/last.pt every `--ckpt-minutes`
(model, optimiser, step, RNG), resumable with --resume.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from facerecon.dataset import load_sample, read_manifest
from facerecon.detect.parsing import N_CLASSES, flip_labels, sample_label_map, save_parser
from facerecon.nets.parser import PartNet, PartNetConfig

log = logging.getLogger("train_parser")


class Store:
    """The samples of some dataset folders, images and label maps in memory (224² uint8)."""

    def __init__(self, roots, label_dir: Path, split: str):
        self.roots = [Path(r) for r in roots]
        self.label_dir = label_dir
        self.split = split
        self.keys: list[str] = []
        self.images: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.yaw: list[float] = []
        self._seen: set[str] = set()

    def refresh(self, limit: int | None = None) -> int:
        added = 0
        for root in self.roots:
            for row in read_manifest(root):
                if row.get("status") != "ok" or row.get("split") != self.split:
                    continue
                key = f"{root.name}/{row['sample']}"
                if key in self._seen:
                    continue
                self._seen.add(key)
                png = self.label_dir / (key.replace("/", "__") + ".png")
                if png.is_file():
                    lab = np.asarray(Image.open(png))
                else:
                    lab = sample_label_map(load_sample(root / row["sample"]))
                    png.parent.mkdir(parents=True, exist_ok=True)
                    tmp = png.with_suffix(".tmp.png")
                    Image.fromarray(lab).save(tmp)
                    os.replace(tmp, png)
                self.keys.append(key)
                self.images.append(np.asarray(Image.open(root / row["image"]).convert("RGB")))
                self.labels.append(lab)
                self.yaw.append(float(row["yaw"]))
                added += 1
                if limit is not None and added >= limit:
                    return added
        return added

    def __len__(self) -> int:
        return len(self.keys)


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur (B, 3, H, W), sigma (B,) px (0: unchanged)."""
    r = 3
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t[None] / sigma.clamp_min(1e-3)[:, None]) ** 2)
    k = k / k.sum(1, keepdim=True)                                      # (B, 7)
    B, C, H, W = x.shape
    y = x.reshape(1, B * C, H, W)
    kk = k.repeat_interleave(C, 0)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="replicate"), kk[:, None, None, :], groups=B * C)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), kk[:, None, :, None], groups=B * C)
    return y.reshape(B, C, H, W)


def augment(images: np.ndarray, labels: np.ndarray, size: int, gen: torch.Generator, strong: bool = True):
    """(B, 224, 224, 3) uint8 + (B, 224, 224) uint8 -> (B, 3, size, size) float [0, 1] and
    (B, size, size) int64 labels, both warped by the same random similarity (+ mirror)."""
    B = len(images)
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float() / 255.0
    y = torch.as_tensor(labels)
    if not strong:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        y = F.interpolate(y[:, None].float(), size=(size, size), mode="nearest")[:, 0].long()
        return x, y

    def u(lo, hi):
        return lo + (hi - lo) * torch.rand(B, generator=gen)

    flip = torch.rand(B, generator=gen) < 0.5
    y = torch.where(flip[:, None, None], flip_labels(y), y)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    s = u(0.88, 1.12)
    a = u(-0.2, 0.2)  # radians, ~11°
    tx, ty = u(-0.07, 0.07), u(-0.07, 0.07)  # normalised units: ±8 px of 224
    # affine_grid maps output normalised coords to input ones: inverse scale.
    c, sn = torch.cos(a) / s, torch.sin(a) / s
    theta = torch.stack([torch.stack([c, -sn, tx], 1), torch.stack([sn, c, ty], 1)], 1)
    grid = F.affine_grid(theta, (B, 3, size, size), align_corners=False)
    # Antialias the downscale first (224 -> size), then warp.
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    y = F.grid_sample(y[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0].long()
    # Colour.
    grey = x.mean(1, keepdim=True)
    sat = u(0.5, 1.4)[:, None, None, None]
    x = grey + (x - grey) * sat
    isgrey = (torch.rand(B, generator=gen) < 0.1)[:, None, None, None]
    x = torch.where(isgrey, x.mean(1, keepdim=True).expand_as(x), x)
    m = x.mean((1, 2, 3), keepdim=True)
    x = m + (x - m) * u(0.6, 1.4)[:, None, None, None]
    x = x * u(0.6, 1.4)[:, None, None, None] * (1 + 0.12 * (torch.rand(B, 3, 1, 1, generator=gen) - 0.5) * 2)
    x = x.clamp(0, 1) ** u(0.7, 1.4)[:, None, None, None]
    sigma = torch.where(torch.rand(B, generator=gen) < 0.4, u(0.3, 1.6), torch.zeros(B))
    x = _blur(x, sigma)
    x = x + torch.randn(x.shape, generator=gen) * u(0.0, 0.04)[:, None, None, None]
    return x.clamp(0, 1), y


def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """CE + soft Dice over the 8 parts; logits (B, C, h, w) are upsampled to the labels' size."""
    logits = F.interpolate(logits, size=y.shape[-2:], mode="bilinear", align_corners=False)
    ce = F.cross_entropy(logits, y)
    p = logits.softmax(1)[:, 1:]
    t = F.one_hot(y, N_CLASSES).permute(0, 3, 1, 2)[:, 1:].float()
    inter = (p * t).sum((0, 2, 3))
    dice = 1 - (2 * inter + 1) / (p.sum((0, 2, 3)) + t.sum((0, 2, 3)) + 1)
    d = dice.mean()
    return ce + d, {"ce": float(ce.detach()), "dice": float(d.detach())}


def iou_table(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(N, H, W) label maps -> (N, 8) IoU per part (NaN where the part is in neither)."""
    out = np.full((len(pred), N_CLASSES - 1), np.nan)
    for k in range(1, N_CLASSES):
        a, b = pred == k, truth == k
        inter = (a & b).sum((1, 2))
        union = (a | b).sum((1, 2))
        out[:, k - 1] = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    return out


@torch.no_grad()
def evaluate(net: PartNet, store: Store, batch: int = 32) -> np.ndarray:
    from facerecon.detect.parsing import FaceParser

    parser = FaceParser(net)
    preds = [parser.parse(np.stack(store.images[i:i + batch])) for i in range(0, len(store), batch)]
    net.train()
    return iou_table(np.concatenate(preds), np.stack(store.labels))


def lr_at(step: int, total: int, base: float, warmup: int = 100) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def train(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = PartNetConfig(input_size=args.input_size)
    net = PartNet(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    step = 0
    ck_path = out / "last.pt"
    if args.resume and ck_path.is_file():
        ck = torch.load(ck_path, map_location="cpu", weights_only=False)
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step = ck["step"]
        gen.set_state(ck["gen"])
        rng.bit_generator.state = ck["rng"]
        log.info("resumed at step %d", step)
    train_set = Store(args.data, out / "labels", "train")
    val_set = Store(args.data, out / "labels", "val")
    train_set.refresh()
    val_set.refresh(limit=args.val_limit)
    log.info("train samples %d, val samples %d", len(train_set), len(val_set))
    (out / "config.json").write_text(json.dumps({**vars(args), "net": cfg.to_dict()}, indent=1))
    t0 = time.time()
    last_ck = time.time()
    hist = []

    def save():
        tmp = ck_path.with_suffix(".tmp")
        torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "step": step, "gen": gen.get_state(),
                    "rng": rng.bit_generator.state, "net": cfg.to_dict()}, tmp)
        os.replace(tmp, ck_path)

    net.train()
    while step < args.steps:
        if args.max_minutes and time.time() - t0 > 60 * args.max_minutes:
            log.info("time budget reached at step %d", step)
            break
        if step % args.refresh == 0 and step:
            n = train_set.refresh()
            if len(val_set) < args.val_limit:
                val_set.refresh(limit=args.val_limit - len(val_set))
            if n:
                log.info("step %d: +%d train samples (%d)", step, n, len(train_set))
        idx = rng.integers(0, len(train_set), args.batch)
        x, y = augment(np.stack([train_set.images[i] for i in idx]), np.stack([train_set.labels[i] for i in idx]),
                       cfg.input_size, gen)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr)
        loss, parts = loss_fn(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        hist.append(float(loss.detach()))
        if step % 50 == 0:
            log.info("step %d loss %.4f (ce %.4f dice %.4f) lr %.2e %.2f s/step", step, np.mean(hist[-50:]),
                     parts["ce"], parts["dice"], opt.param_groups[0]["lr"], (time.time() - t0) / max(1, len(hist)))
        if step % args.val_every == 0 and len(val_set):
            iou = evaluate(net, val_set)
            log.info("step %d val IoU per part %s mean %.3f", step, np.round(np.nanmean(iou, 0), 3),
                     np.nanmean(np.nanmean(iou, 0)))
        if time.time() - last_ck > 60 * args.ckpt_minutes:
            save()
            last_ck = time.time()
    save()
    log.info("done at step %d in %.1f min", step, (time.time() - t0) / 60)


def export(src, dst) -> None:
    ck = torch.load(src, map_location="cpu", weights_only=False)
    net = PartNet(PartNetConfig.from_dict(ck["net"]))
    net.load_state_dict(ck["model"])
    save_parser(net, dst, meta={"step": int(ck["step"]), "source": Path(src).name}, half=True)
    print(f"{dst}: step {ck['step']}, {Path(dst).stat().st_size} bytes")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", help="dataset folders (facerecon dataset build -o DIR)")
    p.add_argument("--out", help="run folder (checkpoints, label cache, log)")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--input-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--refresh", type=int, default=250, help="re-read the manifests every N steps")
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--val-limit", type=int, default=300, help="val samples kept for the logged IoU")
    p.add_argument("--ckpt-minutes", type=float, default=3.0)
    p.add_argument("--max-minutes", type=float, default=None, help="stop (and save) after this long")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--export", nargs=2, metavar=("CKPT", "WEIGHTS"), help="write a float16 weights file and exit")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    if args.export:
        export(*args.export)
        return 0
    if not args.data or not args.out:
        p.error("--data and --out are required for training")
    train(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
