"""Training pairs for VRN from data-engine folders (`facerecon dataset build`): crop image -> volume.

Each engine sample (`dataset.store.SAMPLE_KEYS`) holds its 224² crop (JPEG) and the posed face
(`vertices_px`: crop x, y px, depth mm); the target volume is voxelised on the fly (`voxel.py`,
milliseconds), so augmentation moves the image and the mesh together before the mesh is
voxelised: the volume is always exactly the augmented image's.

Augmentation (training): a similarity about the crop centre (scale, shift; z scaled like x, y so
the face keeps its shape), a left-right flip (mirroring the mesh mirrors the volume), and colour
(per-channel gain, brightness, contrast).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..errors import FaceReconError
from ..geometry.transforms2d import compose, warp_image
from ..io.atomic import read_jsonl
from .voxel import REDUCED, VoxelSpec, voxelize


def read_rows(root: str | Path) -> list[dict]:
    """The "ok" sample lines of ROOT/manifest.jsonl (a torn last line, from a crash mid-write, is skipped)."""
    path = Path(root) / "manifest.jsonl"
    if not path.is_file():
        raise FaceReconError(f"{root}: not a data-engine folder (no manifest.jsonl); build one with "
                             "`facerecon dataset build`")
    return [r for r in read_jsonl(path) if r.get("status") == "ok" and "sample" in r]


def engine_items(roots, split: str | None = "train") -> list[tuple[Path, dict]]:
    """(root, manifest row) of every ok sample of `split` ('train' | 'val' | None = all) in the folders."""
    out = []
    for root in roots:
        out += [(Path(root), r) for r in read_rows(root) if split is None or r.get("split") == split]
    return out


def load_sample(path) -> dict:
    """A sample .npz as a dict (0-d arrays as Python scalars); the engine's format, read-only."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: (z[k].item() if z[k].ndim == 0 else z[k]) for k in z.files}
    except (OSError, ValueError) as e:
        raise FaceReconError(f"{path}: unreadable engine sample ({e})") from None


def sample_camera(sample: dict):
    """The view's own crop camera (`PerspectiveCamera`): each engine view is re-cropped, so its focal
    length and principal point differ from Deep3D's."""
    from ..geometry.camera import PerspectiveCamera

    c = np.asarray(sample["camera"], np.float64)
    return PerspectiveCamera(float(c[0]), float(c[1]), float(c[2]), int(c[3]), int(c[4]), float(c[5]), float(c[6]))


def load_image(path) -> np.ndarray:
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as e:
        raise FaceReconError(f"{path}: unreadable crop image ({e})") from None


@lru_cache(maxsize=4)
def model_faces(name: str) -> np.ndarray:
    """(F, 3) int64 triangles of a morphable model by its `MorphableModel.name` ("ict-face", "bfm", ...)."""
    return load_named_model(name).faces.numpy().astype(np.int64)


@lru_cache(maxsize=2)
def load_named_model(name: str):
    """The MorphableModel whose `.name` is `name` (a sample's "model": "ict-<variant>" or "bfm")."""
    from ..models import load_model

    family, _, variant = str(name).partition("-")
    try:
        return load_model(family, variant or None)
    except ValueError as e:
        raise FaceReconError(f"sample model {name!r}: {e}") from None


def crop_to_grid(spec: VoxelSpec) -> np.ndarray:
    """(2, 3) crop px -> grid px (resampling 224² to size², pixel centres at integers)."""
    s = spec.scale
    return np.array([[s, 0.0, 0.5 * s - 0.5], [0.0, s, 0.5 * s - 0.5]])


def random_similarity(rng: np.random.Generator, size: int, scale: float, shift: float, flip: bool) -> np.ndarray:
    """(2, 3) grid px -> grid px: scale in [1 - scale, 1 + scale] about the centre, shift ± `shift` px,
    optionally mirrored (x -> size - 1 - x)."""
    c = (size - 1) / 2.0
    a = 1.0 + rng.uniform(-scale, scale)
    tx, ty = rng.uniform(-shift, shift, 2)
    sx = -a if flip else a
    return np.array([[sx, 0.0, c - sx * c + tx], [0.0, a, c - a * c + ty]])


