"""Training VRN on data-engine folders: per-voxel sigmoid cross-entropy, RMSProp, as the paper.

    from facerecon.vrn.train import VRNTrainConfig, train_vrn
    train_vrn(VRNTrainConfig(engine=["ds/"], out="runs/vrn1", steps=2000))

OUT/last.pt every `ckpt_every` steps (and at the end); `resume=True` continues from it (network,
optimiser, step, RNG); OUT/best.pt has the best validation IoU; OUT/metrics.jsonl one line per log.
Validation (engine 'val' split, no augmentation): the volume IoU at the 0.5 iso-level and, on the
first `val_surface` views, the surface error (mm, after similarity ICP of the marching-cubes
surface to the true mesh, `mesh.surface_error`).
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
import torch.nn.functional as F

from ..errors import FaceReconError
from ..io.atomic import atomic_path
from .data import EngineVolumes
from .nets import VRN, VRNConfig
from .voxel import VoxelSpec, iou

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VRNTrainConfig:
    """engine: data-engine folders (train split: 'train', validation: 'val'); out: run folder.
    net: the network's configuration (its size and slices fix the voxel grid: `voxel_spec`).
    lr, alpha: RMSProp's; batch; steps; augment; ckpt_every; val_every (0: none); val_limit: val
    views for IoU; val_surface: of which the surface error; workers: DataLoader processes; seed."""

    engine: list = field(default_factory=list)
    out: str = "runs/vrn"
    net: VRNConfig = field(default_factory=VRNConfig)
    steps: int = 2000
    batch: int = 8
    lr: float = 2.5e-4
    alpha: float = 0.99
    augment: bool = True
    ckpt_every: int = 100
    val_every: int = 250
    val_limit: int = 64
    val_surface: int = 8
    workers: int = 0
    seed: int = 0

    def voxel_spec(self) -> VoxelSpec:
        return voxel_spec_for(self.net)


def voxel_spec_for(net: VRNConfig) -> VoxelSpec:
    """The grid of a network: its input size and slices, the reference mm per slice scaled to the size."""
    return VoxelSpec(size=net.size, depth=net.slices)


def vrn_loss(outputs: list[torch.Tensor], volume: torch.Tensor) -> torch.Tensor:
    """Mean per-voxel sigmoid cross-entropy, summed over the stacks (intermediate supervision).

    outputs: each (B, D, H, W) logits; volume: (B, D, H, W) {0, 1} (any dtype)."""
    target = volume.to(outputs[0].dtype)
    return sum(F.binary_cross_entropy_with_logits(o, target) for o in outputs)


def _loader(ds, cfg: VRNTrainConfig, shuffle: bool, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(ds, batch_size=cfg.batch, shuffle=shuffle, drop_last=shuffle,
                                       num_workers=cfg.workers, generator=g, persistent_workers=False)


def save_checkpoint(path: Path, net: VRN, opt, step: int, cfg: VRNTrainConfig, best: float, front_mm: float) -> None:
    state = {"vrn": net.config.to_dict(), "model": net.state_dict(), "optimizer": opt.state_dict(), "step": step,
             "best_iou": best, "config": {**asdict(cfg), "net": cfg.net.to_dict()},
             "meta": {"front_mm": front_mm, "spec": asdict(cfg.voxel_spec())},
             "rng": torch.get_rng_state()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


@torch.no_grad()
def validate(net: VRN, ds: EngineVolumes, cfg: VRNTrainConfig, front_mm: float) -> dict:
    """{'iou': mean volume IoU at 0.5, 'surface_mm': mean surface error over the visible true vertices
    (`mesh.surface_error`) on the first `val_surface` views, 'n_val'}."""
    from .data import model_faces, sample_camera
    from .mesh import surface_error, volume_to_mesh
    from .voxel import visible_vertices

    net.eval()
    spec = cfg.voxel_spec()
    ious, errs = [], []
    n = min(len(ds), cfg.val_limit)
    for i in range(n):
        item = ds[i]
        prob = torch.sigmoid(net.volume_logits(item["image"][None]))[0].numpy()
        ious.append(iou(prob >= 0.5, item["volume"].numpy()))
        if i < cfg.val_surface:
            s = ds.sample(i)
            try:
                # The view's own camera: the engine re-crops every view (the front depth is the model's guess).
                v, f = volume_to_mesh(prob, spec, front_mm, sample_camera(s))
                vis = visible_vertices(s["vertices_px"], model_faces(str(s["model"])))
                errs.append(surface_error(v, f, s["vertices_world"], vis))
            except FaceReconError:
                errs.append(float("nan"))
    net.train()
    return {"iou": float(np.mean(ious)), "surface_mm": float(np.nanmean(errs)) if errs else float("nan"),
            "n_val": n}


def front_depth(ds: EngineVolumes, n: int = 64) -> float:
    """The median depth (mm) of the faces' front-most vertex over the first `n` items: where inference
    puts slice `margin` (a single image fixes x, y in pixels but not the absolute distance)."""
    idx = np.linspace(0, len(ds) - 1, min(n, len(ds))).astype(int)
    return float(np.median([float(ds.sample(int(i))["vertices_px"][:, 2].min()) for i in idx]))


def train_vrn(cfg: VRNTrainConfig, resume: bool = False, max_seconds: float | None = None) -> dict:
    """Train; returns {'step', 'out', 'loss', 'val'} (the last validation, or None)."""
    from ..log import progress

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.engine:
        raise FaceReconError("VRN training needs at least one data-engine folder (--engine DIR)")
    torch.manual_seed(cfg.seed)
    spec = cfg.voxel_spec()
    train_ds = EngineVolumes(cfg.engine, "train", spec, augment=cfg.augment, seed=cfg.seed)
    val_ds = None
    if cfg.val_every:
        try:
            val_ds = EngineVolumes(cfg.engine, "val", spec, augment=False, limit=cfg.val_limit)
        except FaceReconError:
            log.warning("no 'val' samples in %s: no validation", cfg.engine)
    net = VRN(cfg.net)
    opt = torch.optim.RMSprop(net.parameters(), lr=cfg.lr, alpha=cfg.alpha)
    step, best = 0, -math.inf
    front_mm = None
    last = out / "last.pt"
    if resume:
        if not last.is_file():
            raise FaceReconError(f"--resume: no checkpoint {last}")
        ck = torch.load(last, map_location="cpu", weights_only=False)
        if ck["vrn"] != cfg.net.to_dict():
            raise FaceReconError(f"{last}: network {ck['vrn']} differs from the requested {cfg.net.to_dict()}")
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step, best, front_mm = int(ck["step"]), float(ck["best_iou"]), float(ck["meta"]["front_mm"])
        torch.set_rng_state(ck["rng"])
        log.info("resumed %s at step %d", last, step)
    if front_mm is None:
        front_mm = front_depth(train_ds)
    with open(out / "config.json", "w") as f:
        json.dump({**asdict(cfg), "net": cfg.net.to_dict(), "front_mm": front_mm}, f, indent=1)
    t0 = time.perf_counter()
    net.train()
    epoch = step * cfg.batch // max(len(train_ds), 1)
    losses: list[float] = []
    val = None
    bar = progress(total=cfg.steps, initial=step, desc="vrn train", unit="step")
    stop = False
    while step < cfg.steps and not stop:
        train_ds.set_epoch(epoch)
        for batch in _loader(train_ds, cfg, True, cfg.seed + epoch):
            loss = vrn_loss(net(batch["image"]), batch["volume"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            losses.append(float(loss.detach()))
            bar.update(1)
            timed_out = max_seconds is not None and time.perf_counter() - t0 > max_seconds
            row = None
            if step % 10 == 0 or step == cfg.steps or timed_out:
                row = {"step": step, "loss": float(np.mean(losses[-10:])), "s": round(time.perf_counter() - t0, 1)}
            if val_ds is not None and (step % cfg.val_every == 0 or step == cfg.steps or timed_out):
                val = validate(net, val_ds, cfg, front_mm)
                row = {**(row or {"step": step}), **{f"val_{k}": v for k, v in val.items()}}
                if val["iou"] > best:
                    best = val["iou"]
                    save_checkpoint(out / "best.pt", net, opt, step, cfg, best, front_mm)
            if row:
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
                log.info("%s", row)
            if step % cfg.ckpt_every == 0 or step == cfg.steps or timed_out:
                save_checkpoint(last, net, opt, step, cfg, best, front_mm)
            if step >= cfg.steps or timed_out:
                stop = True
                break
        epoch += 1
    bar.close()
    return {"step": step, "out": str(out), "loss": float(np.mean(losses[-10:])) if losses else float("nan"),
            "val": val, "best_iou": best}


def export_weights(checkpoint, path, half: bool = True) -> Path:
    """Inference weights from a training checkpoint: {'vrn': config, 'model': state (float16 when
    `half`), 'meta': {front_mm, spec, step, best_iou}}, loadable with weights_only=True."""
    if not Path(checkpoint).is_file():
        raise FaceReconError(f"{checkpoint}: no such VRN checkpoint")
    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if not isinstance(ck, dict) or "vrn" not in ck or "meta" not in ck:
        raise FaceReconError(f"{checkpoint}: not a VRN training checkpoint (needs 'vrn', 'model', 'meta')")
    sd = {k: (v.half() if half and v.is_floating_point() else v) for k, v in ck["model"].items()}
    meta = {**ck["meta"], "step": ck["step"], "best_iou": ck["best_iou"]}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"vrn": ck["vrn"], "model": sd, "meta": meta}, tmp)
    return path


__all__ = ["VRNTrainConfig", "export_weights", "front_depth", "save_checkpoint", "train_vrn", "validate",
           "voxel_spec_for", "vrn_loss"]
