"""Validation during training: 68-point NME on AFLW2000-3D (GT roi boxes) of a regressor alone."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..regress.predict import project_landmarks
from .aflw2000 import load_aflw2000, score


class AflwValidator:
    """68-point NME on AFLW2000-3D (GT roi boxes) of a regressor alone.

    The crops depend only on the detector, so they are computed once (landmarks in the detector-like box
    of the protocol roi, `bbox_from_roi_box`, as `facerecon eval aflw2000 --boxes gt` does → Deep3D
    crop) and cached in `cache` (npz; a cache made before that rule is rebuilt); each call then only
    runs the regressor.
    Returns {'nme': mean of the 3 |yaw| bins (%), 'nme_0_30', 'nme_30_60', 'nme_60_90', 'failed'}.
    """

    def __init__(self, root, cache: str | os.PathLike, model, limit: int | None = None, detector="default"):
        self.data = load_aflw2000(root)
        if limit is not None:
            self.data = self.data.subset(limit)
        self.model = model
        cache = Path(cache)
        names = np.array(self.data.names)
        if cache.is_file():
            with np.load(cache) as z:
                if list(z["names"]) == list(names) and "box_rule" in z.files:
                    self.crops, self.M_inv = z["crops"], z["M_inv"]
                    return
        self.crops, self.M_inv = self._build(detector)
        from ..io.atomic import atomic_path

        with atomic_path(cache) as tmp, open(tmp, "wb") as f:
            np.savez(f, names=names, crops=self.crops, M_inv=self.M_inv, box_rule="bbox_from_roi_box")

    def _build(self, detector):
        from ..api import FaceReconstructor, load_image
        from ..detect.crop import bbox_from_roi_box

        rec = FaceReconstructor(self.model, detector=detector, method="regress")
        n = len(self.data)
        crops = np.zeros((n, 224, 224, 3), np.uint8)
        M_inv = np.full((n, 2, 3), np.nan)
        for i in range(n):
            img = load_image(self.data.image_path(i))
            # The detector-like box of the roi, as `facerecon eval aflw2000 --boxes gt` gives it.
            face = rec.detector.landmarks(img.pixels, bbox_from_roi_box(self.data.roi_boxes[i]))
            if face is None or face.lm68 is None:
                continue
            c = rec.crop(img, face)
            crops[i], M_inv[i] = c.image, c.M_inv
        return crops, M_inv

    def __call__(self, reg) -> dict:
        params = reg.predict(self.crops)
        model = self.model.to(params.identity.device)
        lm = project_landmarks(model, params).detach().cpu().double().numpy()  # Deep3D's 224² camera
        pred = np.einsum("nij,nkj->nki", self.M_inv[:, :, :2], lm) + self.M_inv[:, None, :, 2]
        res = score(pred.astype(np.float32), self.data, method_name="regress")
        s = res.summary
        return {"nme": float(s.mean), "nme_0_30": float(s.bins[0].nme), "nme_30_60": float(s.bins[1].nme),
                "nme_60_90": float(s.bins[2].nme), "failed": int(s.failed)}


def _bin_means(values: np.ndarray, yaw: np.ndarray) -> tuple[float, float, float, float]:
    """(N,) values (NaN = failed), (N,) yaw degrees -> (bin [0,30], (30,60], >60, mean of the present bins)."""
    from .aflw2000 import summarize

    s = summarize(values, yaw)
    return s.bins[0].nme, s.bins[1].nme, s.bins[2].nme, s.mean


class AflwLm68Validator:
    """NME of a regressor alone on aflw-lm68's MERL-RAV *test* split (1,826 faces, never trained on).

    Crops: the detector-in-the-protocol-box path of `eval aflw2000 --boxes gt` (3DDFA's AFLW crops
    are its roi boxes, as AFLW2000-3D's protocol boxes are: the whole 120² crop is the roi, and one
    landmark pass of `detector` gets the detector-like box `detect.crop.bbox_from_roi_box` makes of it)
    -> 5 points -> the pipeline's 224² crop. The manual labels
    cannot give the 5 points themselves: a profile's far eye is self-occluded (no position). The crop
    transforms are cached in `cache` (npz), the crops kept in memory.

    Score: per face, the mean error over its VISIBLE points (vis68 == 1) / sqrt(w·h) of their box, %;
    `nme_nojaw` the same without the 17 jaw points (manual labels put a profile's far jaw on the
    silhouette, the model's 3-D landmarks where the 3-D face has it). Bins by |yaw| (`yaw_deg`).
    Returns {'nme' (mean of the 3 bins), 'nme_0_30', 'nme_30_60', 'nme_60_90', 'nme_nojaw' (+ bins),
    'failed'}.
    """

    def __init__(self, root, cache: str | os.PathLike | None, model, split: str = "test", limit: int | None = None,
                 detector: str = "fast"):
        root = Path(root)
        labels = root / "labels.npz"
        if not labels.is_file():
            from ..errors import FaceReconError

            raise FaceReconError(f"{labels}: missing (an aflw-lm68 folder has labels.npz and images/)")
        with np.load(labels) as z:
            sel = np.flatnonzero(z["merl_split"] == split)[:limit]
            self.names = [str(n) for n in z["names"][sel]]
            self.lm68 = z["lm68"][sel].astype(np.float64)
            self.vis68 = z["vis68"][sel]
            self.yaw = z["yaw_deg"][sel].astype(np.float64)
        self.root, self.model = root, model
        M = None
        from ..api import FaceReconstructor

        rec = FaceReconstructor(model, detector=detector, method="regress")
        # The crops follow the pipeline's landmark passes: a second pass (refine_roi) changes them.
        key = f"{detector}|bbox_from_roi_box" + ("|refine_roi" if getattr(rec.detector, "refine_roi", False) else "")
        if cache is not None and Path(cache).is_file():
            with np.load(cache) as z:
                if list(z["names"]) == self.names and "key" in z.files and str(z["key"]) == key:
                    M = z["M"]
        if M is None:
            M = self._build(rec)
            if cache is not None:
                from ..io.atomic import atomic_path

                with atomic_path(cache) as tmp, open(tmp, "wb") as f:
                    np.savez(f, names=np.array(self.names), M=M, key=np.array(key))
        self.M = M
        self.crops = self._crops()

    def _image(self, i: int) -> np.ndarray:
        from ..io.image import load_image

        return load_image(self.root / "images" / f"{self.names[i]}.jpg").pixels

    def _build(self, rec) -> np.ndarray:
        from ..detect.crop import bbox_from_roi_box
        from ..log import progress

        M = np.full((len(self.names), 2, 3), np.nan)
        with progress(total=len(self.names), desc="aflw-lm68 crops", unit="face") as bar:
            for i in range(len(self.names)):
                px = self._image(i)
                h, w = px.shape[:2]
                face = rec.detector.landmarks(px, bbox_from_roi_box([0, 0, w, h]))
                if face is not None and face.lm68 is not None:
                    from ..io.image import Image

                    M[i] = rec.crop(Image(px, name=self.names[i]), face).M
                bar.update(1)
        return M

    def _crops(self) -> np.ndarray:
        from ..geometry.transforms2d import warp_image

        crops = np.zeros((len(self.names), 224, 224, 3), np.uint8)
        for i in range(len(self.names)):
            if np.isfinite(self.M[i]).all():
                crops[i] = warp_image(self._image(i), self.M[i], 224)
        return crops

    def score(self, pred: np.ndarray) -> dict:
        """(N, 68, 2) predicted landmarks in the 120² images' pixels (NaN rows: failed) -> the metrics."""
        vis = (self.vis68 == 1) & np.isfinite(self.lm68).all(-1)
        err = np.linalg.norm(pred - np.nan_to_num(self.lm68), axis=-1)
        out = {}
        for key, pts in (("nme", vis), ("nme_nojaw", vis & (np.arange(68) >= 17))):
            vals = np.full(len(self.names), np.nan)
            for i in range(len(self.names)):
                p = self.lm68[i][vis[i]]
                if len(p) < 2 or not pts[i].any():
                    continue
                wh = p.max(0) - p.min(0)
                vals[i] = err[i][pts[i]].mean() / np.sqrt(wh[0] * wh[1]) * 100.0
            b0, b1, b2, mean = _bin_means(vals, self.yaw)
            out.update({key: mean, f"{key}_0_30": b0, f"{key}_30_60": b1, f"{key}_60_90": b2})
        out["failed"] = int((~np.isfinite(pred).all((1, 2))).sum())
        return out

    def __call__(self, reg) -> dict:
        from ..geometry.transforms2d import invert_affine

        params = reg.predict(self.crops)
        model = self.model.to(params.identity.device)
        lm = project_landmarks(model, params).detach().cpu().double().numpy()
        pred = np.full(lm.shape, np.nan)
        for i in range(len(lm)):
            if np.isfinite(self.M[i]).all():
                Mi = invert_affine(self.M[i])
                pred[i] = lm[i] @ Mi[:, :2].T + Mi[:, 2]
        return self.score(pred)


class EngineValidator:
    """3-D error of a regressor alone on a data-engine folder's 'val' split (exact 3-D labels).

    Per sample: the predicted model-space mesh (identity + expression, posed) and the sample's posed
    vertices (`vertices_world`, mm) are aligned by the least-squares similarity (3-D Umeyama: pose,
    scale and the engine camera's placement drop out), then the mean vertex distance in mm; and the
    68-landmark 2-D NME (%, all 68 points, over sqrt(w·h) of the target box) in the crop.
    Bins by the sample's |yaw|. Returns {'vertex_mm' (mean of bins), 'vertex_mm_0_30', ...,
    'lm_nme' (mean of bins), 'n'}.
    """

    def __init__(self, roots, model, split: str = "val", limit: int | None = None):
        from ..regress.engine_data import load_engine_sample, read_engine_manifest

        roots = [Path(r) for r in ([roots] if isinstance(roots, (str, Path)) else roots)]
        rows = [(r, row) for r in roots for row in read_engine_manifest(r) if row.get("split") == split][:limit]
        if not rows:
            raise ValueError(f"no '{split}' samples in {[str(r) for r in roots]}")
        self.model = model
        crops, verts, lm, yaw = [], [], [], []
        for root, row in rows:
            d = load_engine_sample(root, row)
            crops.append(d["crop"])
            verts.append(d["vertices_world"].astype(np.float32))
            lm.append(d["lm68"].astype(np.float64))
            yaw.append(float(row["yaw"]))
        self.crops, self.verts = np.stack(crops), np.stack(verts)
        self.lm68, self.yaw = np.stack(lm), np.array(yaw)

    def __call__(self, reg) -> dict:
        import torch

        from ..geometry.rotations import fit_similarity

        params = reg.predict(self.crops)
        model = self.model.to(params.identity.device)
        err = []
        with torch.no_grad():
            for s in range(0, len(self.crops), 64):
                sl = slice(s, s + 64)
                ident, expr = params.identity[sl], params.expression[sl]
                pred = model.pose(model.shape(ident, expr), params.rotation[sl], params.translation[sl]).double()
                tgt = torch.from_numpy(self.verts[sl]).to(pred)
                sc, R, t = fit_similarity(pred, tgt)
                al = sc[:, None, None] * pred @ R.transpose(1, 2) + t[:, None]
                err.append((al - tgt).norm(dim=-1).mean(-1).cpu().numpy())
        err = np.concatenate(err)
        lm = project_landmarks(model, params).detach().cpu().double().numpy()
        wh = self.lm68.max(1) - self.lm68.min(1)
        lm_nme = np.linalg.norm(lm - self.lm68, axis=-1).mean(-1) / np.sqrt(wh[:, 0] * wh[:, 1]) * 100.0
        b0, b1, b2, mean = _bin_means(err, self.yaw)
        return {"vertex_mm": mean, "vertex_mm_0_30": b0, "vertex_mm_30_60": b1, "vertex_mm_60_90": b2,
                "lm_nme": _bin_means(lm_nme, self.yaw)[3], "n": len(err)}


class Validators:
    """Several validators as one: the first one's keys as they are ('nme' picks best.pt), the others'
    under their prefix, e.g. {'nme': ..., 'engine_vertex_mm': ...}."""

    def __init__(self, primary, **others):
        self.primary, self.others = primary, others

    def __call__(self, reg) -> dict:
        out = dict(self.primary(reg))
        for name, v in self.others.items():
            out.update({f"{name}_{k}": val for k, val in v(reg).items()})
        return out
