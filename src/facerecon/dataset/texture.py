"""Training the GCN texture refiner (issue 18 D3; `nets.texture_refiner`, docs/albedo.md).

Two commands (`facerecon albedo refiner-cache` / `refiner-train`):

1. `build_refiner_cache`: for every **train** photo (view 0) of the data-engine folders (any engine's
   `val` photos excluded by file name), everything a step needs that does not change with the network,
   one .pt file per photo in the cache folder:
   - the crop (224², uint8) and its photo under the face mask (the identity target's embedding);
   - the grey SH light solved on the photo (`dataset.albedo.delight_sample`; the engine's fits carry
     none) and the per-vertex irradiance it gives on the engine's fitted mesh;
   - the photo's de-lit vertex colours and where they are trusted (`methods.texture.delit_vertex_colors`,
     the same function inference uses);
   - the albedo basis' texture of the photo: the 80 learned coefficients fitted to the de-lit colours of
     the seen skin vertices (MAP, N(0, 1) prior, noise 0.05: what benchmarks/texture.py's re-shading
     check does);
   - the rasterization of the fitted mesh in the crop camera (our rasterizer: covered pixels, their
     triangle and barycentrics) and which covered pixels are the model's skin region;
   - the image features (`methods.texture.TextureFeatures`: regressor backbone + MobileFaceNet).
2. `train_refiner`: Adam on the losses of `objective.texture` (weights: `RefinerTrainConfig`);
   the render of a step is `render.rasterize.interpolate` of albedo x irradiance over the cached
   fragments (the geometry is fixed, so its visibility pass is done once per photo). Checkpoints every
   few minutes to `<out>/last.pt` (`--resume` continues from it); the final weights go to
   `GCNTexture.save` (float16).
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import FaceReconError

log = logging.getLogger(__name__)
CACHE_VERSION = 1


def _model_of(model_name: str):
    from ..models import load_model

    variant = model_name.split("-", 1)[1] if model_name.startswith("ict-") else None
    if variant is None:
        raise FaceReconError(f"engine model '{model_name}' is not an ICT variant")
    return load_model("ict", variant)


def _basis_texture(model_b, delit: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """(V, 3) the learned basis' MAP texture fitted to de-lit colours `delit` (V, 3) at vertices `ok` (V,)."""
    mean = model_b.albedo_mean.double().numpy().reshape(-1)
    B = model_b.albedo_basis.double().numpy()  # (3V, K)
    rows = (3 * np.flatnonzero(ok)[:, None] + np.arange(3)).ravel()
    y = delit.astype(np.float64).reshape(-1)[rows] - mean[rows]
    A = B[rows]
    coef = np.linalg.solve(A.T @ A + 0.05 ** 2 * np.eye(A.shape[1]), A.T @ y)
    return np.clip(mean + B @ coef, 0, 1).reshape(-1, 3)


