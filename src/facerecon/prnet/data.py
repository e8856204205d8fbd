"""Training pairs from the data engine's samples (`facerecon dataset build` folders): crop -> map.

Each manifest row with "status" ok and the wanted "split" is one item: its 224² crop (JPEG) and its
`vertices_px` / `camera` (docs/dataset.md, `dataset.store.SAMPLE_KEYS`, read here with numpy so this
layer does not import the data engine). The target is the sample's position map (`prnet.uv`).

Augmentation (training only) keeps image and map consistent: a small similarity about the crop centre
(rotation ±`rot_deg`, scale ±`scale`, shift ±`shift_px`) moves the image and the map's x, y alike, and
scales z about S / 2 by the same factor (the map's z is in the same pixel scale as x, y); colour: a
per-channel gain, brightness and contrast jitter and, sometimes, greyscale. No mirroring (it would
need the UV layout's mirror map).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import FaceReconError
from ..geometry.camera import PerspectiveCamera
from ..io.atomic import read_jsonl
from .uv import CROP_SIZE, UVLayout, positions_from_screen, render_map


def camera_from_array(c) -> PerspectiveCamera:
    """The engine's (7,) camera: focal px, cx, cy, width, height, distance mm, near mm."""
    c = np.asarray(c, np.float64)
    return PerspectiveCamera(float(c[0]), float(c[1]), float(c[2]), int(c[3]), int(c[4]), float(c[5]), float(c[6]))


def engine_rows(roots, split: str | None) -> list[tuple[Path, dict]]:
    """(root, manifest row) of every ok sample of `split` (None: all) in the engine folders `roots`."""
    out = []
    for root in roots:
        root = Path(root)
        man = root / "manifest.jsonl"
        if not man.is_file():
            raise FaceReconError(f"{root}: not a data-engine folder (no manifest.jsonl)")
        # read_jsonl skips a torn last line of an interrupted build
        out += [(root, r) for r in read_jsonl(man)
                if r.get("status") == "ok" and (split is None or r.get("split") == split)]
    return out


@dataclass(frozen=True)
class Augment:
    rot_deg: float = 10.0
    scale: float = 0.06
    shift_px: float = 8.0
    gain: float = 0.15
    brightness: float = 0.12
    contrast: float = 0.2
    grey_p: float = 0.1


def similarity_about_centre(angle: float, scale: float, shift: tuple[float, float], size: int = CROP_SIZE
                            ) -> np.ndarray:
    """(2, 3) forward map of crop pixels: rotate by `angle` rad and scale about the centre, then shift."""
    c = (size - 1) / 2.0
    ca, sa = math.cos(angle) * scale, math.sin(angle) * scale
    A = np.array([[ca, -sa], [sa, ca]])
    t = np.array([c, c]) + np.asarray(shift) - A @ np.array([c, c])
    return np.concatenate([A, t[:, None]], 1)


def warp_image(image: np.ndarray, M: np.ndarray) -> np.ndarray:
    """(S, S, 3) uint8 warped by the forward similarity M (2, 3) (bilinear, edge pixels replicated)."""
    from PIL import Image as PILImage

    A = M[:, :2]
    Ai = np.array([[A[1, 1], -A[0, 1]], [-A[1, 0], A[0, 0]]]) / (A[0, 0] * A[1, 1] - A[0, 1] * A[1, 0])
    inv = np.concatenate([Ai, -(Ai @ M[:, 2])[:, None]], 1)
    # PIL's affine takes output -> input in a pixel-corner convention; ours has centres at integers.
    a, b, c = inv[0]
    d, e, f = inv[1]
    c = c + 0.5 * (a + b) - 0.5
    f = f + 0.5 * (d + e) - 0.5
    img = PILImage.fromarray(image)
    return np.asarray(img.transform(img.size, PILImage.AFFINE, (a, b, c, d, e, f), resample=PILImage.BILINEAR))


class EngineMaps(Dataset):
    """(image (3, R, R) float [0, 1], map (3, R, R) float32 crop px, index) pairs of engine samples.

    roots: engine folders; split 'train' | 'val' | None; layout: `uv_layout(model, R)`;
    augment: an `Augment` (training) or None. `target(i)` gives a sample's untouched labels
    (positions (V, 3), camera, vertices_world (V, 3) mm, lm68 (68, 2) crop px) for validation.
    """

    def __init__(self, roots, split: str | None, layout: UVLayout, augment: Augment | None = None, seed: int = 0,
                 limit: int | None = None):
        self.rows = engine_rows(roots, split)
        if limit is not None:
            # An even spread over the photos rather than the first few photos' views.
            idx = np.linspace(0, len(self.rows) - 1, min(limit, len(self.rows))).round().astype(int)
            self.rows = [self.rows[i] for i in np.unique(idx)]
        if not self.rows:
            raise FaceReconError(f"no '{split}' samples in {', '.join(map(str, roots))}")
        self.layout = layout
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.rows)

    def _load(self, i: int):
        from PIL import Image as PILImage

        root, r = self.rows[i]
        try:
            img = np.array(PILImage.open(root / r["image"]).convert("RGB"))
            with np.load(root / r["sample"], allow_pickle=False) as z:
                lab = {k: z[k] for k in ("vertices_px", "camera", "vertices_world", "lm68")}
        except (OSError, KeyError, ValueError) as e:
            raise FaceReconError(f"{root / r['sample']}: cannot read the engine sample ({e})") from None
        return img, lab

    def target(self, i: int) -> dict:
        _, lab = self._load(i)
        cam = camera_from_array(lab["camera"])
        pos = positions_from_screen(torch.as_tensor(lab["vertices_px"], dtype=torch.float64)[None], cam)[0]
        return {"positions": pos, "camera": cam, "vertices_world": torch.as_tensor(lab["vertices_world"]).double(),
                "lm68": torch.as_tensor(lab["lm68"]).double()}

    def __getitem__(self, i: int):
        img, lab = self._load(i)
        cam = camera_from_array(lab["camera"])
        pos = positions_from_screen(torch.as_tensor(lab["vertices_px"], dtype=torch.float32)[None], cam)[0]
        S = img.shape[0]
        if self.augment is not None:
            a = self.augment
            rng = np.random.default_rng((self.seed, self.epoch, i))
            ang = math.radians(rng.uniform(-a.rot_deg, a.rot_deg))
            sc = 1.0 + rng.uniform(-a.scale, a.scale)
            M = similarity_about_centre(ang, sc, tuple(rng.uniform(-a.shift_px, a.shift_px, 2)), S)
            img = warp_image(img, M)
            Mt = torch.as_tensor(M, dtype=pos.dtype)
            xy = pos[:, :2] @ Mt[:, :2].T + Mt[:, 2]
            pos = torch.cat([xy, ((pos[:, 2] - S / 2.0) * sc + S / 2.0)[:, None]], 1)
            x = img.astype(np.float32) / 255.0
            x = x * (1.0 + rng.uniform(-a.gain, a.gain, 3)).astype(np.float32)
            m = x.mean()
            x = (x - m) * (1.0 + rng.uniform(-a.contrast, a.contrast)) + m + rng.uniform(-a.brightness, a.brightness)
            if rng.random() < a.grey_p:
                x = np.repeat(x.mean(2, keepdims=True), 3, 2)
            img = (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        from .model import crops_to_input

        x = crops_to_input(img[None], self.layout.size)[0]
        target = render_map(self.layout, pos[None])[0]
        return x, target, i


__all__ = ["Augment", "EngineMaps", "camera_from_array", "engine_rows", "similarity_about_centre", "warp_image"]
