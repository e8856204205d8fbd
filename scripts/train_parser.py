"""Train the face-part network (`nets.parser.PartNet`) on the data engine's views.

    python scripts/train_parser.py --data DS [DS...] --out RUN [--steps 4000] [--resume]
        [--val-data DS] [--init weights/parser/parser.pt] [--full-width 8] [--occluders 0.5]
    python scripts/train_parser.py --export RUN/last.pt weights/parser/parser.pt [--debias auto]

Labels: each sample's `seg_visible` map from its exact geometry (`detect.parsing.sample_label_map`),
cached as PNG in RUN/labels/. The manifest is re-read every `--refresh` steps, so training can start
while `facerecon dataset build` is still adding samples. Only the 'train' split is used; the 'val'
split's IoU is logged, and the checkpoint with the best val mean IoU is kept as RUN/best.pt
(`--val-data`: the folders whose val split is used; by default all). A photo that is in any
folder's val split — same source file, or for LFW the same person — is never trained on, from any
folder (engine builds made separately share photos).

`--init` warm-starts from a parser weights file (layers it lacks, e.g. the full-resolution level of
`--full-width`, start from their own initialisation). `--occluders P` pastes a synthetic occluder
(`detect.occluders`: a background patch, a skin-coloured hand, hair strands, glasses) on a crop with
probability P, its pixels labelled 0. `--class-balance A` weights the cross-entropy by
frequency^-A per class (0: plain CE). Weighted CE shifts the argmax towards the small parts (they
come out too large); `--export ... --debias D` subtracts D·log(weight) from the head's bias (a prior
correction), `--debias auto` picks D from 0, 0.25, ..., 1 by the mean IoU on the run's val split.

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
from facerecon.detect.occluders import paste_occluders
from facerecon.detect.parsing import N_CLASSES, flip_labels, sample_label_map, save_parser
from facerecon.nets.parser import PartNet, PartNetConfig

log = logging.getLogger("train_parser")


class Store:
    """The samples of some dataset folders, images and label maps in memory (224² uint8)."""

    def __init__(self, roots, label_dir: Path, split: str, holdout: set[str] | None = None, images: bool = True):
        self.roots = [Path(r) for r in roots]
        self.load_images = images
        self.label_dir = label_dir
        self.split = split
        self.holdout = holdout or set()
        self.skipped = 0
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
                if self.holdout and photo_keys(row) & self.holdout:
                    self.skipped += 1
                    continue
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
                if self.load_images:
                    self.images.append(np.asarray(Image.open(root / row["image"]).convert("RGB")))
                self.labels.append(lab)
                self.yaw.append(float(row["yaw"]))
                added += 1
                if limit is not None and added >= limit:
                    return added
        return added

    def __len__(self) -> int:
        return len(self.keys)


def photo_keys(row: dict) -> set[str]:
    """Identities of a manifest row's photo: its resolved source file, and for LFW the person."""
    src = os.path.realpath(row.get("source", ""))
    keys = {src}
    parts = Path(src).parts
    if "lfw" in parts:
        i = parts.index("lfw")
        if i + 2 < len(parts):
            keys.add("lfw-person:" + parts[i + 1])
    return keys


def holdout_keys(roots) -> set[str]:
    """`photo_keys` of every val-split row of the dataset folders."""
    out: set[str] = set()
    for root in roots:
        for row in read_manifest(Path(root)):
            if row.get("split") == "val":
                out |= photo_keys(row)
    return out


def class_weights(labels: list[np.ndarray], alpha: float) -> torch.Tensor:
    """(C,) cross-entropy weights frequency^-alpha, normalised to a pixel-weighted mean of 1."""
    counts = np.bincount(np.concatenate([lab[::4, ::4].ravel() for lab in labels]), minlength=N_CLASSES)
    f = np.maximum(counts / counts.sum(), 1e-4)
    w = f ** -alpha
    return torch.as_tensor(w / (w * f).sum(), dtype=torch.float32)


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