def grid_vertices(vertices_px: np.ndarray, M: np.ndarray, spec: VoxelSpec) -> tuple[np.ndarray, float]:
    """Crop vertices (V, 3: x px, y px, depth mm) -> grid (V, 3) under the crop->grid similarity `M`
    (z in slices, scaled like x, y); and the depth (mm) at slice `margin` (the front-most vertex)."""
    v = np.asarray(vertices_px, np.float64)
    a = float(np.hypot(M[0, 0], M[1, 0]))  # the similarity's scale (a mirror keeps it)
    g = np.empty_like(v)
    g[:, :2] = v[:, :2] @ M[:, :2].T + M[:, 2]
    front = float(v[:, 2].min())
    g[:, 2] = (v[:, 2] - front) * spec.focal_px / spec.distance_mm * a + spec.margin
    return g, front


def colour_jitter(img: np.ndarray, rng: np.random.Generator, amount: float = 0.2) -> np.ndarray:
    """(H, W, 3) float [0, 1] -> the same with random per-channel gain, brightness and contrast."""
    gain = 1.0 + rng.uniform(-amount, amount, 3)
    bright = rng.uniform(-amount, amount) * 0.5
    contrast = 1.0 + rng.uniform(-amount, amount)
    m = img.mean()
    return np.clip((img * gain - m) * contrast + m + bright, 0.0, 1.0)


class EngineVolumes(torch.utils.data.Dataset):
    """Engine samples as VRN pairs.

    roots: engine folders; split: 'train' | 'val' | None (all); spec: the volume's geometry;
    augment: random similarity + flip + colour (seeded per item and epoch by `seed` and `set_epoch`);
    limit: the first N items only.

    Item: {"image": (3, size, size) float32 in [0, 1], "volume": (D, size, size) uint8,
    "index": int}.
    """

    def __init__(self, roots, split: str | None = "train", spec: VoxelSpec = REDUCED, augment: bool = False,
                 seed: int = 0, limit: int | None = None, scale: float = 0.06, shift: float = 0.04):
        self.items = engine_items([roots] if isinstance(roots, (str, Path)) else roots, split)
        if limit:
            self.items = self.items[:limit]
        if not self.items:
            raise FaceReconError(f"no '{split}' samples in {roots}")
        self.spec, self.augment, self.seed, self.epoch = spec, augment, seed, 0
        self.scale, self.shift = scale, shift * spec.size

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def sample(self, i: int) -> dict:
        root, row = self.items[i]
        return load_sample(root / row["sample"])

    def image_path(self, i: int) -> Path:
        root, row = self.items[i]
        return root / row["image"]

    def __getitem__(self, i: int) -> dict:
        s = self.sample(i)
        img = load_image(self.image_path(i))
        spec = self.spec
        M = crop_to_grid(spec)
        rng = np.random.default_rng([self.seed, self.epoch, i])
        if self.augment:
            M = compose(random_similarity(rng, spec.size, self.scale, self.shift, bool(rng.random() < 0.5)), M)
        x = warp_image(img, M, spec.size).astype(np.float32) / 255.0
        if self.augment:
            x = colour_jitter(x, rng).astype(np.float32)
        g, _ = grid_vertices(s["vertices_px"], M, spec)
        vol = voxelize(g, model_faces(str(s["model"])), spec, fill="plane")
        return {"image": torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))),
                "volume": torch.from_numpy(vol), "index": i}


__all__ = [
    "EngineVolumes",
    "colour_jitter",
    "crop_to_grid",
    "engine_items",
    "grid_vertices",
    "load_image",
    "load_named_model",
    "load_sample",
    "model_faces",
    "random_similarity",
    "read_rows",
    "sample_camera",
]
