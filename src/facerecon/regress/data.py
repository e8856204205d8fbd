"""Training data for the regressor: folders written by `facerecon preprocess` (see
`facerecon.preprocess` for the layout), with augmentation applied consistently to the image, the
mask and the landmarks.

One sample (all in 224² crop pixels, x right, y down, pixel centres at integers):
  image (3, S, S) float32 [0, 1]; mask (S, S) float32 [0, 1] (face/skin mask × valid pixels);
  lm68 (68, 2) float32 target landmarks; lm_w (68,) float32 per-point weight (0 = ignore);
  photo_w () float32 weight of the photometric loss for this item's dataset;
  index () int64 global item index (for pseudo-labels); gt () 1 when lm68 are manual labels;
  parts (S, S) int64 part label map (0 none, k + 1 for part k), only with `parts=True`: read from
  ROOT/parts/NAME.png, the face parser's map cached per item (`cache_part_maps`); all 0 when absent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..geometry.landmarks import IBUG68_MIRROR
from ..io.atomic import read_jsonl


@dataclass(frozen=True)
class Augment:
    """Random similarity + colour jitter. shift: px (uniform ±); scale: relative (uniform ±);
    rotate: degrees (uniform ±); brightness/contrast/saturation: relative (uniform ±);
    flip: probability of a horizontal mirror (landmarks re-indexed to stay in iBUG order)."""

    shift: float = 8.0
    scale: float = 0.06
    rotate: float = 8.0
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    flip: float = 0.5


# iBUG-68 mirror permutation (0-based): point i of the flipped face is point FLIP_68[i] of the original.
FLIP_68 = IBUG68_MIRROR
# Part labels under a mirror (label maps: 0 none, k + 1 for part k of models.annotations.PART_NAMES):
# right and left eye (1, 2) and brow (3, 4) swap.
PART_MIRROR = torch.tensor([0, 2, 1, 4, 3, 5, 6, 7, 8])


def part_map_path(root: Path, name: str) -> Path:
    """Where an item's cached part label map lives: ROOT/parts/NAME.png (8-bit, 0 none, k + 1 part k)."""
    return Path(root) / "parts" / f"{name}.png"


def cache_part_maps(dataset: PreprocessedDataset, parser, batch: int = 16, show: bool = True) -> int:
    """Run `parser` (`parse(crops (B, S, S, 3) uint8) -> (B, S, S) uint8`) on every item's crop that has
    no cached part map yet and write ROOT/parts/NAME.png atomically. Returns the number written."""
    from PIL import Image as PILImage

    from ..io.atomic import atomic_path
    from ..log import progress

    todo = [(root, name) for root, name, _ in dataset.items if not part_map_path(root, name).is_file()]
    with progress(total=len(todo), show=show and bool(todo), desc="part maps", unit="crop") as bar:
        for s in range(0, len(todo), batch):
            chunk = todo[s:s + batch]
            crops = np.stack([_read_png(r / "crops" / f"{n}.png")[..., :3] for r, n in chunk])
            maps = np.asarray(parser.parse(crops), np.uint8)
            for (r, n), m in zip(chunk, maps):
                with atomic_path(part_map_path(r, n)) as tmp:
                    PILImage.fromarray(m).save(tmp, format="PNG")
            bar.update(len(chunk))
    return len(todo)


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image as PILImage

    with PILImage.open(path) as im:
        return np.asarray(im)


