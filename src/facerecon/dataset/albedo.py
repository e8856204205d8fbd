"""A learned albedo basis for ICT from the data engine's photos (`facerecon albedo build`, docs/albedo.md).

Per photo, only view 0 (the source photo's own aligned crop and its fitted mesh) is used:

1. de-lighting: vertex colours are sampled where the vertex is visible (z-buffer, `vertex_visibility`)
   and not grazing (cos(normal, view ray) > `min_facing`); one grey SH light (9 coefficients) is
   solved on their luminance with a constant albedo, robustly (two re-weighted passes dropping
   residuals beyond 3 MADs), and scaled so that its constant coefficient is the shader's ambient
   offset (`DEEP3D_INIT_LIT`): the albedo keeps the face's brightness and tint (which a photo cannot
   separate from exposure and light colour), the light keeps only its direction. The engine's
   samples carry no light (its fits are geometric: their 27 SH coefficients are 0), hence this solve.
   albedo = colour / irradiance (irradiance floored at 25 % of the ambient level).
2. outliers: each texture is normalised by its median skin colour and compared with the per-vertex
   median over all photos; vertices whose luminance differs by more than `outlier` (hair, glasses,
   hands, specular highlights) are treated as unseen. Photos with fewer than `min_seen` of the skin
   vertices left are dropped (counted in the summary).
3. filling and symmetry: vertices outside the model's 'skin' region (ears, neck, scalp: hair and
   background in photos) take the photo's median skin colour; unseen skin vertices take their mirror vertex (`mirror_map`), then each texture
   is averaged with its mirror (so the basis is symmetric); what neither side saw is imputed by
   iterative PCA (EM: fill with the reconstruction from the leading components, re-fit, 4 rounds).
4. PCA: mean + `n_components` components scaled by their standard deviation, so a coefficient's
   prior is N(0, 1) as for BFM's and ICT's shape modes (`FaceParams.albedo`).

Only photos of the "train" split are used; `val` photos stay held out for measurement.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FaceReconError

log = logging.getLogger(__name__)

#: Rec. 601 luma weights for the grey light solve.
LUMA = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class AlbedoBuildConfig:
    """Settings of `build_albedo_basis` (see the module doc for what each step does).

    n_components: K, components kept; min_facing: cos(normal, view ray) below which a vertex is
    grazing (not sampled); outlier: luminance difference (albedo units, [0, 1]) from the population
    median beyond which a vertex is an occluder; min_seen: fraction of skin vertices a photo must
    keep; split: which manifest split to use; em_rounds: iterative-PCA imputation rounds.
    """

    n_components: int = 80
    min_facing: float = 0.3
    outlier: float = 0.15
    min_seen: float = 0.35
    split: str = "train"
    em_rounds: int = 4


@dataclass(frozen=True)
class DelitTexture:
    """One photo's de-lit per-vertex albedo.

    albedo: (V, 3) float32 in [0, 1] (undefined where not seen); seen: (V,) bool sampled and trusted;
    light: (27,) float32 SH light (Deep3D layout, grey) that re-shades it; photo_id: str.
    """

    albedo: np.ndarray
    seen: np.ndarray
    light: np.ndarray
    photo_id: str


def _sample_rgb(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 image, (N, 2) px (centres at integers) -> (N, 3) bilinear colours in [0, 1]."""
    H, W = image.shape[:2]
    x = np.clip(xy[:, 0], 0, W - 1.001)
    y = np.clip(xy[:, 1], 0, H - 1.001)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    im = image.astype(np.float64) / 255.0
    return ((im[y0, x0] * (1 - fx) + im[y0, x0 + 1] * fx) * (1 - fy)
            + (im[y0 + 1, x0] * (1 - fx) + im[y0 + 1, x0 + 1] * fx) * fy)


