"""Detection and face-picking benchmark: is the face a pipeline returns first the labelled one?

For each sample (an image with one labelled face, maybe other faces in it) the detector's first face
(the one every method reconstructs) is classified:

- **missed**: the detector returned no face;
- **wrong**: it returned faces but the first does not match the labelled face;
- **found**: it matches.

Match rule (`matches`), all in image pixels: let G be the bounding box of the labelled 68 points
(finite ones only: self-occluded points have no position), L the bounding box of the picked face's 68
landmarks and D its detector box. The face matches when IoU(L, G) >= `IOU_MIN` (0.3) **and** the centre
of G lies inside D. The IoU alone accepts a box that covers the face and the background beside it; the
centre alone accepts a tiny box on one eye. A right face scores IoU 0.5-0.9 even at profiles (the
predicted jaw is on the surface, a labelled profile jaw on the silhouette), a face beside it ~0.

Samples without landmarks (LFW photos: the person is the face at the image centre) use `centre_only`:
the picked face matches when its detector box contains `centre`.

Also recorded: whether *any* returned face matches (`any_match`), which separates a picking error
(the face was found but another was ranked first) from a detector miss, and the NME of the picked
face's landmarks (mean error over the finite labelled points / sqrt(w·h) of G, percent).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from ..detect.placement import points_box
from .aflw2000 import BIN_LABELS, yaw_bins

IOU_MIN = 0.3
STATUSES = ("found", "missed", "wrong")


@dataclass(frozen=True)
class Sample:
    """One benchmark image. image: (H, W, 3) uint8 RGB. pts68: (68, 2) float32 x, y pixels (pixel
    centres at integers), NaN where unlabelled, or None (then `centre` is the face's position).
    yaw: degrees (NaN when unknown: such samples go to no bin). centre: (2,) pixels or None."""

    name: str
    image: np.ndarray
    pts68: np.ndarray | None
    yaw: float
    centre: tuple[float, float] | None = None


@dataclass(frozen=True)
class Record:
    """The outcome for one sample. nme: percent, NaN unless a face was picked and `pts68` exists.
    n_faces: faces returned. ms: wall time of the detect call."""

    name: str
    yaw: float
    status: str
    any_match: bool
    nme: float
    n_faces: int
    ms: float


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two [x0, y0, x1, y1] boxes (continuous coordinates)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def inside(point, box) -> bool:
    return bool(box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3])


def matches(face, pts68: np.ndarray | None, centre=None, iou_min: float = IOU_MIN) -> bool:
    """Whether a `Face` (box, lm68) is the labelled face: see the module docstring."""
    box = np.asarray(face.box, np.float64)
    if pts68 is None:
        return inside(centre, box)
    g = points_box(pts68)
    if not inside(((g[0] + g[2]) / 2, (g[1] + g[3]) / 2), box):
        return False
    lm = face.lm68 if face.lm68 is not None else None
    if lm is None:  # a box-only detector: its box against G
        return iou(box, g) >= iou_min
    return iou(points_box(lm), g) >= iou_min


def nme(pred: np.ndarray, pts68: np.ndarray) -> float:
    """(68, 2) prediction vs (68, 2) labels with NaN -> percent over the finite labelled points."""
    g = np.asarray(pts68, np.float64)
    ok = np.isfinite(g).all(axis=1)
    b = points_box(g)
    norm = math.sqrt(max((b[2] - b[0]) * (b[3] - b[1]), 1e-9))
    return float(np.linalg.norm(np.asarray(pred, np.float64)[ok] - g[ok], axis=1).mean() / norm * 100)


def classify(faces: list, sample: Sample) -> tuple[str, bool, float]:
    """(faces returned, first = picked) -> (status, any_match, nme of the picked face)."""
    if not faces:
        return "missed", False, math.nan
    hits = [matches(f, sample.pts68, sample.centre) for f in faces]
    e = math.nan
    if sample.pts68 is not None and faces[0].lm68 is not None:
        e = nme(faces[0].lm68, sample.pts68)
    return ("found" if hits[0] else "wrong"), any(hits), e


def run(detect: Callable[[np.ndarray], list], samples: Iterable[Sample],
        progress: Callable[[], None] | None = None) -> list[Record]:
    """detect(image) -> [Face] (first = the one reconstructed) on every sample."""
    out = []
    for s in samples:
        t = time.perf_counter()
        faces = list(detect(s.image))
        ms = (time.perf_counter() - t) * 1e3
        status, anym, e = classify(faces, s)
        out.append(Record(s.name, s.yaw, status, anym, e, len(faces), ms))
        if progress is not None:
            progress()
    return out


@dataclass(frozen=True)
class BinRow:
    """Counts and rates (percent of n) for one |yaw| bin (or "all"); nme: mean over found faces;
    nme_picked: mean over every picked face (wrong faces at their real, large error), misses excluded."""

    label: str
    n: int
    found: int
    missed: int
    wrong: int
    pick_error: int  # wrong, though another returned face was the right one
    nme: float
    nme_picked: float

    @property
    def miss_pct(self) -> float:
        return 100.0 * self.missed / self.n if self.n else math.nan

    @property
    def wrong_pct(self) -> float:
        return 100.0 * self.wrong / self.n if self.n else math.nan


def _row(label: str, recs: list[Record]) -> BinRow:
    st = [r.status for r in recs]
    found = [r.nme for r in recs if r.status == "found" and np.isfinite(r.nme)]
    picked = [r.nme for r in recs if r.status != "missed" and np.isfinite(r.nme)]
    return BinRow(label, len(recs), st.count("found"), st.count("missed"), st.count("wrong"),
                  sum(r.status == "wrong" and r.any_match for r in recs),
                  float(np.mean(found)) if found else math.nan, float(np.mean(picked)) if picked else math.nan)


def summarize(records: list[Record]) -> list[BinRow]:
    """Rows per |yaw| bin ([0,30], (30,60], >60; samples with unknown yaw in none) and "all"."""
    yaw = np.array([r.yaw for r in records], np.float64)
    rows = []
    known = np.isfinite(yaw)
    b = np.where(known, yaw_bins(np.nan_to_num(yaw)), -1)
    for k, label in enumerate(BIN_LABELS):
        sel = [r for r, bk in zip(records, b) if bk == k]
        if sel:
            rows.append(_row(label, sel))
    rows.append(_row("all", records))
    return rows


def markdown(rows: list[BinRow], title: str) -> str:
    def f(v):
        return "—" if not np.isfinite(v) else f"{v:.2f}"

    lines = [f"| {title} | n | missed | wrong face (of which picking) | miss % | wrong % | NME found | NME picked |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.label} | {r.n} | {r.missed} | {r.wrong} ({r.pick_error}) | {f(r.miss_pct)} | "
                     f"{f(r.wrong_pct)} | {f(r.nme)} | {f(r.nme_picked)} |")
    return "\n".join(lines)
