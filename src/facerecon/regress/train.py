"""Weakly supervised training of the coefficient regressor (Deep3D's R-Net recipe).

Losses, the terms of `facerecon.objective` that `Fitter` minimises too (landmark and photometric
weights are FitConfig's, the priors the regressor's own): landmark (Deep3D's per-point weights,
crop px², soft-capped), skin/face-masked robust photometric loss through `MeshRenderer`, coefficient
priors, monochrome-light prior, optional identity-perceptual loss (MobileFaceNet, when its asset
exists), plus training's own: a penalty on expression values outside the model's range, and optional
distillation from fitting results (pseudo-labels: a parameter loss on identity/expression plus a
model-space vertex loss in mm²), and optional 3DDFA_V3 PRDL (`w_prdl`) against each item's part map
(the face parser's, cached per item by `regress.data.cache_part_maps`, augmented with the crop).

Runs on CPU or CUDA. Under ``torchrun`` (WORLD_SIZE > 1) the W processes split each global batch
of `batch` items, batch norm uses global statistics and DDP averages the gradients, so a step is
the single-process step (`regress/distributed.py`); only rank 0 logs, validates and checkpoints,
and every rank waits for each periodic checkpoint. Checkpoints (atomic): OUT/last.pt every
`ckpt_every` steps and at the end, OUT/best.pt (lowest validation NME); `resume=True` continues
from OUT/last.pt at its step with the very batches an uninterrupted run would have seen. Logs:
OUT/metrics.jsonl (always), TensorBoard under OUT/tb when `tensorboard` is installed.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.nn import functional as F

from .. import objective as O
from ..fit.config import FitConfig
from ..geometry.camera import PerspectiveCamera
from ..io.atomic import atomic_path
from ..models.morphable import MorphableModel
from ..render.renderer import MeshRenderer
from . import distributed as D
from .data import Augment, PreprocessedDataset, load_pseudo_labels
from .model import Regressor


@dataclass
class TrainConfig:
    """Everything a run needs (stored in every checkpoint).

    data: preprocessed folders; photo_weights: per folder (0 = landmark supervision only).
    steps: total optimisation steps; batch: the global batch (split over torchrun's processes,
    which must divide it). lr: AdamW, cosine decay after `warmup`.
    Loss weights follow FitConfig (landmark loss in crop px², photometric ×200), priors excepted.
    render_size: resolution of the photometric render (the 224² crop and mask are area-downsampled
    to it; 112 costs a quarter of 224 on CPU). val_every / ckpt_every / log_every: in steps.
    """

    data: list = field(default_factory=list)
    photo_weights: list | None = None
    out: str = "runs/regress"
    backbone: str = "mobilenet_v1_3ddfa"
    model: str = "ict"
    pretrained: bool = True
    steps: int = 2000
    batch: int = 16
    lr: float = 3e-4
    lr_backbone: float | None = None  # default: lr (pretrained backbones often like lr/3)
    weight_decay: float = 1e-4
    warmup: int = 100
    w_landmark: float = FitConfig.w_landmark
    landmark_robust: float | None = 40.0  # px; soft cap (large enough that profile errors still pull)
    w_photo: float = FitConfig.w_photo
    # The regressor's own priors (those of the shipped weights' run): fitting's are weaker, tuned
    # per image for landmark fidelity, while a network shares one set of weights over the data.
    w_id_prior: float = 0.03
    w_exp_prior: float = 0.3
    w_alb_prior: float = FitConfig.w_alb_prior
    w_light: float = FitConfig.w_light
    w_exp_range: float = 10.0
    w_identity: float = 0.0  # identity-perceptual (needs the mobilefacenet asset)
    w_pseudo_param: float = 1.0
    w_pseudo_vertex: float = 0.01  # per mm²
    pseudo_labels: str | None = None
    # 3DDFA_V3's PRDL against the items' part maps (ROOT/parts/NAME.png, made by the face parser on
    # first use), px² like the landmark term; 0 = off. prdl_max_points: per part (objective.prdl).
    w_prdl: float = 0.0
    prdl_max_points: int = 300
    landmarks: str = "gt"  # "gt": manual labels where present; "detector": the detector's (3D convention)
    # Data-engine folders (`facerecon dataset build`, their 'train' split) beside `data`, with direct
    # 3-D supervision: w_vertex × the robust vertex loss (`vertex_term`, crop px / mm, pseudo-Huber
    # with scale `vertex_delta` px) on every engine item, w_param × the identity/expression parameter loss.
    # engine_photo_weight: the photometric loss weight of engine items (0 = off).
    engine: list = field(default_factory=list)
    engine_photo_weight: float = 0.0
    w_vertex: float = 0.0
    vertex_delta: float = 1.0
    w_param: float = 0.0
    init: str | None = None  # regressor weights to start from (a fresh run, e.g. a fine-tuning leg)
    render_size: int = 112
    augment: bool = True
    workers: int = 1
    ckpt_every: int = 100
    val_every: int = 200
    log_every: int = 10
    seed: int = 0
    device: str = "auto"


def _device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


class Losses:
    """The training objective for one batch; callers pass the regressor's raw and final outputs.

    model: MorphableModel (on the training device). Returns (total scalar, dict of floats).
    """

    def __init__(self, model: MorphableModel, cfg: TrainConfig, identity_encoder=None, vertex_index=None):
        self.model = model
        self.cfg = cfg
        if vertex_index is None:
            from .engine_data import VERTEX_STRIDE

            vertex_index = torch.arange(0, model.mean_shape.shape[0], VERTEX_STRIDE)
        self.vertex_index = torch.as_tensor(vertex_index, dtype=torch.long, device=model.mean_shape.device)
        self.camera = PerspectiveCamera.deep3d(224)
        self.rcam = PerspectiveCamera.deep3d(cfg.render_size)
        self.renderer = MeshRenderer(self.rcam, model.faces, outputs=("rgb", "mask"), antialias=False)
        self.lm_w = O.deep3d_landmark_weights(model.mean_shape.dtype, model.mean_shape.device)
        self.encoder = identity_encoder
        self.part_mesh = self.anchors = None
        if cfg.w_prdl > 0:
            from ..models.annotations import annotations_for
            from ..objective.prdl import PartMesh, anchor_grid

            ann = annotations_for(model)
            if ann is None:
                raise ValueError(f"PRDL (w_prdl > 0) needs part annotations, which model {model.name} lacks")
            self.part_mesh = PartMesh(ann, model.faces)
            self.anchors = anchor_grid(224, 12, model.mean_shape.dtype, model.mean_shape.device)

    def __call__(self, reg: Regressor, raw: torch.Tensor, vec: torch.Tensor, batch: dict,
                 pseudo: tuple[torch.Tensor, torch.Tensor] | None = None):
        cfg, model = self.cfg, self.model
        p = reg.layout.split(vec)
        B = vec.shape[0]
        logs = {}
        photo_w = batch["photo_w"]
        # Collectives run on every rank, before any branch that depends on this rank's items.
        photo_den = _global_mean(photo_w.sum()).clamp_min(1e-6)
        pseudo_den = None if pseudo is None else _global_mean(pseudo[1].sum().to(vec.dtype)).clamp_min(1e-6)
        need_render = cfg.w_photo > 0 and bool((photo_w > 0).any()) or (cfg.w_identity > 0 and self.encoder)
        if need_render:
            geo = model(p)
            verts = geo.vertices
        else:
            verts = model.shape(p.identity, p.expression)
        lm_pred = model.project_landmarks(p, self.camera, vertices=verts)
        lml = O.point_term(lm_pred, batch["lm68"], self.lm_w * batch["lm_w"], cfg.landmark_robust)
        total = cfg.w_landmark * lml.mean()
        logs["landmark_px2"] = float(lml.detach().mean())
        prior = O.coefficient_prior(p.identity, p.expression, p.albedo, cfg.w_id_prior, cfg.w_exp_prior,
                                    cfg.w_alb_prior)
        total = total + prior.mean() + cfg.w_light * O.light_prior(p.light).mean()
        total = total + cfg.w_exp_range * reg.expression_overflow(raw).mean()
        logs["prior"] = float(prior.detach().mean())
        if "has3d" in batch and (cfg.w_vertex > 0 or cfg.w_param > 0):
            h = batch["has3d"].to(vec.dtype)
            den3d = _global_mean(h.sum()).clamp_min(1e-6)  # on every rank (a collective)
            if cfg.w_vertex > 0:
                world = model.pose(verts[:, self.vertex_index], p.rotation, p.translation)
                vl = vertex_term(self.camera.project(world), batch["vertices_px"], cfg.vertex_delta)
                total = total + cfg.w_vertex * (vl * h).sum() / den3d
                logs["vertex"] = float((vl.detach() * h).sum() / h.sum().clamp_min(1e-6))
            if cfg.w_param > 0:
                t = reg.layout.split(batch["params"].to(vec.dtype))
                pw = batch["param_w"].to(vec.dtype) * h[:, None]
                pl = (((p.identity - t.identity) ** 2).mean(-1) * pw[:, 0]
                      + ((p.expression - t.expression) ** 2).mean(-1) * pw[:, 1])
                total = total + cfg.w_param * pl.sum() / den3d
                logs["param"] = float(pl.detach().sum() / h.sum().clamp_min(1e-6))
        if self.part_mesh is not None and "parts" in batch:
            from ..objective.prdl import label_map_points, prdl_term

            target = label_map_points(batch["parts"], max_points=cfg.prdl_max_points, dtype=verts.dtype)
            world = model.pose(verts, p.rotation, p.translation)
            part = prdl_term(self.part_mesh, world, self.camera, target, self.anchors)
            total = total + cfg.w_prdl * part.mean()
            logs["prdl_px2"] = float(part.detach().mean())
        if need_render:
            S = cfg.render_size
            img = batch["image"]
            mask = batch["mask"][:, None]
            if img.shape[-1] != S:
                img = F.interpolate(img, size=(S, S), mode="area")
                mask = F.interpolate(mask, size=(S, S), mode="area")
            photo, out = O.photo_term(self.renderer, geo, p.light, img.permute(0, 2, 3, 1), mask[:, 0])
            total = total + cfg.w_photo * (photo * photo_w).sum() / photo_den
            logs["photo"] = float((photo.detach() * photo_w).sum() / photo_w.sum().clamp_min(1e-6))
            if self.encoder is not None and cfg.w_identity > 0:
                # Both images warped by the target 5 points' similarity, rescaled to the render size.
                aff = O.identity_affine(batch["lm68"], S / 224.0)
                idl = O.identity_term(self.encoder, out, img, aff, O.identity_target(self.encoder, img, aff))
                total = total + cfg.w_identity * idl.mean()
                logs["identity"] = float(idl.detach().mean())
        if pseudo is not None:
            target, have = pseudo
            if bool(have.any()):
                t = reg.layout.split(target)
                h = have.to(vec.dtype)
                # Identity and expression do not change under the 2-D augmentation; pose does.
                pl = ((p.identity - t.identity) ** 2).mean(-1) + ((p.expression - t.expression) ** 2).mean(-1)
                vt = model.shape(t.identity, t.expression)
                vl = ((verts - vt) ** 2).sum(-1).mean(-1)
                n = h.sum().clamp_min(1.0)
                total = total + (cfg.w_pseudo_param * (pl * h).sum() + cfg.w_pseudo_vertex * (vl * h).sum()) / pseudo_den
                logs["pseudo_param"] = float((pl.detach() * h).sum() / n)
                logs["pseudo_vertex_mm2"] = float((vl.detach() * h).sum() / n)
        logs["total"] = float(total.detach())
        logs["batch"] = B
        return total, logs


def vertex_term(pred: torch.Tensor, target: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """Robust per-vertex distance between a projected mesh and its 3-D targets.

    pred, target: (B, N, 3) x px, y px, depth mm (`PerspectiveCamera.project`'s screen space; the
    depths of each side are taken relative to their own mean over the N vertices, since only relative
    depth is shared between the target's camera and the prediction's). At the Deep3D camera (focal
    1015 px, 1000 mm away) a millimetre of depth is ~1 px, so x, y and depth enter one distance r.
    Returns (B,) the mean over vertices of √(r² + δ²) − δ (pseudo-Huber scaled to px): r²/(2δ) for
    r ≪ δ, r − δ (L1: a unit gradient per px) beyond, 0 with zero gradient where the mesh matches.
    """
    dp = pred[..., 2:] - pred[..., 2:].mean(-2, keepdim=True)
    dt = target[..., 2:] - target[..., 2:].mean(-2, keepdim=True)
    r2 = ((pred[..., :2] - target[..., :2]) ** 2).sum(-1) + ((dp - dt) ** 2).sum(-1)
    return (torch.sqrt(r2 + delta ** 2) - delta).mean(-1)


def _ensure_part_maps(dataset: PreprocessedDataset, show: bool) -> None:
    """PRDL's targets: cache the face parser's map of every item that has none (the parser only when
    some are missing, so a folder with its maps made elsewhere needs no parser)."""
    from .data import cache_part_maps, part_map_path

    if all(part_map_path(r, n).is_file() for r, n, _ in dataset.items):
        return
    from ..fit.targets import default_parser

    cache_part_maps(dataset, default_parser(), show=show)


def _global_mean(x: torch.Tensor) -> torch.Tensor:
    """A weighted term's denominator: the ranks' mean of `x` (x in one process), so that DDP's
    average of the per-rank terms is the global ratio sum(w·loss) / sum(w)."""
    return D.global_sum(x) / D.world()[1]


def _save(path: Path, obj: dict) -> None:
    with atomic_path(path, suffix=".tmp") as tmp:
        torch.save(obj, tmp)


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def train(cfg: TrainConfig, resume: bool = False, validate=None, model: MorphableModel | None = None,
          dataset: PreprocessedDataset | None = None, max_seconds: float | None = None,
          progress: bool = True) -> dict:
    """Train a regressor; returns {'step', 'out', 'last_logs', 'best_nme'}.

    validate: optional callable(regressor in eval mode) -> dict with 'nme' (%, lower is better)
        and any other floats; run on rank 0 every `cfg.val_every` steps and at the end.
    model / dataset: pre-built objects (tests); else built from cfg.model / cfg.data.
    max_seconds: stop (with a checkpoint) after this wall time, e.g. to fit a time budget.
    """
    device = _device(cfg.device)
    rank, world, local = D.setup(device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local)
    torch.manual_seed(cfg.seed + rank)
    out = Path(cfg.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    if model is None:
        from ..models import load_model

        model = load_model(cfg.model)
    model = model.to(device)
    reg = Regressor(cfg.backbone, model, pretrained=cfg.pretrained).to(device)
    if world > 1:  # before the optimizer takes the parameters; state-dict names are unchanged
        D.convert_batchnorm(reg)
    if dataset is None:
        aug = Augment() if cfg.augment else None
        dataset = None
        if cfg.data:
            dataset = PreprocessedDataset(cfg.data, cfg.photo_weights, aug, seed=cfg.seed,
                                          landmarks=cfg.landmarks, parts=cfg.w_prdl > 0)
            if cfg.w_prdl > 0 and rank == 0:
                _ensure_part_maps(dataset, progress)
        if cfg.engine:
            from .engine_data import EngineDataset, MixedDataset

            if cfg.w_prdl > 0:
                raise ValueError("PRDL (w_prdl > 0) is not supported with engine data (no part maps there)")
            dataset = MixedDataset(dataset, EngineDataset(cfg.engine, model, split="train", augment=aug,
                                                          seed=cfg.seed, photo_weight=cfg.engine_photo_weight))
        if dataset is None:
            raise ValueError("no training data: give preprocessed folders (data) and/or engine folders (engine)")
        D.barrier()
    if len(dataset) == 0:
        raise ValueError(f"no training items in {cfg.data}")
    pseudo_all = None
    if cfg.pseudo_labels:
        pseudo_all = load_pseudo_labels(cfg.pseudo_labels, dataset, reg.layout.dim)
    encoder = None
    if cfg.w_identity > 0:
        from ..errors import AssetError
        from ..nets.mobilefacenet import IdentityEncoder

        try:
            encoder = IdentityEncoder().to(device).eval()
        except AssetError as e:  # optional term: train without it rather than fail
            import warnings

            warnings.warn(f"identity-perceptual loss disabled: {e}", stacklevel=2)
    engine_ds = getattr(dataset, "engine", None)
    objective = Losses(model, cfg, encoder, vertex_index=None if engine_ds is None else engine_ds.vertex_index)

    bb_params = list(reg.net.backbone.parameters())
    head_params = list(reg.net.head.parameters())
    opt = torch.optim.AdamW([{"params": bb_params, "lr": cfg.lr_backbone or cfg.lr},
                             {"params": head_params, "lr": cfg.lr}], weight_decay=cfg.weight_decay)
    base_lrs = [g["lr"] for g in opt.param_groups]
    step, best = 0, float("inf")
    last = out / "last.pt"
    if cfg.init and not (resume and last.is_file()):
        from .predict import load_regressor

        init = load_regressor(cfg.init)
        if not isinstance(init, Regressor) or init.backbone_name != reg.backbone_name:
            raise ValueError(f"{cfg.init}: not a '{reg.backbone_name}' torch regressor to start from")
        reg.load_state_dict(init.state_dict(), strict=True)
    if resume and last.is_file():
        ck = torch.load(last, map_location="cpu", weights_only=False)
        reg.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step, best = int(ck["step"]), float(ck.get("best_nme", float("inf")))
        if "rng" in ck:
            torch.set_rng_state(ck["rng"])
    net = reg
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(reg, device_ids=[local] if device.type == "cuda" else None)
    # Keys (index, epoch) make each item's augmentation a function of the item and the epoch, so
    # the process count and a resume do not change what a step sees.
    sampler = D.GlobalBatchSampler(len(dataset), cfg.batch, cfg.seed, rank, world, start=step)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.workers,
                                         persistent_workers=cfg.workers > 0, pin_memory=device.type == "cuda")

    tb = None
    if rank == 0:
        try:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(str(out / "tb"))
        except Exception:  # noqa: BLE001 - tensorboard is optional
            tb = None

    def log(rec: dict) -> None:
        if rank != 0:
            return
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        if tb is not None:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k != "step":
                    tb.add_scalar(k, v, rec["step"])

    def checkpoint(path: Path, sync: bool = True) -> None:
        """Rank 0 writes; with `sync`, every rank waits until the file is complete."""
        if rank == 0:
            _save(path, {"step": step, "model": reg.state_dict(), "optimizer": opt.state_dict(),
                         "regressor": reg.config(), "train_config": asdict(cfg), "best_nme": best,
                         "rng": torch.get_rng_state()})
        if sync:
            D.barrier()

    def run_validation() -> dict | None:
        nonlocal best
        if validate is None or rank != 0:
            return None
        reg.eval()
        t = time.perf_counter()
        with torch.no_grad():
            res = dict(validate(reg))
        reg.train()
        res = {f"val_{k}": v for k, v in res.items()}
        res["val_seconds"] = time.perf_counter() - t
        if res.get("val_nme", float("inf")) < best:
            best = float(res["val_nme"])
            checkpoint(out / "best.pt", sync=False)  # rank 0 alone validates
        log({"step": step, **res})
        return res

    bar = None
    if progress and rank == 0:
        try:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=step, unit="step", desc="train")
        except ImportError:
            bar = None
    t_start = time.perf_counter()
    last_logs: dict = {}
    reg.train()
    batches = iter(loader)
    while step < cfg.steps:
        t0 = time.perf_counter()
        batch = next(batches)
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        f = _lr_factor(step, cfg)
        for grp, lr0 in zip(opt.param_groups, base_lrs):
            grp["lr"] = lr0 * f
        x = batch["image"]
        raw = _forward_raw(net, x)
        vec = reg.constrain(raw)
        pseudo = None
        if pseudo_all is not None:
            idx = batch["index"].cpu()
            pseudo = (pseudo_all[0][idx].to(device), pseudo_all[1][idx].to(device))
        loss, logs = objective(reg, raw, vec, batch, pseudo)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(reg.parameters(), 10.0)
        opt.step()
        step += 1
        logs["lr"] = opt.param_groups[-1]["lr"]
        logs["step_seconds"] = time.perf_counter() - t0
        last_logs = logs
        if bar is not None:
            bar.update(1)
            bar.set_postfix(lm=f"{logs['landmark_px2']:.1f}", photo=f"{logs.get('photo', 0):.3f}")
        if step % cfg.log_every == 0 or step == 1:
            log({"step": step, "time": time.time(), **logs})
        if step % cfg.ckpt_every == 0:
            checkpoint(last)
        if cfg.val_every and step % cfg.val_every == 0:
            run_validation()
        # Every rank must leave at the same step (the next step's all-reduce would hang).
        if max_seconds is not None and D.any_rank(time.perf_counter() - t_start > max_seconds):
            break  # time budget: stop with a checkpoint
    checkpoint(last)
    if cfg.val_every and step % cfg.val_every != 0:
        run_validation()
    if bar is not None:
        bar.close()
    D.barrier()
    return {"step": step, "out": str(out), "last_logs": last_logs, "best_nme": best}


def _forward_raw(net, x: torch.Tensor) -> torch.Tensor:
    """The regressor's raw output (before the expression clamp), (B, dim).

    Under DDP the call must go through the wrapper so that its gradient hooks fire; the wrapper
    calls `forward`, which is pointed at `raw` for this one call."""
    if not isinstance(net, torch.nn.parallel.DistributedDataParallel):
        return net.raw(x)
    mod = net.module
    mod.forward = mod.raw
    try:
        return net(x)
    finally:
        del mod.forward  # back to the class's forward


__all__ = ["Losses", "TrainConfig", "train", "vertex_term"]