def build_refiner_cache(engine_dirs, cache_dir, progress: bool = True, limit: int | None = None) -> dict:
    """Write one `<photo_id>.pt` per train photo into `cache_dir` (see the module doc); photos already
    there are kept (resumable). Returns {"photos": n written or kept, "skipped": n, "cache": path}."""
    from ..geometry.camera import PerspectiveCamera
    from ..geometry.mesh import vertex_normals
    from ..io.atomic import atomic_path
    from ..log import progress as bar
    from ..methods.texture import TextureFeatures, delit_vertex_colors
    from ..models import load_model
    from ..nets.mobilefacenet import similarity_to_template
    from ..render.rasterize import interpolate, rasterize
    from ..render.shading import sh_shade
    from .albedo import delight_sample, engine_photos, heldout_sources
    from .store import load_photo_sample

    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    held = heldout_sources(engine_dirs, "val")
    rows = engine_photos(engine_dirs, "train", exclude_sources=held)[:limit]
    model = feats = model_b = faces = skin_w = None
    done = skipped = 0
    for d, r in bar(rows, show=progress, desc="refiner cache", unit="photo"):
        pid = Path(r["sample"]).stem
        out = cache / f"{pid}.pt"
        if out.is_file():
            done += 1
            continue
        got = load_photo_sample(d, r)
        if got is None:
            skipped += 1
            continue
        s, img = got
        if model is None:
            model = _model_of(str(s["model"]))
            model_b = load_model("ict", str(s["model"]).split("-", 1)[1], albedo="learned")
            feats = TextureFeatures()
            faces = model.faces
            skin_w = model.skin_weights()[:, None].float()
        c = np.asarray(s["camera"], np.float64)
        cam = PerspectiveCamera(float(c[0]), float(c[1]), float(c[2]), int(c[3]), int(c[4]), float(c[5]), float(c[6]))
        vw = torch.as_tensor(np.asarray(s["vertices_world"], np.float32))[None]
        if vw.shape[1] != model.n_vertices or img.shape[:2] != (cam.height, cam.width):
            log.warning("%s: sample does not match model/camera; skipped", d / r["sample"])
            skipped += 1
            continue
        n = vertex_normals(vw, faces)
        t = delight_sample(s, img, faces.numpy())
        light = torch.as_tensor(t.light)[None]
        irr = sh_shade(torch.ones_like(vw), n, light)[0]
        with torch.no_grad():
            photo, seen = delit_vertex_colors(vw, n, faces, light, cam, torch.as_tensor(img))
        photo, seen = photo[0], seen[0]
        skin_v = skin_w[:, 0] > 0.5
        ok = (seen & skin_v).numpy()
        if ok.sum() < 200:
            log.warning("%s: only %d skin vertices seen; skipped", d / r["sample"], int(ok.sum()))
            skipped += 1
            continue
        basis = _basis_texture(model_b, photo.numpy(), ok)
        frags = rasterize(cam.project(vw), faces, (cam.height, cam.width), near=cam.near)
        skin_px = interpolate(skin_w, frags, faces)[0, ..., 0].reshape(-1)[frags.covered] > 0.99
        crop = torch.as_tensor(img).float().div(255).permute(2, 0, 1)[None]
        lm5 = model.lm5_from_lm68(torch.as_tensor(np.asarray(s["lm68"], np.float32)))[None]
        aff = similarity_to_template(lm5)
        face_m = frags.mask[0].float()
        with torch.no_grad():
            f = feats(crop, lm5)[0]
            target = feats.encoder(crop * face_m[None, None], aff)[0]
        item = {"version": CACHE_VERSION, "photo_id": pid, "source": str(r.get("source", "")),
                "engine": str(d), "image": torch.as_tensor(img), "irradiance": irr.half(),
                "photo": photo.half(), "seen": seen, "basis": torch.as_tensor(basis).half(),
                "covered": frags.covered.int(), "face": frags.face.int(), "bary": frags.bary_covered.float(),
                "skin_px": skin_px, "features": f.float(), "affine": aff[0].float(), "id_target": target.float(),
                "model": str(s["model"])}
        with atomic_path(out) as tmp:
            torch.save(item, tmp)
        done += 1
    return {"photos": done, "skipped": skipped, "cache": str(cache)}


@dataclass(frozen=True)
class RefinerTrainConfig:
    """Training settings (docs/albedo.md). Loss weights: w_photo rendered L1 on skin pixels; w_identity
    1 - cos of MobileFaceNet embeddings (render over black vs the photo under the face mask, every
    `identity_every` steps); w_symmetry; w_skin_var; w_basis_start -> w_basis_end: L1 of the final
    albedo to the basis texture, geometric decay over `steps`; w_coarse: L1 of the decoder's coarse
    texture to the basis texture (constant)."""

    steps: int = 4000
    batch: int = 8
    lr: float = 1e-3
    w_photo: float = 1.0
    w_identity: float = 0.1
    identity_every: int = 4
    w_symmetry: float = 0.05
    w_skin_var: float = 0.5
    w_basis_start: float = 1.0
    w_basis_end: float = 0.05
    w_coarse: float = 1.0
    holdout_percent: int = 4
    checkpoint_minutes: float = 4.0  # also when new cache files are picked up
    seed: int = 0


def load_cache(cache_dir) -> list[dict]:
    items = [torch.load(p, map_location="cpu", weights_only=False) for p in sorted(Path(cache_dir).glob("*.pt"))]
    if not items:
        raise FaceReconError(f"{cache_dir}: no refiner cache files (*.pt); run `facerecon albedo refiner-cache`")
    return items


