"""Face parsing into 3DDFA_V3's eight parts on the pipeline's aligned crops (docs/parts.md).

    parser = load_parser()                  # the trained network (weights/parser/parser.pt)
    labels = parser.parse(crops)            # (B, 224, 224, 3) uint8 RGB -> (B, 224, 224) uint8
    probs = parser.probabilities(crops)     # (B, 9, 224, 224) float, softmax over background + 8

Label maps use `render.parts.part_label_map`'s encoding (`seg_visible`): 0 background / other,
k + 1 for part k of `models.annotations.PART_NAMES` (right_eye, left_eye, right_brow, left_brow,
nose, upper_lip, lower_lip, skin; "right" is the subject's right, image left when unmirrored).

Two parsers with that interface:
- `FaceParser`: a small network (`nets.parser.PartNet`) trained on the data engine's views, whose
  part labels are exact at every pose (`sample_label_map`; scripts/train_parser.py).
- `FaceMeshParser`: FaceMesh's contours (eyes, brows, lips, face oval; the nose as the hull of the
  FaceMesh points on ICT's nose) filled as polygons; near-frontal faces only (FaceMesh draws hidden
  parts at profiles), the reference the issue measures the network against.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .. import assets
from ..errors import FaceReconError
from ..models.annotations import PART_NAMES
from ..nets.parser import PartNet, PartNetConfig

#: Label of part k in a label map is k + 1; 0 is background / other.
N_CLASSES = len(PART_NAMES) + 1
#: Label permutation of a left-right mirrored image: right/left eye and brow swap.
FLIP_LABELS = np.array([0, 2, 1, 4, 3, 5, 6, 7, 8], np.uint8)
WEIGHTS_FILE = "parser.pt"


def flip_labels(labels):
    """Mirror label maps left-right: (..., H, W) uint8 array or int tensor -> the same, with the
    columns reversed and right/left parts swapped (`FLIP_LABELS`)."""
    if isinstance(labels, torch.Tensor):
        return torch.as_tensor(FLIP_LABELS, device=labels.device)[labels.long()].to(labels.dtype).flip(-1)
    return FLIP_LABELS[np.asarray(labels)][..., ::-1].copy()


# -- labels of the data engine's samples --------------------------------------------------------

@lru_cache(maxsize=4)
def _part_mesh(model_name: str):
    from ..models import load_model
    from ..models.annotations import annotations_for

    kind, _, variant = model_name.partition("-")
    model = load_model(kind, variant or None)
    ann = annotations_for(model)
    if ann is None:
        raise FaceReconError(f"model '{model_name}' has no part annotations (only ICT's face and head)")
    faces, labels = ann.part_mesh(model.faces.cpu().numpy())
    rims = [np.asarray(ann.eye_rims[n], np.int64) for n in ("right_eye", "left_eye")]
    return faces, labels, rims


def sample_label_map(sample: dict) -> np.ndarray:
    """The `seg_visible` label map of a data-engine sample (`dataset.load_sample`): the model's
    parts + eye caps rasterized with the sample's ``vertices_px``.

    The eye caps' centres are the mean of their rim in pixels and depth (`part_label_map` projects
    the 3-D mean instead: sub-pixel differences inside the eye).

    Returns:
        (S, S) uint8 label map, S the sample's crop size (its camera's width × height).
    """
    faces, labels, rims = _part_mesh(str(sample["model"]))
    from ..render.parts import screen_label_map

    v = np.asarray(sample["vertices_px"], np.float64)
    scr = np.concatenate([v] + [v[r].mean(0, keepdims=True) for r in rims])
    cam = np.asarray(sample["camera"], np.float64)
    return screen_label_map(scr, faces, labels, int(cam[4]), int(cam[3]), n_parts=len(PART_NAMES),
                            near=float(cam[6]))


# -- the network ---------------------------------------------------------------------------------

def _as_tensor(crops) -> torch.Tensor:
    """(B, H, W, 3) uint8 array/tensor (or one (H, W, 3)) -> (B, 3, H, W) float32 in [0, 255]."""
    x = torch.as_tensor(np.asarray(crops) if not isinstance(crops, torch.Tensor) else crops)
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[-1] != 3:
        raise FaceReconError(f"crops must be (B, H, W, 3) RGB, got shape {tuple(x.shape)}")
    return x.permute(0, 3, 1, 2).float()


class FaceParser:
    """The trained part network on aligned crops (`align.Crop.image`, 224² uint8 RGB)."""

    def __init__(self, net: PartNet, device: str | torch.device = "cpu", meta: dict | None = None):
        self.net = net.to(device).eval()
        self.device = torch.device(device)
        self.meta = meta or {}

    @torch.no_grad()
    def logits(self, crops) -> torch.Tensor:
        """(B, H, W, 3) uint8 -> (B, 9, H, W) float32 logits at the crops' resolution."""
        x = _as_tensor(crops).to(self.device) / 255.0
        H, W = x.shape[-2:]
        s = self.net.config.input_size
        if (H, W) != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return F.interpolate(self.net(x), size=(H, W), mode="bilinear", align_corners=False)

    def probabilities(self, crops) -> torch.Tensor:
        """(B, H, W, 3) uint8 -> (B, 9, H, W) float32 softmax over background + the 8 parts."""
        return self.logits(crops).softmax(1)

    def parse(self, crops) -> np.ndarray:
        """(B, H, W, 3) uint8 -> (B, H, W) uint8 label maps (0 background, k + 1 part k)."""
        return self.logits(crops).argmax(1).to(torch.uint8).cpu().numpy()


