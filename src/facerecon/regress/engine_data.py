"""Training data from the face-profiling engine (`facerecon dataset build` folders), with 3-D targets.

An engine folder holds OUT/manifest.jsonl, OUT/images/<id>_v<k>.jpg (224² crops aligned like the
pipeline's) and OUT/samples/<id>_v<k>.npz (`facerecon.dataset.store.SAMPLE_KEYS`). This module reads
that format itself (numpy + Pillow): the data engine sits in a higher layer than the regressor.

One item has the keys of `regress.data.PreprocessedDataset` (image, mask, lm68, lm_w, photo_w, gt,
index) plus the 3-D targets, all in 224² crop pixels (x right, y down, centres at integers):
  vertices_px (N, 3) float32: x px, y px, depth mm (distance along the view axis: the camera's
      `camera_to_screen` depth) of the `vertex_index` subsample of the posed mesh. Depth is stored as
      the engine wrote it; the loss compares depths relative to their mean over the subsample, since
      the engine's view camera (a scaled, shifted crop camera) places the head at another distance
      than the regressor's fixed Deep3D camera would for the same crop. A 2-D similarity leaves these
      relative depths unchanged (an image scaled by s is the same head s× closer, to first order), so
      the augmentation moves x, y with the image and keeps depth; a mirror permutes the vertices by
      the model's mirror map.
  has3d () float32 1 (0 for photo items in `MixedDataset`);
  params (D,) float32 the sample's flat parameters (layout order), identity and expression as
      the engine fitted them, the expression's left/right ARKit pairs swapped under a mirror;
  param_w (2,) float32 weights of the identity and expression parameter targets: identity has no
      mirror in the ICT basis, so a mirrored item's identity target is switched off (0).
Landmarks: the sample's 68 model landmarks (the 3-D convention of AFLW2000-3D), all weighted 1,
self-occluded ones and ones outside the crop included (they have exact positions).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..io.atomic import read_jsonl
from ..models.annotations import mirror_vertices
from ..models.mirror import expression_mirror
from .data import FLIP_68, Augment, draw_augment, warp_and_jitter

#: Default vertex subsample of the 3-D loss: every `VERTEX_STRIDE`-th model vertex (ICT face: 9,409
#: vertices -> 2,353), enough for the loss (neighbouring vertices are ~2 mm apart) at a quarter of the
#: collation and loss cost.
VERTEX_STRIDE = 4


def read_engine_manifest(root: Path) -> list[dict]:
    """The 'ok' sample lines of ROOT/manifest.jsonl (a torn last line is skipped)."""
    man = Path(root) / "manifest.jsonl"
    if not man.is_file():
        raise FileNotFoundError(f"{root}: no manifest.jsonl (not a `facerecon dataset build` folder)")
    return [r for r in read_jsonl(man) if r.get("status") == "ok"]


def load_engine_sample(root: Path, row: dict) -> dict:
    """A sample's arrays (numpy) and its crop (S, S, 3) uint8 under key 'crop'."""
    from PIL import Image as PILImage

    with np.load(Path(root) / row["sample"], allow_pickle=False) as z:
        out = {k: z[k] for k in z.files if k in ("params", "layout", "vertices_px", "vertices_world", "lm68",
                                                   "vis68", "mask", "rotation", "camera")}
    with PILImage.open(Path(root) / row["image"]) as im:
        out["crop"] = np.asarray(im.convert("RGB"))
    return out