def delight_sample(sample: dict, image: np.ndarray, faces: np.ndarray, min_facing: float = 0.3,
                   ridge: float = 0.05) -> DelitTexture:
    """De-light one engine sample (view 0).

    Args:
        sample: `store.load_sample` dict (vertices_world, vertices_px, camera, photo_id).
        image: (S, S, 3) uint8, the sample's crop.
        faces: (F, 3) int64 triangles of the sample's model.
        min_facing: cos(normal, view ray) below which a vertex is not sampled.
        ridge: strength of the directional light bands' ridge (relative to the constant term).

    Returns:
        `DelitTexture`.
    """
    import torch

    from ..geometry.camera import PerspectiveCamera
    from ..geometry.mesh import vertex_normals
    from ..render.shading import DEEP3D_INIT_LIT, sh_basis
    from .profile import vertex_visibility

    c = np.asarray(sample["camera"], np.float64)
    cam = PerspectiveCamera(float(c[0]), float(c[1]), float(c[2]), int(c[3]), int(c[4]), float(c[5]), float(c[6]))
    vw = np.asarray(sample["vertices_world"], np.float64)
    vis, facing = vertex_visibility(vw, faces, cam)
    px = np.asarray(sample["vertices_px"], np.float64)[:, :2]
    H, W = image.shape[:2]
    inside = (px[:, 0] >= 0) & (px[:, 0] <= W - 1) & (px[:, 1] >= 0) & (px[:, 1] <= H - 1)
    seen = vis & (facing > min_facing) & inside
    rgb = _sample_rgb(image, px)
    normals = vertex_normals(torch.from_numpy(vw)[None], torch.from_numpy(np.asarray(faces, np.int64)))[0]
    Y = sh_basis(normals).numpy()  # (V, 9)
    lum = rgb @ LUMA
    # Grey light on luminance with a constant albedo; robust re-weighting drops hair/shadows/highlights.
    w = seen.astype(np.float64)
    g = np.zeros(9)
    for _ in range(3):
        A = Y * np.sqrt(w)[:, None]
        # Ridge on the directional bands, relative to the constant term's energy: a constant-albedo
        # light over half a face is ill-posed, and unregularised it explains brows and lips as shading.
        reg = ridge * max(w.sum(), 1.0) * Y[0, 0] ** 2 * np.array([0.0] + [1.0] * 3 + [4.0] * 5)
        g = np.linalg.solve(A.T @ A + np.diag(reg) + 1e-6 * np.eye(9), A.T @ (lum * np.sqrt(w)))
        r = lum - Y @ g
        med = np.median(r[seen]) if seen.any() else 0.0
        mad = np.median(np.abs(r[seen] - med)) * 1.4826 + 1e-6 if seen.any() else 1.0
        w = (seen & (np.abs(r - med) < 3 * mad)).astype(np.float64)
    if g[0] <= 1e-6:
        g = np.zeros(9)
        g[0] = 1.0
    g = g * (DEEP3D_INIT_LIT / g[0])  # absolute coefficients with the ambient level the shader uses
    irr = np.maximum(Y @ g, 0.25 * Y[0, 0] * DEEP3D_INIT_LIT)
    albedo = np.clip(rgb / irr[:, None], 0.0, 1.0)
    rel = g.copy()
    rel[0] -= DEEP3D_INIT_LIT  # the flat light vector (the shader adds init_lit back)
    light = np.tile(rel, 3).astype(np.float32)
    return DelitTexture(albedo.astype(np.float32), seen, light, str(sample.get("photo_id", "")))


def engine_photos(engine_dirs, split: str = "train", exclude_sources=()) -> list[tuple[Path, dict]]:
    """(engine dir, manifest row) of every usable view-0 sample of `split` in `engine_dirs`; a photo
    whose source file name is in `exclude_sources` (another engine's held-out photos) is skipped."""
    from .store import read_manifest

    out, seen_src = [], set()
    excl = {Path(s).name for s in exclude_sources}
    for d in engine_dirs:
        d = Path(d)
        if not (d / "manifest.jsonl").is_file():
            raise FaceReconError(f"{d}: not a data-engine folder (no manifest.jsonl)")
        for r in read_manifest(d):
            if r.get("status") != "ok" or r.get("view") != 0 or r.get("split") != split:
                continue
            name = Path(str(r.get("source", ""))).name
            if name in excl or name in seen_src:
                continue
            seen_src.add(name)
            out.append((d, r))
    return out


def heldout_sources(engine_dirs, split: str = "val") -> set[str]:
    """Source file names of the `split` photos of the engines (to keep them out of the basis)."""
    from .store import read_manifest

    out = set()
    for d in engine_dirs:
        for r in read_manifest(Path(d)):
            if r.get("split") == split:
                out.add(Path(str(r.get("source", ""))).name)
    return out


def _robust_filter(tex: np.ndarray, seen: np.ndarray, skin: np.ndarray, thr: float) -> tuple[np.ndarray, np.ndarray]:
    """Drop per-vertex outliers against the population median (after each face's skin-tone gain).

    tex (N, V, 3), seen (N, V) bool, skin (V,) bool. Returns the new seen mask and per-face gains (N, 3).
    """
    masked = np.where(seen[..., None], tex, np.nan)
    gain = np.nanmedian(masked[:, skin], axis=1)  # (N, 3)
    gain = np.where(np.isfinite(gain), gain, np.nanmedian(gain, 0))
    norm = masked / gain[:, None, :]
    ref = np.nanmedian(norm, axis=0)  # (V, 3)
    ref = np.where(np.isfinite(ref), ref, 1.0)
    dl = np.abs((norm - ref[None]) @ LUMA) * (gain @ LUMA)[:, None]  # back to albedo units
    return seen & (np.nan_to_num(dl, nan=np.inf) < thr), gain