def default_weights_paths() -> list[Path]:
    """Where `load_parser()` looks, in order: $FACERECON_PARSER, the repository's weights/parser/,
    $FACERECON_ASSETS/parser/, ~/.cache/facerecon/assets/parser/ (`assets.weights_paths`)."""
    return assets.weights_paths("FACERECON_PARSER", f"parser/{WEIGHTS_FILE}")


def save_parser(net: PartNet, path, meta: dict | None = None, half: bool = True) -> Path:
    """Write a weights file `load_parser` reads: {"parser": config, "model": state_dict, "meta"}
    (floats stored as float16 when `half`; loaded as float32). Atomic."""
    from ..nets.checkpoint import write_weights

    return write_weights(path, "parser", net.config.to_dict(), net, meta, half)


def load_parser(path=None, device: str | torch.device = "cpu") -> FaceParser:
    """A FaceParser from a weights file (`save_parser`) or a training checkpoint holding the same
    keys; path None: the first of `default_weights_paths()`. Raises AssetError when absent or not a
    parser file."""
    from ..nets.checkpoint import find_weights, load_state, read_weights

    path = find_weights(path, default_weights_paths(), "face-parser",
                        ". Train them (scripts/train_parser.py, weights/parser/MODEL_CARD.md) "
                        "or set FACERECON_PARSER=FILE.")
    ck = read_weights(path, "face-parser", "parser")
    net = load_state(PartNet(PartNetConfig.from_dict(ck["parser"])), ck, path, ck["parser"])
    return FaceParser(net, device, ck.get("meta", {}))


# -- FaceMesh contours ---------------------------------------------------------------------------

#: Ordered FaceMesh-468 loops (indices as in MediaPipe's face_mesh_connections; "right" = the
#: subject's right, as in MediaPipe and `PART_NAMES`).
FACEMESH_LOOPS = {
    "face_oval": (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
                  152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109),
    "right_eye": (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7),
    "left_eye": (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249),
    "right_brow": (70, 63, 105, 66, 107, 55, 65, 52, 53, 46),
    "left_brow": (300, 293, 334, 296, 336, 285, 295, 282, 283, 276),
    "upper_lip": (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291,
                  308, 415, 310, 311, 312, 13, 82, 81, 80, 191, 78),
    "lower_lip": (291, 375, 321, 405, 314, 17, 84, 181, 91, 146, 61,
                  78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308),
    "mouth": (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95),
}


@lru_cache(maxsize=1)
def facemesh_nose_points() -> np.ndarray:
    """FaceMesh-468 indices on ICT's nose part, through the learned FaceMesh -> ICT vertex map
    (data/ict_mediapipe468.json) and the ICT annotations; the nose region is their convex hull."""
    from importlib.resources import files

    vmap = np.asarray(json.loads(files("facerecon").joinpath("data/ict_mediapipe468.json").read_text())["vertex"])
    parts = np.array([int(c) for c in json.loads(
        files("facerecon").joinpath("data/ict_annotations.json").read_text())["vertex_parts"]])
    return np.flatnonzero(parts[vmap] == PART_NAMES.index("nose")).astype(np.int64)


def _hull(points: np.ndarray) -> np.ndarray:
    """(N, 2) -> (M, 2) convex hull, counter-clockwise (monotone chain)."""
    p = points[np.lexsort((points[:, 1], points[:, 0]))]

    def half(seq):
        out = []
        for q in seq:
            while len(out) >= 2 and np.cross(out[-1] - out[-2], q - out[-2]) <= 0:
                out.pop()
            out.append(q)
        return out[:-1]

    return np.array(half(p) + half(p[::-1]))