class EngineDataset(torch.utils.data.Dataset):
    """'ok' samples of one or more engine folders in the given split(s).

    roots: engine folders; model: the MorphableModel the samples were fitted with (its layout, mirror
    map and expression names); split: 'train', 'val' or None (all); augment: an `Augment` or None;
    photo_weight: the photometric loss weight of these items (0 = off; see regress/train.py);
    vertex_index: model vertices of the 3-D targets (default every `VERTEX_STRIDE`-th).
    Keys as `PreprocessedDataset`: an index, or (index, epoch) for a seeded augmentation.
    """

    def __init__(self, roots, model, split: str | None = "train", augment: Augment | None = Augment(),  # noqa: B008
                 seed: int = 0, photo_weight: float = 0.0, vertex_index=None):
        roots = [Path(r) for r in ([roots] if isinstance(roots, (str, Path)) else roots)]
        self.items: list[tuple[Path, dict]] = []
        dim = model.layout.dim
        for root in roots:
            for r in read_engine_manifest(root):
                if split is None or r.get("split") == split:
                    self.items.append((root, r))
        self.layout = model.layout
        self.dim = dim
        V = model.mean_shape.shape[0]
        self.vertex_index = (np.arange(0, V, VERTEX_STRIDE) if vertex_index is None
                             else np.asarray(vertex_index, np.int64))
        self.mirror = mirror_vertices(model.mean_shape)
        self.exp_mirror = torch.from_numpy(expression_mirror(getattr(model, "expression_names", [])
                                                             or range(model.layout.n_expression)))
        self.augment = augment
        self.seed = seed
        self.photo_weight = float(photo_weight)

    def __len__(self) -> int:
        return len(self.items)

    def name(self, i: int) -> str:
        return "engine:" + self.items[i][1]["sample"]

    def yaw_deg(self, i: int) -> float:
        return float(self.items[i][1].get("yaw", float("nan")))

    def load(self, i: int) -> dict:
        root, row = self.items[i]
        d = load_engine_sample(root, row)
        if d["params"].shape != (self.dim,):
            raise ValueError(f"{root / row['sample']}: params {d['params'].shape}, the layout has {self.dim}")
        return d

    def __getitem__(self, key) -> dict:
        gen = None
        if isinstance(key, tuple):
            i, epoch = int(key[0]), int(key[1])
            gen = torch.Generator().manual_seed(((self.seed * 1_000_003 + epoch) * 10_000_019 + i + 7) % (1 << 63))
        else:
            i = int(key)
        d = self.load(i)
        img = torch.from_numpy(np.array(d["crop"])).permute(2, 0, 1).float() / 255.0
        mask = torch.from_numpy(d["mask"].astype(np.float32))[None]
        lm = torch.from_numpy(d["lm68"].astype(np.float32))
        w = torch.ones(68)
        verts = torch.from_numpy(d["vertices_px"].astype(np.float32))
        params = torch.from_numpy(d["params"].astype(np.float32))
        flip = False
        if self.augment is not None:
            img, mask, lm, w, verts, flip = augment_engine(img, mask, lm, w, verts, self.mirror, self.augment, gen)
        verts = verts[torch.from_numpy(self.vertex_index)]
        param_w = torch.tensor([0.0 if flip else 1.0, 1.0])
        if flip:
            p = self.layout.split(params[None])
            exp = p.expression[0][self.exp_mirror]
            params = params.clone()
            params[self.layout.slices()["expression"]] = exp
        return {"image": img, "mask": mask[0], "lm68": lm, "lm_w": w,
                "photo_w": torch.tensor(self.photo_weight, dtype=torch.float32), "gt": torch.tensor(0),
                "index": torch.tensor(i), "vertices_px": verts, "has3d": torch.tensor(1.0),
                "params": params, "param_w": param_w}


def augment_engine(img, mask, lm, w, verts, mirror: np.ndarray, aug: Augment, generator=None):
    """One random similarity (+ mirror) applied alike to image (3,S,S), mask (1,S,S), landmarks (68,2)
    and vertices (V,3) (x, y moved, depth kept), then colour jitter. Returns
    (img, mask, lm, w, verts, flipped). Vertex i of a mirrored face is vertex mirror[i] of the
    original (and landmark i is landmark FLIP_68[i]), so the targets stay in model order."""
    S = img.shape[-1]
    flip, A, b, (sat, con, bri) = draw_augment(aug, S, generator)
    lm2 = (lm.double() @ A.T + b).float()
    xy = (verts[:, :2].double() @ A.T + b).float()
    v2 = torch.cat([xy, verts[:, 2:]], 1)
    if flip:
        lm2, w = lm2[FLIP_68], w[FLIP_68]
        v2 = v2[torch.from_numpy(mirror)]
    img, mask, _ = warp_and_jitter(img, mask, A, b, (sat, con, bri))
    return img.contiguous(), mask.contiguous(), lm2.contiguous(), w.contiguous(), v2.contiguous(), flip


class MixedDataset(torch.utils.data.Dataset):
    """Photo items (`PreprocessedDataset`) and engine items (`EngineDataset`) as one dataset: indices
    [0, len(photo)) are photo items, the rest engine items. Photo items get zero 3-D targets with
    has3d = 0 and param_w = 0 so that both kinds collate into one batch."""

    def __init__(self, photo, engine: EngineDataset):
        self.photo, self.engine = photo, engine
        self.n_photo = 0 if photo is None else len(photo)
        self.n_vert = len(engine.vertex_index)
        self.dim = engine.dim

    def __len__(self) -> int:
        return self.n_photo + len(self.engine)

    def name(self, i: int) -> str:
        return self.photo.name(i) if i < self.n_photo else self.engine.name(i - self.n_photo)

    @property
    def items(self):  # PRDL's part-map cache walks the photo items only
        return [] if self.photo is None else self.photo.items

    def __getitem__(self, key) -> dict:
        i, epoch = (int(key[0]), key[1]) if isinstance(key, tuple) else (int(key), None)
        if i < self.n_photo:
            d = self.photo[(i, epoch) if epoch is not None else i]
            d["vertices_px"] = torch.zeros(self.n_vert, 3)
            d["has3d"] = torch.tensor(0.0)
            d["params"] = torch.zeros(self.dim)
            d["param_w"] = torch.zeros(2)
        else:
            j = i - self.n_photo
            d = self.engine[(j, epoch) if epoch is not None else j]
        d["index"] = torch.tensor(i)
        return d


__all__ = ["VERTEX_STRIDE", "EngineDataset", "MixedDataset", "augment_engine", "expression_mirror",
           "load_engine_sample", "read_engine_manifest"]
