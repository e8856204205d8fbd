"""Validation during training: 68-point NME on AFLW2000-3D (GT roi boxes) of a regressor alone."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..regress.predict import project_landmarks
from .aflw2000 import load_aflw2000, score


class AflwValidator:
    """68-point NME on AFLW2000-3D (GT roi boxes) of a regressor alone.

    The crops depend only on the detector, so they are computed once (landmarks in the protocol box
    → Deep3D crop) and cached in `cache` (npz); each call then only runs the regressor.
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
                if list(z["names"]) == list(names):
                    self.crops, self.M_inv = z["crops"], z["M_inv"]
                    return
        self.crops, self.M_inv = self._build(detector)
        from ..io.atomic import atomic_path

        with atomic_path(cache) as tmp, open(tmp, "wb") as f:
            np.savez(f, names=names, crops=self.crops, M_inv=self.M_inv)

    def _build(self, detector):
        from ..api import FaceReconstructor, load_image

        rec = FaceReconstructor(self.model, detector=detector, method="regress")
        n = len(self.data)
        crops = np.zeros((n, 224, 224, 3), np.uint8)
        M_inv = np.full((n, 2, 3), np.nan)
        for i in range(n):
            img = load_image(self.data.image_path(i))
            face = rec.detector.landmarks(img.pixels, np.asarray(self.data.roi_boxes[i], np.float32))
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