class PreprocessedDataset(torch.utils.data.Dataset):
    """Items with status 'ok' of one or more preprocessed folders.

    roots: dataset folders; photo_weights: per-root photometric weight (e.g. 0 for a
    landmark-only source); augment: an `Augment` or None (validation: no change).
    Landmarks (`landmarks`): "gt" uses manual `lm68_gt` where the item has them (weight 1 for
    visible and externally occluded points, 0 for self-occluded/NaN ones), else the detector's;
    "detector" always uses the detector's `lm68` (weighted by its `lm68_conf` when stored). The
    detector (3DDFA_V2) places self-occluded jaw points where the 3D face has them, as AFLW2000-3D
    and the fitter do; manual labels put them on the visible silhouette.
    """

    def __init__(self, roots, photo_weights=None, augment: Augment | None = Augment(), seed: int = 0,
                 landmarks: str = "gt", parts: bool = False):
        if landmarks not in ("gt", "detector"):
            raise ValueError(f"landmarks must be 'gt' or 'detector', got '{landmarks}'")
        self.landmarks = landmarks
        roots = [Path(r) for r in ([roots] if isinstance(roots, (str, Path)) else roots)]
        photo_weights = photo_weights or [1.0] * len(roots)
        if len(photo_weights) != len(roots):
            raise ValueError("one photo weight per dataset folder")
        self.items: list[tuple[Path, str, float]] = []
        for root, pw in zip(roots, photo_weights):
            man = root / "manifest.jsonl"
            if not man.is_file():
                raise FileNotFoundError(f"{root}: no manifest.jsonl (run `facerecon preprocess ... -o {root}`)")
            names = [e["name"] for e in read_jsonl(man) if e.get("status") == "ok"]
            self.items += [(root, n, float(pw)) for n in dict.fromkeys(names)]
        self.augment = augment
        self.seed = seed
        self.parts = parts

    def __len__(self) -> int:
        return len(self.items)

    def name(self, i: int) -> str:
        return self.items[i][1]

    def load(self, i: int) -> dict:
        """Unaugmented numpy arrays of item i: crop (S,S,3) uint8, mask (S,S) float32, lm68, lm_w, gt."""
        root, name, pw = self.items[i]
        crop = _read_png(root / "crops" / f"{name}.png")
        mask = _read_png(root / "masks" / f"{name}.png").astype(np.float32) / 255.0
        with np.load(root / "items" / f"{name}.npz") as z:
            if "lm68_gt" in z.files and self.landmarks == "gt":
                lm = z["lm68_gt"].astype(np.float32)
                vis = z["vis68_gt"]
                w = ((vis >= 0) & np.isfinite(lm).all(1)).astype(np.float32)
                gt = 1
            else:
                lm = z["lm68"].astype(np.float32)
                w = z["lm68_conf"].astype(np.float32) if "lm68_conf" in z.files else np.ones(68, np.float32)
                gt = 0
        lm = np.nan_to_num(lm, nan=0.0)
        out = {"crop": crop, "mask": mask, "lm68": lm, "lm_w": w, "photo_w": pw, "gt": gt}
        if self.parts:
            pp = part_map_path(root, name)
            out["parts"] = _read_png(pp) if pp.is_file() else np.zeros(crop.shape[:2], np.uint8)
        return out

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """key: an index (augmentation from the global RNG) or (index, epoch) (augmentation drawn
        from a generator seeded by seed, epoch and index: the same in any process, on resume)."""
        gen = None
        if isinstance(key, tuple):
            i, epoch = int(key[0]), int(key[1])
            gen = torch.Generator().manual_seed(((self.seed * 1_000_003 + epoch) * 10_000_019 + i) % (1 << 63))
        else:
            i = int(key)
        d = self.load(i)
        img = torch.from_numpy(np.array(d["crop"])).permute(2, 0, 1).float() / 255.0
        mask = torch.from_numpy(d["mask"])[None]
        lm = torch.from_numpy(d["lm68"])
        w = torch.from_numpy(d["lm_w"])
        parts = torch.from_numpy(d["parts"].astype(np.int64))[None] if self.parts else None
        if self.augment is not None:
            img, mask, lm, w, *rest = augment_sample(img, mask, lm, w, self.augment, generator=gen, parts=parts)
            parts = rest[0] if rest else None
        out = {"image": img, "mask": mask[0], "lm68": lm, "lm_w": w,
               "photo_w": torch.tensor(d["photo_w"], dtype=torch.float32),
               "gt": torch.tensor(d["gt"]), "index": torch.tensor(i)}
        if parts is not None:
            out["parts"] = parts[0]
        return out


def draw_augment(aug: Augment, S: int, generator: torch.Generator | None = None):
    """One random draw of `aug` for an (S, S) crop: (flip, A (2, 2) float64, b (2,) float64, colour
    (saturation, contrast, brightness) relative changes). The forward map, source px -> output px, is
    p' = A p + b with A = s R diag(±1, 1) about the crop centre (the mirror folded into A, so a
    flipped face stays where it was). Every augmentation draws through here, in this order, so a
    seeded generator gives photo and engine items the same stream."""
    def u(a):
        return (torch.rand((), generator=generator).item() * 2 - 1) * a

    flip = torch.rand((), generator=generator).item() < aug.flip
    s = 1.0 + u(aug.scale)
    th = math.radians(u(aug.rotate))
    c = (S - 1) / 2.0
    tx, ty = u(aug.shift), u(aug.shift)
    fx = -1.0 if flip else 1.0
    R = torch.tensor([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]], dtype=torch.float64)
    A = s * R @ torch.diag(torch.tensor([fx, 1.0], dtype=torch.float64))
    src_c = torch.tensor([c, c], dtype=torch.float64)
    b = src_c + torch.tensor([tx, ty], dtype=torch.float64) - A @ src_c
    return flip, A, b, (u(aug.saturation), u(aug.contrast), u(aug.brightness))