def build_albedo_basis(engine_dirs, config: AlbedoBuildConfig = AlbedoBuildConfig(), progress: bool = True) -> dict:
    """Build the PCA albedo basis from data-engine folders (see the module doc).

    Returns:
        dict of arrays ready for `models.albedo.save_albedo`: mean (V, 3) float32, basis (V, 3, K)
        float32 (column k = component k × its standard deviation), variance (K,) float64 (of the
        unit-norm components), faces_used / faces_dropped ints, photo_ids (N,) str, model str,
        min_facing / outlier floats.
    """
    from ..log import progress as bar
    from ..models import load_model
    from .profile import mirror_map
    from .store import load_photo_sample

    held = heldout_sources(engine_dirs, "val")
    rows = engine_photos(engine_dirs, config.split, exclude_sources=held)
    if len(rows) <= config.n_components:
        raise FaceReconError(f"{len(rows)} usable photos in {list(map(str, engine_dirs))}: the basis needs more "
                             f"than n_components={config.n_components}")
    model_name = None
    texs, seens, ids = [], [], []
    faces = mirror = skin = None
    failed = 0
    for d, r in bar(rows, show=progress, desc="de-lighting", unit="photo"):
        got = load_photo_sample(d, r)
        if got is None:
            failed += 1
            continue
        s, img = got
        if faces is None:
            model_name = str(s["model"])
            variant = model_name.split("-", 1)[1] if model_name.startswith("ict-") else None
            if variant is None:
                raise FaceReconError(f"{d}: engine model '{model_name}' is not an ICT variant")
            m = load_model("ict", variant)
            faces = m.faces.numpy()
            mirror = mirror_map(m.mean_shape.double().numpy())
            skin = np.zeros(m.n_vertices, bool)
            skin[m.region("skin").numpy()] = True
        if str(s["model"]) != model_name:
            log.warning("%s: model %s differs from %s; skipped", d / r["sample"], s["model"], model_name)
            failed += 1
            continue
        t = delight_sample(s, img, faces, config.min_facing)
        texs.append(t.albedo)
        seens.append(t.seen)
        ids.append(t.photo_id)
    tex = np.stack(texs).astype(np.float64)
    seen = np.stack(seens)
    seen, gain = _robust_filter(tex, seen, skin, config.outlier)
    keep = seen[:, skin].mean(1) >= config.min_seen
    log.info("albedo: %d photos de-lit, %d dropped (< %.0f%% of skin seen after outliers)",
             len(texs), int((~keep).sum()), 100 * config.min_seen)
    tex, seen, gain = tex[keep], seen[keep], gain[keep]
    ids = [i for i, k in zip(ids, keep) if k]
    # Outside the skin region (ears, neck, scalp: hair, clothes and background in photos) no sample is
    # trusted; those vertices take the face's own median skin colour, so the basis carries skin tone there.
    seen = seen & skin[None]
    tex = np.where(skin[None, :, None], tex, gain[:, None, :])
    seen = seen | ~skin[None]
    # Mirror fill, then symmetrise: average each texture with its mirror where both are known.
    ms = seen[:, mirror]
    mt = tex[:, mirror]
    filled = np.where(seen[..., None], tex, mt)
    known = seen | ms
    both = seen & ms
    filled = np.where(both[..., None], 0.5 * (tex + mt), filled)
    X = np.where(known[..., None], filled, np.nan).reshape(len(ids), -1)
    miss = ~np.isfinite(X)
    # Iterative PCA imputation of what neither side saw (ears, under the chin).
    # Start from each face's own skin colour (a vertex no photo saw has no column mean).
    X = np.where(miss, np.tile(gain, len(mirror)), X)
    K = config.n_components
    for _ in range(config.em_rounds):
        mu = X.mean(0)
        U, S, Vt = np.linalg.svd(X - mu, full_matrices=False)
        k = min(K, len(S))
        rec = mu + (U[:, :k] * S[:k]) @ Vt[:k]
        X = np.where(miss, np.clip(rec, 0, 1), X)
    mu = X.mean(0)
    U, S, Vt = np.linalg.svd(X - mu, full_matrices=False)
    N = X.shape[0]
    var = S[:K] ** 2 / (N - 1)
    V = len(mirror)
    basis = (Vt[:K].T * np.sqrt(var)[None]).reshape(V, 3, K)
    # Symmetrise the components exactly (the data are symmetric up to the nearest-vertex mirror map).
    basis = 0.5 * (basis + basis[mirror])
    mean = 0.5 * (mu.reshape(V, 3) + mu.reshape(V, 3)[mirror])
    return {"mean": mean.astype(np.float32), "basis": basis.astype(np.float32), "variance": var,
            "faces_used": int(N), "faces_dropped": int((~keep).sum()) + failed,
            "photo_ids": np.array(ids, dtype=str), "model": model_name,
            "min_facing": float(config.min_facing), "outlier": float(config.outlier),
            "seen_fraction": float(seen.mean()), "imputed_fraction": float(miss.mean())}


__all__ = ["AlbedoBuildConfig", "DelitTexture", "build_albedo_basis", "build_albedo_file", "delight_sample", "engine_photos",
           "heldout_sources"]


def build_albedo_file(engine_dirs, out, config: AlbedoBuildConfig = AlbedoBuildConfig(), progress: bool = True,
                      ) -> tuple[Path, dict]:
    """`build_albedo_basis` then `models.albedo.save_albedo` to `out` (atomic). Returns (path, built)."""
    from ..models.albedo import save_albedo

    built = build_albedo_basis(engine_dirs, config, progress=progress)
    built["engines"] = np.array([str(Path(d).resolve()) for d in engine_dirs], dtype=str)
    return save_albedo(out, built), built