def step_losses(net, items, faces, mirror, skin_idx, encoder, cfg: RefinerTrainConfig, progress: float,
                with_identity: bool) -> tuple[torch.Tensor, dict]:
    """The weighted loss of one batch of cache items and its parts (floats); `progress` in [0, 1] is
    how far training is (for the basis weight's schedule).

    The render is the renderer's barycentric blend (`render.rasterize.interpolate`) of albedo x
    irradiance over each photo's cached fragments, kept compact (covered pixels only) for the
    photometric term; the identity term scatters it into (B, H, W, 3) images over black."""
    from ..objective import texture as T

    B = len(items)
    H, W = items[0]["image"].shape[:2]
    V = net.n_vertices
    f = torch.stack([it["features"] for it in items])
    photo = torch.stack([it["photo"].float() for it in items])
    seen = torch.stack([it["seen"] for it in items])
    albedo, coarse = net(f, photo, seen, mirror)
    irr = torch.stack([it["irradiance"].float() for it in items])
    shaded = (albedo * irr).reshape(B * V, 3)
    corners = torch.cat([faces[it["face"].long()] + b * V for b, it in enumerate(items)])  # (N, 3)
    bary = torch.cat([it["bary"] for it in items])
    vals = (shaded[corners] * bary[..., None]).sum(1).clamp(0, 1)  # (N, 3) rendered colour per covered pixel
    covered = torch.cat([it["covered"].long() + b * H * W for b, it in enumerate(items)])
    img = torch.stack([it["image"] for it in items]).reshape(-1, 3)
    target = img[covered].float() / 255.0
    skin = torch.cat([it["skin_px"] for it in items]).float()
    pix_b = torch.div(covered, H * W, rounding_mode="floor")
    per = torch.zeros(B).index_add(0, pix_b, (vals - target).abs().mean(-1) * skin)
    cnt = torch.zeros(B).index_add(0, pix_b, skin).clamp_min(1.0)
    basis = torch.stack([it["basis"].float() for it in items])
    parts = {"photo": (per / cnt).mean(),
             "symmetry": T.symmetry_loss(albedo, mirror).mean(),
             "skin_var": T.skin_variance_loss(albedo, skin_idx).mean(),
             "basis": T.basis_l1_loss(albedo, basis).mean(),
             "coarse": T.basis_l1_loss(coarse, basis).mean()}
    wb = T.basis_weight_schedule(progress, 1.0, cfg.w_basis_start, cfg.w_basis_end)
    total = (cfg.w_photo * parts["photo"] + cfg.w_symmetry * parts["symmetry"] + cfg.w_skin_var * parts["skin_var"]
             + wb * parts["basis"] + cfg.w_coarse * parts["coarse"])
    if with_identity and encoder is not None and cfg.w_identity > 0:
        render = vals.new_zeros(B * H * W, 3).index_copy(0, covered, vals).view(B, H, W, 3)
        aff = torch.stack([it["affine"] for it in items])
        e = encoder(render.permute(0, 3, 1, 2), aff)
        tgt = torch.stack([it["id_target"] for it in items])
        parts["identity"] = (1 - (e * tgt).sum(-1)).mean()
        total = total + cfg.w_identity * parts["identity"]
    return total, {k: float(v.detach()) for k, v in parts.items()} | {"w_basis": wb}


def build_net(items_model: str, feature_dim: int):
    """A fresh `GCNTexture` on the ICT variant's hierarchy (4 levels of 4x), the basis mean as its base."""
    from ..geometry.hierarchy import mesh_hierarchy
    from ..models import load_model
    from ..nets.texture_refiner import GCNTexture, hierarchy_arrays

    model = _model_of(items_model)
    model_b = load_model("ict", items_model.split("-", 1)[1], albedo="learned")
    H = mesh_hierarchy(model.mean_shape.double().numpy(), model.faces.numpy(), levels=4, factor=4)
    return GCNTexture(hierarchy_arrays(H), model_b.albedo_mean.float().reshape(-1, 3), feature_dim), model