def warp_and_jitter(img: torch.Tensor, mask: torch.Tensor, A: torch.Tensor, b: torch.Tensor, colour):
    """The image (3, S, S) and mask (1, S, S) through the forward map p' = A p + b of `draw_augment`
    (bilinear; pixels from outside the crop black in the image and 0 in the mask), then the image's
    colour jitter (saturation about grey, contrast about the mean, brightness). Returns (img, mask,
    grid (1, S, S, 2): the sampling grid, for other maps warped alike)."""
    S = img.shape[-1]
    inv = torch.linalg.inv(A)
    # grid_sample (align_corners=True): output px -> source px -> [-1, 1].
    ys, xs = torch.meshgrid(torch.arange(S, dtype=torch.float64), torch.arange(S, dtype=torch.float64),
                            indexing="ij")
    src = (torch.stack([xs, ys], -1).reshape(-1, 2) - b) @ inv.T
    grid = (src * (2.0 / (S - 1)) - 1.0).reshape(1, S, S, 2).float()
    stack = torch.cat([img, mask, torch.ones_like(mask)], 0)[None]
    warped = F.grid_sample(stack, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
    img, mask = warped[:3], (warped[3:4] * (warped[4:5] > 0.999)).clamp(0.0, 1.0)
    sat, con, bri = colour
    grey = img.mean(0, keepdim=True)
    img = grey + (img - grey) * (1.0 + sat)
    img = img.mean() + (img - img.mean()) * (1.0 + con)
    img = (img * (1.0 + bri)).clamp(0.0, 1.0)
    return img, mask, grid


def augment_sample(img: torch.Tensor, mask: torch.Tensor, lm: torch.Tensor, w: torch.Tensor, aug: Augment,
                   generator: torch.Generator | None = None, parts: torch.Tensor | None = None):
    """Apply one random similarity (+ optional mirror) to image (3,S,S), mask (1,S,S) and
    landmarks (68,2) alike, then colour jitter to the image. Pixels that come from outside the
    crop are black in the image and 0 in the mask (so no loss is taken on them).
    parts: optional (1,S,S) integer part label map, warped alike (nearest pixel; 0 outside) with
    right and left parts swapped by the mirror; returned as a fifth value when given."""
    S = img.shape[-1]
    flip, A_lin, b, (sat, con, bri) = draw_augment(aug, S, generator)
    lm2 = (lm.double() @ A_lin.T + b).float()
    if flip:
        lm2, w = lm2[FLIP_68], w[FLIP_68]
    img, mask, grid = warp_and_jitter(img, mask, A_lin, b, (sat, con, bri))
    if parts is None:
        return img.contiguous(), mask.contiguous(), lm2.contiguous(), w.contiguous()
    pw = F.grid_sample(parts[None].to(grid.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=True)
    pw = pw[0].round().long()
    if flip:
        pw = PART_MIRROR.to(pw.device)[pw]
    return img.contiguous(), mask.contiguous(), lm2.contiguous(), w.contiguous(), pw.contiguous()


def load_pseudo_labels(path, dataset: PreprocessedDataset, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo-label file (npz: names (N,) str, params (N, dim) flat vectors in the model's layout,
    e.g. `layout.join(Fitter(...).fit(...).params)`) -> (targets (len(dataset), dim), have (len,) bool)
    aligned with the dataset's items by name."""
    with np.load(path) as z:
        names = [str(n) for n in z["names"]]
        vec = z["params"].astype(np.float32)
    if vec.shape[1] != dim:
        raise ValueError(f"{path}: pseudo-labels have {vec.shape[1]} values per item, the layout {dim}")
    idx = {n: i for i, n in enumerate(names)}
    out = torch.zeros(len(dataset), dim)
    have = torch.zeros(len(dataset), dtype=torch.bool)
    for j in range(len(dataset)):
        i = idx.get(dataset.name(j))
        if i is not None:
            out[j] = torch.from_numpy(vec[i])
            have[j] = True
    return out, have


__all__ = [
    "FLIP_68",
    "PART_MIRROR",
    "Augment",
    "PreprocessedDataset",
    "augment_sample",
    "cache_part_maps",
    "draw_augment",
    "load_pseudo_labels",
    "part_map_path",
]
