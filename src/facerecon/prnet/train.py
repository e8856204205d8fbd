"""Training PRNet's position-map regressor on data-engine folders (`facerecon train --head prnet`).

Loss: PRNet's weighted MSE, Σ w (p̂ − p)² / Σ w over texels and x, y, z, on the normalised maps
(`model.normalise_map`), w = `uv.model_weight_mask` (16 : 4 : 3 : 0). Optimiser: Adam (PRNet: lr 1e-4,
batch 16) with exponential decay, lr · 0.5^(epoch / `lr_half_epochs`) per step (PRNet halves it every
5 epochs). The network starts from the training set's mean map (`PositionNet.set_prior`). Checkpoints OUT/last.pt every `ckpt_minutes` and at the end (`resume` continues from it),
OUT/best.pt by validation vertex error; OUT/metrics.jsonl has a line per `log_every` steps and one
per validation (every `val_every` steps and at the end, also when `max_minutes` stops the run).

Validation (engine "val" split, `val_samples` spread over it): the maps are decoded like the method
does (`model.decode_maps`), then
  - dense: mean distance (mm) over the face's vertices (all parts but neck / ears / back, ICT's
    annotation) after a similarity alignment (Umeyama) of the read-back mesh onto the ground truth;
  - nme68: the 68 read-back landmarks (crop px) against the sample's, mean distance over
    sqrt(w · h) of the ground-truth landmarks' box, in %.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import FaceReconError
from ..geometry.rotations import fit_similarity
from ..io.atomic import atomic_path
from .data import Augment, EngineMaps
from .model import NORM_SCALE, PositionNet, decode_maps, denormalise_map, normalise_map, save_weights
from .uv import model_weight_mask, uv_layout

log = logging.getLogger(__name__)


@dataclass
class PrnetTrainConfig:
    engine: list = field(default_factory=list)  # data-engine folders
    out: str = "runs/prnet"
    encoder: str = "mobilenetv2"
    width: float = 1.0  # decoder channel multiplier
    head: int = 3  # channels of the decoder's two last hidden layers (PRNet: 3)
    size: int = 128  # input and map resolution (256 = the paper's)
    model: str = "ict"
    steps: int = 3000
    batch: int = 16
    lr: float = 1e-4
    lr_half_epochs: float = 5.0
    augment: bool = True
    workers: int = 0
    ckpt_minutes: float = 3.0
    log_every: int = 10
    val_every: int = 250
    val_samples: int = 120
    prior_samples: int = 256  # training maps averaged for the network's mean-map prior
    seed: int = 0


def face_vertex_mask(model) -> torch.Tensor:
    """(V,) bool: the vertices of the face proper (every annotated part but OTHER); all without annotations."""
    from ..models.annotations import OTHER, annotations_for

    ann = annotations_for(model)
    if ann is None:
        return torch.ones(model.n_vertices, dtype=torch.bool)
    return torch.as_tensor(ann.vertex_parts != OTHER)


def dense_error_mm(pred_world: torch.Tensor, gt_world: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, V, 3) mm, (B, V, 3) mm -> (B,) mean distance over `mask` after the similarity alignment
    of the prediction onto the ground truth (fitted on the same vertices)."""
    p, g = pred_world.double(), gt_world.double()
    if mask is not None:
        p, g = p[:, mask], g[:, mask]
    s, R, t = fit_similarity(p, g)
    aligned = s[:, None, None] * torch.einsum("bij,bvj->bvi", R, p) + t[:, None]
    return (aligned - g).norm(dim=-1).mean(1)


