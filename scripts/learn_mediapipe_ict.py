"""Learn where FaceMesh's 468 points sit on the ICT-FaceKit mesh (src/facerecon/data/ict_mediapipe468.json).

The fitter uses them as dense 2-D correspondences next to the 68 landmarks. FaceMesh's canonical
topology has no published map to ICT's, and its points follow FaceMesh's own conventions (contour
points slide with pose), so the map is learned from data:

1. aflw-lm68 crops (AFLW2000-3D excluded) with |yaw| <= --max-yaw: 3DDFA_V2+TTA landmarks on the
   detector-like box the crop implies, then a landmark-only ICT fit (the fitter's first two stages);
2. FaceMesh on the same box (cached with scripts/fit_mediapipe_68.py's cache file);
3. per FaceMesh point, the ICT vertex whose projection has the smallest mean squared distance to it
   over the MERL `train` faces (distances in face sizes), and that point's residual spread sigma
   (RMS, face sizes) over the `test` faces, which the fitter turns into its weight (1/sigma²).

  FACERECON_ASSETS=../shared/assets .venv/bin/python scripts/learn_mediapipe_ict.py \
      --data ../shared/data/aflw-lm68 --cache /tmp/mp_aflw_lm68.npz --fits /tmp/ict_fits_aflw.npz
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facerecon.api import FaceReconstructor
from facerecon.detect.pipeline import DefaultPipeline
from facerecon.io.image import Image as FImage

CROP_BOX = (120 / 1.58) * np.array([-0.5, -0.5 - 0.14, 0.5, 0.5 - 0.14]) + 60.0  # as fit_mediapipe_68.py
OUT = Path(__file__).resolve().parents[1] / "src/facerecon/data/ict_mediapipe468.json"


def face_size(pts: np.ndarray) -> np.ndarray:
    lo, hi = pts.min(1), pts.max(1)
    return np.sqrt(np.prod(hi - lo, axis=1))


def ict_fits(data: Path, names: list[str], batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(N, V, 2) every ICT vertex projected into the crop, (N, 68, 2) the 3DDFA landmarks."""
    pipe = DefaultPipeline(dense=False)  # landmark-only fits: the map must not depend on itself
    rec = FaceReconstructor(model="ict", detector=pipe)
    V, L = [], []
    t = time.time()
    for s in range(0, len(names), batch):
        imgs, faces = [], []
        for n in names[s:s + batch]:
            px = np.asarray(Image.open(data / "images" / f"{n}.jpg").convert("RGB"))
            imgs.append(FImage(px, n))
            faces.append(pipe.landmarks(px, CROP_BOX))
        for r, f in zip(rec.reconstruct_faces(imgs, faces, photometric=False), faces):
            with torch.no_grad():
                V.append(r.camera.project(r.geometry.vertices_world[0])[:, :2].numpy().astype(np.float32))
            L.append(f.lm68)
        print(f"{s + batch}/{len(names)} {time.time() - t:.0f}s", flush=True)
    return np.stack(V), np.stack(L)


def nearest_vertex(proj: np.ndarray, mesh: np.ndarray, size: np.ndarray) -> np.ndarray:
    """(468,) argmin_v mean_i |proj_i(v) - mesh_i(j)|² / size_i², accumulated per image."""
    acc = np.zeros((mesh.shape[1], proj.shape[1]))
    for P, M, s in zip(proj.astype(np.float64), mesh[..., :2].astype(np.float64), size):
        P, M = P / s, M / s
        acc += (M ** 2).sum(1)[:, None] - 2 * M @ P.T + (P ** 2).sum(1)[None, :]
    return acc.argmin(1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True, help="FaceMesh cache of fit_mediapipe_68.py")
    ap.add_argument("--fits", type=Path, required=True, help="cache for the ICT fits")
    ap.add_argument("--max-yaw", type=float, default=45.0)
    ap.add_argument("--n", type=int, default=2400)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    torch.set_num_threads(2)
    c = np.load(a.cache, allow_pickle=True)
    ok = ~np.isnan(c["mesh"][:, 0, 0]) & (np.abs(c["yaw_deg"]) <= a.max_yaw)
    idx = np.flatnonzero(ok)
    idx = np.random.default_rng(0).permutation(idx)[: a.n]
    names = [str(n) for n in c["names"][idx]]
    if a.fits.is_file():
        f = np.load(a.fits)
        assert list(f["names"]) == names, "fits cache is for other faces"
        proj, lm = f["proj"], f["lm68"]
    else:
        proj, lm = ict_fits(a.data, names)
        np.savez(a.fits, names=np.array(names), proj=proj, lm68=lm)
    mesh = c["mesh"][idx].astype(np.float64)
    size = face_size(lm)
    train = c["merl_split"][idx] == "train"
    vert = nearest_vertex(proj[train], mesh[train], size[train])
    res = (proj[~train][:, vert] - mesh[~train][..., :2]) / size[~train, None, None]  # (n, 468, 2)
    sigma = np.sqrt((res ** 2).sum(-1).mean(0) / 2)  # per-axis RMS, face sizes
    bias = np.linalg.norm(res.mean(0), axis=1)
    print(f"train {train.sum()} / held out {(~train).sum()} faces; sigma (face sizes) "
          f"min {sigma.min():.4f} median {np.median(sigma):.4f} max {sigma.max():.4f}; "
          f"max held-out bias {bias.max():.4f}")
    a.out.write_text(json.dumps({
        "about": "FaceMesh-468 point -> ICT-FaceKit vertex, and per-point residual spread (RMS per axis, "
                 "in face sizes sqrt(w*h) of the 68 landmarks) on held-out faces; scripts/learn_mediapipe_ict.py",
        "model": "ict", "max_yaw_deg": a.max_yaw, "n_train": int(train.sum()), "n_heldout": int((~train).sum()),
        "vertex": vert.tolist(), "sigma": [round(float(s), 5) for s in sigma]}) + "\n")
    print("wrote", a.out)


if __name__ == "__main__":
    main()