def facemesh_label_map(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """FaceMesh points -> label map, by filling polygons in order: face oval (skin), nose, brows,
    eyes, lips, then the mouth opening back to 0 (the model's mouth has no surface there).

    Args:
        points: (468, 2+) x, y pixels (pixel centres at integers).
        height, width: the map's size.

    Returns:
        (H, W) uint8 (0 background, k + 1 part k).
    """
    from PIL import Image, ImageDraw

    pts = np.asarray(points, np.float64)[:, :2]
    img = Image.new("L", (int(width), int(height)), 0)
    draw = ImageDraw.Draw(img)

    def fill(poly, value):
        # PIL fills pixels whose centres lie inside, with pixel centres at integer + 0.5 (x, y) edges.
        draw.polygon([(float(x) + 0.5, float(y) + 0.5) for x, y in poly], fill=int(value))

    fill(pts[list(FACEMESH_LOOPS["face_oval"])], PART_NAMES.index("skin") + 1)
    fill(_hull(pts[facemesh_nose_points()]), PART_NAMES.index("nose") + 1)
    for name in ("right_brow", "left_brow", "right_eye", "left_eye", "upper_lip", "lower_lip"):
        fill(pts[list(FACEMESH_LOOPS[name])], PART_NAMES.index(name) + 1)
    fill(pts[list(FACEMESH_LOOPS["mouth"])], 0)
    return np.asarray(img, np.uint8)


class FaceMeshParser:
    """FaceMesh (our torch port, `detect.mediapipe.MediaPipeLandmarker`) on each crop, its contours
    filled into a label map (`facemesh_label_map`). A crop where FaceMesh finds no face gets an
    all-zero map and is counted in `missed`. Unreliable beyond ~45° of yaw: FaceMesh keeps drawing
    the far eye, brow and cheek, which the face hides."""

    def __init__(self, landmarker=None):
        if landmarker is None:
            from .mediapipe import MediaPipeLandmarker

            landmarker = MediaPipeLandmarker()
        self.landmarker = landmarker
        self.missed = 0

    def points(self, crop: np.ndarray) -> np.ndarray | None:
        """(H, W, 3) uint8 -> (468, 3) FaceMesh points in crop pixels, or None."""
        H, W = crop.shape[:2]
        # The whole crop as the box: the aligned face fills it; the landmarker adds its margin.
        return self.landmarker.mesh_in_box(np.ascontiguousarray(crop), [0, 0, W - 1, H - 1])

    def parse(self, crops) -> np.ndarray:
        """(B, H, W, 3) uint8 -> (B, H, W) uint8 label maps."""
        x = np.asarray(crops.cpu() if isinstance(crops, torch.Tensor) else crops)
        x = x[None] if x.ndim == 3 else x
        out = np.zeros(x.shape[:3], np.uint8)
        for i, crop in enumerate(x):
            pts = self.points(crop)
            if pts is None:
                self.missed += 1
                continue
            out[i] = facemesh_label_map(pts, *crop.shape[:2])
        return out

    def probabilities(self, crops) -> torch.Tensor:
        """(B, 9, H, W) float32 one-hot of `parse` (the contours carry no confidence)."""
        lab = torch.as_tensor(self.parse(crops)).long()
        return F.one_hot(lab, N_CLASSES).permute(0, 3, 1, 2).float()


def face_probability_in_photo(parser, crop) -> np.ndarray:
    """The probability that each pixel of the crop's original photo shows the face itself (any of
    the 8 parts), not something in front of it or around it: 1 − P(background/other) of `parser` on
    `crop.image`, carried back to the photo by the crop's transform. An occluder the parser labels
    "other" (a hand, hair, glasses: v2 is trained on synthetic ones) gets a low value there, which is
    what `render.texture.extract_filled_uv_texture`'s `skin_mask` rejects. Outside the crop: 1 (the
    parser did not look there; the texture's other weights decide).

    Args: parser: a `FaceParser` (or anything with its `probabilities`); crop: an `align.Crop`.
    Returns: (H, W) float32 in [0, 1], H, W = crop.original_shape.
    """
    from ..geometry.transforms2d import warp_image

    with torch.no_grad():
        p = parser.probabilities(np.asarray(crop.image)[None])[0]
    face = (1.0 - p[0]).clamp(0.0, 1.0).cpu().numpy().astype(np.float32)
    return warp_image(face, crop.M_inv, tuple(crop.original_shape), fill=1.0, antialias=False)


@lru_cache(maxsize=1)
def shared_parser() -> FaceParser | None:
    """`load_parser()` once per process, or None (logged once) when this install has no weights:
    for optional uses (the extracted texture's occluder mask) that fall back without it."""
    import logging

    try:
        return load_parser()
    except FaceReconError as e:
        logging.getLogger(__name__).info("no face parser (%s): occluders are found by colour only", e)
        return None


__all__ = ["FACEMESH_LOOPS", "FLIP_LABELS", "N_CLASSES", "FaceMeshParser", "FaceParser", "default_weights_paths",
           "face_probability_in_photo", "facemesh_label_map", "facemesh_nose_points", "flip_labels", "load_parser",
           "sample_label_map", "save_parser", "shared_parser"]