def nme68(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(B, 68, 2), (B, 68, 2) px -> (B,) mean distance / sqrt(box w · h) of the ground truth, in %."""
    wh = gt.max(1).values - gt.min(1).values
    return (pred - gt).norm(dim=-1).mean(1) / (wh[:, 0] * wh[:, 1]).sqrt() * 100.0


@torch.no_grad()
def mean_map(ds: EngineMaps, n: int) -> torch.Tensor:
    """(3, R, R) mean of the un-augmented target maps of up to `n` samples spread over `ds`."""
    aug, ds.augment = ds.augment, None
    try:
        idx = np.unique(np.linspace(0, len(ds) - 1, min(n, len(ds))).round().astype(int))
        return torch.stack([ds[int(i)][1] for i in idx]).mean(0)
    finally:
        ds.augment = aug


@torch.no_grad()
def validate(net: PositionNet, ds: EngineMaps, model, batch: int = 16) -> dict:
    """{'dense_mm', 'nme68', 'n'} of `net` on the dataset (see the module docstring)."""
    net.eval()
    mask = face_vertex_mask(model)
    dense, nme = [], []
    for i0 in range(0, len(ds), batch):
        idx = list(range(i0, min(i0 + batch, len(ds))))
        x = torch.stack([ds[i][0] for i in idx])
        tg = [ds.target(i) for i in idx]
        maps = denormalise_map(net(x.to(next(net.parameters()).device)).float()).cpu()
        dec = decode_maps(model, ds.layout, maps, [t["camera"] for t in tg])
        dense.append(dense_error_mm(dec.vertices_world, torch.stack([t["vertices_world"] for t in tg]), mask))
        nme.append(nme68(dec.lm68_crop, torch.stack([t["lm68"] for t in tg])))
    net.train()
    d, n = torch.cat(dense), torch.cat(nme)
    return {"dense_mm": float(d.mean()), "nme68": float(n.mean()), "n": len(d)}


def _save_ckpt(path: Path, net, opt, step: int, epoch: int, best: float, cfg: PrnetTrainConfig, elapsed: float):
    with atomic_path(path) as tmp:
        torch.save({"prnet": net.config, "model": net.state_dict(), "optimizer": opt.state_dict(), "step": step,
                    "epoch": epoch, "best": best, "config": asdict(cfg), "elapsed_s": elapsed,
                    "torch_rng": torch.get_rng_state()}, tmp)


def train_prnet(cfg: PrnetTrainConfig, resume: bool = False, max_minutes: float | None = None,
                device: str = "cpu") -> dict:
    """Train; returns {'step', 'out', 'best', 'last_val'}. Stops after `cfg.steps` or `max_minutes`."""
    from ..log import progress
    from ..models import load_model

    if not cfg.engine:
        raise FaceReconError("--head prnet needs --engine DIR (a `facerecon dataset build` folder)")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = load_model(cfg.model)
    layout = uv_layout(model, cfg.size)
    wmask = torch.as_tensor(model_weight_mask(model, cfg.size))
    train_ds = EngineMaps(cfg.engine, "train", layout, Augment() if cfg.augment else None, cfg.seed)
    val_ds = EngineMaps(cfg.engine, "val", layout, None, limit=cfg.val_samples) if cfg.val_every else None
    net = PositionNet(cfg.encoder, cfg.width, cfg.size, pretrained=not resume or not (out / "last.pt").is_file(),
                      head=cfg.head).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    step, epoch, best, elapsed = 0, 0, math.inf, 0.0
    last = out / "last.pt"
    if resume and last.is_file():
        ck = torch.load(last, map_location="cpu", weights_only=False)
        if ck["prnet"] != net.config:
            raise FaceReconError(f"{last}: a run of {ck['prnet']}, not {net.config}; use another --out")
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step, epoch, best, elapsed = ck["step"], ck["epoch"], ck["best"], ck.get("elapsed_s", 0.0)
        torch.set_rng_state(ck["torch_rng"])
        log.info("resumed %s at step %d (epoch %d)", last, step, epoch)
    else:
        net.set_prior(mean_map(train_ds, cfg.prior_samples))
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    steps_per_epoch = max(1, len(train_ds) // cfg.batch)
    gamma = 0.5 ** (1.0 / (cfg.lr_half_epochs * steps_per_epoch))
    metrics = open(out / "metrics.jsonl", "a")  # noqa: SIM115 - open for the whole loop, closed after it
    w = wmask.to(device)[None, None]
    t_start, t_ckpt = time.perf_counter(), time.perf_counter()
    deadline = None if max_minutes is None else t_start + max_minutes * 60
    last_val = None
    bar = progress(total=cfg.steps, initial=step, desc="prnet", unit="step")
    net.train()
    while step < cfg.steps:
        train_ds.epoch = epoch
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        loader = torch.utils.data.DataLoader(train_ds, batch_size=cfg.batch, shuffle=True, drop_last=True,
                                             num_workers=cfg.workers, generator=gen)
        skip = step % steps_per_epoch  # a resumed epoch skips the batches it already saw
        t_step = time.perf_counter()
        for k, (x, target, _) in enumerate(loader):
            if k < skip:
                continue
            for g in opt.param_groups:
                g["lr"] = cfg.lr * gamma ** step
            pred = net(x.to(device))
            err = (pred - normalise_map(target.to(device))) ** 2
            loss = (err * w).sum() / (w.sum() * 3 * x.shape[0])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.update(1)
            now = time.perf_counter()
            dt, t_step = now - t_step, now
            if step % cfg.log_every == 0 or step == 1:
                # Loss in crop pixels: sqrt of the weighted mean squared error, × the map's scale.
                rms_px = math.sqrt(loss.item()) * NORM_SCALE
                metrics.write(json.dumps({"step": step, "epoch": epoch, "loss": loss.item(), "rms_px": rms_px,
                                          "lr": opt.param_groups[0]["lr"], "s_step": dt,
                                          "elapsed_s": elapsed + now - t_start}) + "\n")
                metrics.flush()
            timeout = deadline is not None and time.perf_counter() > deadline
            if val_ds is not None and (step % cfg.val_every == 0 or step == cfg.steps or timeout):
                last_val = dict(validate(net, val_ds, model), step=step, epoch=epoch,
                                elapsed_s=elapsed + time.perf_counter() - t_start)
                metrics.write(json.dumps({"val": last_val}) + "\n")
                metrics.flush()
                log.info("step %d: val dense %.2f mm, nme68 %.2f %%", step, last_val["dense_mm"], last_val["nme68"])
                if last_val["dense_mm"] < best:
                    best = last_val["dense_mm"]
                    save_weights(net, out / "best.pt", {"step": step, "val": last_val}, half=False)
                t_step = time.perf_counter()
            if time.perf_counter() - t_ckpt > cfg.ckpt_minutes * 60 or step >= cfg.steps or timeout:
                _save_ckpt(last, net, opt, step, epoch, best, cfg, elapsed + time.perf_counter() - t_start)
                t_ckpt = time.perf_counter()
                t_step = t_ckpt
            if step >= cfg.steps or timeout:
                break
        else:
            epoch += 1
            continue
        break
    bar.close()
    metrics.close()
    _save_ckpt(last, net, opt, step, epoch, best, cfg, elapsed + time.perf_counter() - t_start)
    return {"step": step, "out": str(out), "best": best, "last_val": last_val}


def export_prnet(src, dst, meta: dict | None = None) -> Path:
    """Float16 inference weights from a checkpoint or best.pt (`save_weights`)."""
    from .model import load_prnet

    ck_meta = {}
    try:
        ck = torch.load(src, map_location="cpu", weights_only=False)
        ck_meta = {k: ck[k] for k in ("step", "epoch", "best") if k in ck} | dict(ck.get("meta", {}))
    except Exception as e:  # noqa: BLE001
        raise FaceReconError(f"{src}: cannot read the checkpoint ({e})") from None
    net = load_prnet(src)
    return save_weights(net, dst, dict(ck_meta, **(meta or {})), half=True)


def measure_step(encoder: str, size: int = 128, batch: int = 16, steps: int = 5, width: float = 1.0) -> dict:
    """Seconds per training step (forward + backward + Adam) on random data, after one warm-up step."""
    net = PositionNet(encoder, width, size)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x, y = torch.rand(batch, 3, size, size), torch.rand(batch, 3, size, size)
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        loss = ((net(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t)
    return {"encoder": encoder, "size": size, "batch": batch, "width": width, "s_step": float(np.median(times)),
            "params": sum(p.numel() for p in net.parameters())}


__all__ = ["PrnetTrainConfig", "dense_error_mm", "export_prnet", "face_vertex_mask", "mean_map", "measure_step", "nme68",
           "train_prnet", "validate"]