def train_refiner(cache_dir, out_dir, cfg: RefinerTrainConfig = RefinerTrainConfig(), resume: bool = False,
                  weights: str | None = None, minutes: float | None = None, progress: bool = True) -> dict:
    """Train on the cache (module doc). Checkpoints to `out_dir/last.pt`; at the end (or after `minutes`)
    saves the float16 weights to `weights` (default `out_dir/refiner.pt`). Returns the summary dict
    (also `out_dir/summary.json`)."""
    from ..io.atomic import atomic_path
    from ..log import progress as bar
    from ..models.annotations import mirror_vertices
    from ..nets.mobilefacenet import IdentityEncoder

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = load_cache(cache_dir)
    # Photos held out from the steps, to watch the losses on: a fixed ~4 % by a hash of their id, so a
    # cache that grows between resumptions keeps them.
    def is_dev(it):
        return zlib.crc32(it["photo_id"].encode()) % 100 < cfg.holdout_percent

    dev_items = [it for it in items if is_dev(it)] or items[:1]
    train_items = [it for it in items if not is_dev(it)]
    if len(train_items) < cfg.batch:
        raise FaceReconError(f"{cache_dir}: {len(train_items)} training photos, fewer than the batch {cfg.batch}")
    rng = np.random.default_rng(cfg.seed)
    net, model = build_net(items[0]["model"], int(items[0]["features"].shape[0]))
    faces = model.faces
    mirror = torch.as_tensor(mirror_vertices(model.mean_shape))
    skin_idx = model.region("skin")
    encoder = IdentityEncoder(flip=False) if cfg.w_identity > 0 else None
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    step, history, wall = 0, [], 0.0
    ck_path = out / "last.pt"
    if resume and ck_path.is_file():
        ck = torch.load(ck_path, map_location="cpu", weights_only=False)
        net.load_state_dict(ck["net"])
        opt.load_state_dict(ck["opt"])
        step, history, wall = ck["step"], ck["history"], ck.get("wall", 0.0)
        rng = np.random.default_rng(cfg.seed + step)
        log.info("resumed at step %d", step)

    def save_ck():
        with atomic_path(ck_path) as tmp:
            torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "step": step, "history": history,
                        "wall": wall, "config": asdict(cfg)}, tmp)

    def evaluate() -> dict:
        net.eval()
        with torch.no_grad():
            parts = [step_losses(net, dev_items[i:i + 8], faces, mirror, skin_idx, encoder, cfg, frac(), True)[1]
                     for i in range(0, len(dev_items), 8)]
        net.train()
        return {k: float(np.mean([p[k] for p in parts])) for k in parts[0]}

    t_start = time.perf_counter()
    t_ck = t_start

    def frac() -> float:
        """Training progress: steps done, or the time budget used when that is further."""
        f = step / cfg.steps
        if minutes is not None:
            f = max(f, (wall + time.perf_counter() - t_start) / (minutes * 60))
        return min(f, 1.0)

    def grow() -> None:
        """Add cache files written since the start (a cache still being built)."""
        have = {it["photo_id"] for it in train_items} | {it["photo_id"] for it in dev_items}
        for p in sorted(Path(cache_dir).glob("*.pt")):
            if p.stem not in have:
                it = torch.load(p, map_location="cpu", weights_only=False)
                (dev_items if is_dev(it) else train_items).append(it)

    net.train()
    pbar = bar(total=cfg.steps, initial=step, show=progress, desc="refiner", unit="step")
    with open(out / "train_log.jsonl", "a") as run_log:
        while step < cfg.steps:
            idx = rng.choice(len(train_items), cfg.batch, replace=False)
            batch = [train_items[i] for i in idx]
            total, parts = step_losses(net, batch, faces, mirror, skin_idx, encoder, cfg, frac(),
                                       step % max(cfg.identity_every, 1) == 0)
            for g in opt.param_groups:  # linear decay to a tenth over the run
                g["lr"] = cfg.lr * (1.0 - 0.9 * frac())
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            step += 1
            pbar.update(1)
            now = time.perf_counter()
            if step % 25 == 0:
                run_log.write(json.dumps({"step": step, "wall": wall + now - t_start, "total": float(total),
                                          "photos": len(train_items)} | parts) + "\n")
                run_log.flush()
            if now - t_ck > cfg.checkpoint_minutes * 60 or step == cfg.steps:
                ev = evaluate()
                history.append({"step": step, "wall": wall + now - t_start} | {f"dev_{k}": v for k, v in ev.items()})
                log.info("step %d dev %s", step, ev)
                run_log.write(json.dumps(history[-1]) + "\n")
                run_log.flush()
                wall_now = wall + now - t_start
                wall, t_start = wall_now, now
                save_ck()
                grow()
                t_ck = now
            if minutes is not None and wall + now - t_start > minutes * 60:
                log.info("time budget of %.0f min reached at step %d", minutes, step)
                break
    pbar.close()
    wall = wall + time.perf_counter() - t_start
    save_ck()
    meta = {"steps": step, "photos_train": len(train_items), "photos_holdout": len(dev_items),
            "wall_s": wall, "config": asdict(cfg), "history": history[-1:] if history else []}
    path = net.save(weights or out / "refiner.pt", meta=meta)
    summary = meta | {"weights": str(path), "bytes": path.stat().st_size}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


__all__ = ["RefinerTrainConfig", "build_net", "build_refiner_cache", "load_cache", "step_losses", "train_refiner"]