def loss_fn(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """(weighted) CE + soft Dice over the 8 parts; logits (B, C, h, w) are upsampled to the labels' size."""
    if logits.shape[-2:] != y.shape[-2:]:
        logits = F.interpolate(logits, size=y.shape[-2:], mode="bilinear", align_corners=False)
    ce = F.cross_entropy(logits, y, weight=weight)
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
    cfg = PartNetConfig(input_size=args.input_size, full_width=args.full_width)
    net = PartNet(cfg)
    if args.init and not (args.resume and (out / "last.pt").is_file()):
        init = torch.load(args.init, map_location="cpu", weights_only=True)
        old = PartNetConfig.from_dict(init["parser"])
        if (old.input_size, old.widths) != (cfg.input_size, cfg.widths):
            raise SystemExit(f"--init {args.init}: its network {old} does not match {cfg}")
        missing, unexpected = net.load_state_dict({k: v.float() for k, v in init["model"].items()}, strict=False)
        log.info("initialised from %s (new layers: %s)", args.init, sorted({k.split(".")[0] for k in missing}))
        if unexpected:
            raise SystemExit(f"--init {args.init}: unexpected keys {unexpected}")
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    step = 0
    best = -1.0
    ck_path = out / "last.pt"
    if args.resume and ck_path.is_file():
        ck = torch.load(ck_path, map_location="cpu", weights_only=False)
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step = ck["step"]
        best = ck.get("best", -1.0)
        gen.set_state(ck["gen"])
        rng.bit_generator.state = ck["rng"]
        log.info("resumed at step %d", step)
    holdout = holdout_keys(args.data)
    train_set = Store(args.data, out / "labels", "train", holdout)
    val_set = Store(args.val_data or args.data, out / "labels", "val")
    train_set.refresh()
    val_set.refresh(limit=args.val_limit)
    log.info("train samples %d (%d skipped: photos of a val split), val samples %d", len(train_set),
             train_set.skipped, len(val_set))
    weight = class_weights(train_set.labels, args.class_balance) if args.class_balance else None
    if weight is not None:
        log.info("class weights %s", np.round(weight.numpy(), 2))
    (out / "config.json").write_text(json.dumps({**vars(args), "net": cfg.to_dict()}, indent=1))
    t0 = time.time()
    last_ck = time.time()
    hist = []

    def save(path=ck_path):
        tmp = path.with_suffix(".tmp")
        torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "step": step, "gen": gen.get_state(),
                    "rng": rng.bit_generator.state, "net": cfg.to_dict(), "best": best}, tmp)
        os.replace(tmp, path)

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
        ims, labs = np.stack([train_set.images[i] for i in idx]), np.stack([train_set.labels[i] for i in idx])
        if args.occluders:
            ims, labs = paste_occluders(ims, labs, rng, p=args.occluders)
        x, y = augment(ims, labs, cfg.input_size, gen)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr)
        loss, parts = loss_fn(net(x), y, weight)
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
            mean = float(np.nanmean(np.nanmean(iou, 0)))
            log.info("step %d val IoU per part %s mean %.3f", step, np.round(np.nanmean(iou, 0), 3), mean)
            if mean > best:
                best = mean
                save(out / "best.pt")
                log.info("step %d: new best val mean IoU %.3f (best.pt)", step, mean)
        if time.time() - last_ck > 60 * args.ckpt_minutes:
            save()
            last_ck = time.time()
    save()
    log.info("done at step %d in %.1f min", step, (time.time() - t0) / 60)


def export(src, dst, debias: str | None = None) -> None:
    ck = torch.load(src, map_location="cpu", weights_only=False)
    net = PartNet(PartNetConfig.from_dict(ck["net"]))
    net.load_state_dict(ck["model"])
    meta = {"step": int(ck["step"]), "source": Path(src).name}
    if debias:
        run = Path(src).parent
        cfg = json.loads((run / "config.json").read_text())
        if not cfg.get("class_balance"):
            raise SystemExit(f"--debias: {run} was trained without --class-balance")
        train_labels = Store(cfg["data"], run / "labels", "train", holdout_keys(cfg["data"]), images=False)
        train_labels.refresh()
        logw = class_weights(train_labels.labels, cfg["class_balance"]).log()
        head = net.head0 if net.config.full_width else net.head
        bias0 = head.bias.detach().clone()
        if debias == "auto":
            val = Store(cfg.get("val_data") or cfg["data"], run / "labels", "val")
            val.refresh()
            scores = {}
            for d in (0.0, 0.25, 0.5, 0.75, 1.0):
                with torch.no_grad():
                    head.bias.copy_(bias0 - d * logw)
                iou = evaluate(net, val)
                scores[d] = float(np.nanmean(np.nanmean(iou, 0)))
                print(f"debias {d}: val mean IoU {scores[d]:.4f} ({len(val)} samples)")
            d = max(scores, key=scores.get)
        else:
            d = float(debias)
        with torch.no_grad():
            head.bias.copy_(bias0 - d * logw)
        meta["debias"] = d
        print(f"debias {d}: head bias -= {d} * log(class weights {np.round(logw.exp().numpy(), 2)})")
    net.eval()
    save_parser(net, dst, meta=meta, half=True)
    print(f"{dst}: step {ck['step']}, {Path(dst).stat().st_size} bytes")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", help="dataset folders (facerecon dataset build -o DIR)")
    p.add_argument("--out", help="run folder (checkpoints, label cache, log)")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--input-size", type=int, default=128)
    p.add_argument("--full-width", type=int, default=0, help="channels of a full-resolution level (0: none)")
    p.add_argument("--init", help="warm start from a parser weights file (save_parser)")
    p.add_argument("--val-data", nargs="+", help="folders whose val split is logged and selects best.pt (default: --data)")
    p.add_argument("--occluders", type=float, default=0.0, help="probability of a synthetic occluder per crop")
    p.add_argument("--class-balance", type=float, default=0.0, help="CE weights frequency^-A (0: plain CE)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--refresh", type=int, default=250, help="re-read the manifests every N steps")
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--val-limit", type=int, default=300, help="val samples kept for the logged IoU")
    p.add_argument("--ckpt-minutes", type=float, default=3.0)
    p.add_argument("--max-minutes", type=float, default=None, help="stop (and save) after this long")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--debias", default=None, help="with --export: D or 'auto' (see the module doc)")
    p.add_argument("--export", nargs=2, metavar=("CKPT", "WEIGHTS"), help="write a float16 weights file and exit")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    if args.export:
        export(*args.export, debias=args.debias)
        return 0
    if not args.data or not args.out:
        p.error("--data and --out are required for training")
    train(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
