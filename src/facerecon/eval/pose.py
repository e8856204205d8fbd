"""Head-pose accuracy on AFLW2000 (the benchmark of 6DRepNet, SynergyNet, img2pose, DSFNet).

Ground truth: each image's ``.mat`` ``Pose_Para`` = (pitch, yaw, roll) in radians, then tx, ty, tz,
scale, fitted by Zhu et al.'s 3DMM fitting (the BFM face frame). Its rotation convention, proved on
the data (`tests/test_eval.py` and the `convention_check` below: the rotation rebuilt from the three
angles matches a Procrustes fit of BFM's mean 68 landmarks to the image's own ``pt3d_68`` within
~1.5° median on the dev images, while the 47 other orders/sign choices are 3.7° or worse):

    R_gt = Rx(-pitch) · Ry(-yaw) · Rz(-roll)      (= 3DDFA's ``RotationMatrix``: R_x R_y R_z, each the
                                                   transpose of the right-handed rotation)

mapping the BFM face frame (x to the subject's left, y up, z out of the face) to the image frame
with y up (x right, y up, z towards the viewer). Equivalently R_gtᵀ = Rz(roll) Ry(yaw) Rx(pitch),
the Deep3D composition facerecon uses, so `aflw_euler(R)` = `matrix_to_euler(Rᵀ)`.

Our pose is the model's rotation in the crop camera's frame (x right, y up, z towards the viewer;
docs/coordinates.md), read in the BFM face frame through `model_to_bfm_rotation` (the fixed
rotation between the model's face frame and BFM's, from a similarity fit of the two models' mean 68
landmarks — no benchmark data involved). Errors: |Δ| of each Euler angle in the dataset's convention
(degrees, wrapped to [-180, 180]), their mean, and the geodesic angle of R_estᵀ R_gt. Protocol: the
images whose three ground-truth angles are all within ±99° (1,969 of 2,000 on the full set), binned
by |yaw| as the landmark benchmark ([0,30], (30,60], >60), plus all of them together.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..geometry.rotations import euler_to_matrix, fit_similarity, matrix_to_euler
from .aflw2000 import BIN_LABELS, AFLW2000Set, DatasetError, load_aflw2000, yaw_bins

POSE_LIMIT_DEG = 99.0
# Images per |yaw| bin on the full 2,000 (the landmark protocol's bins): a subset that over-samples
# profiles (the 200-image dev split: 116 / 34 / 50) is re-weighted with these for a full-set estimate.
FULL_SET_BINS = (1312, 383, 305)
ANGLES = ("yaw", "pitch", "roll")
# Published mean MAE of the three angles (degrees) on the 1,969 filtered AFLW2000 images.
PUBLISHED = {
    "DSFNet-f": 3.25,
    "SynergyNet": 3.35,
    "img2pose": 3.91,
    "6DRepNet": 3.97,
}

# A pose method: image (H, W, 3) uint8, box (4,) or None -> (3, 3) rotation, BFM face frame -> image
# frame with y up (x right, y up, z towards the viewer), or None when no face is found.
PoseMethod = Callable[[np.ndarray, np.ndarray | None], np.ndarray | None]


# ----------------------------------------------------------------------------- the convention


def aflw_matrix(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """AFLW2000's ``Pose_Para`` angles (radians) -> (3, 3) R_gt = Rx(-pitch) Ry(-yaw) Rz(-roll),
    i.e. the transpose of facerecon's Rz(roll) Ry(yaw) Rx(pitch) of the same angles."""
    return euler_to_matrix(torch.tensor([pitch, yaw, roll], dtype=torch.float64)).numpy().T


def aflw_euler(R) -> np.ndarray:
    """(..., 3, 3) rotation -> (..., 3) (pitch, yaw, roll) radians in AFLW2000's convention
    (the inverse of `aflw_matrix` away from |yaw| = 90°)."""
    R = torch.as_tensor(np.asarray(R, np.float64))
    return matrix_to_euler(R.transpose(-1, -2)).numpy()


def procrustes_rotation(model_pts: np.ndarray, image_pts: np.ndarray) -> np.ndarray:
    """(3, 3) rotation of the similarity taking (N, 3) face-frame points onto (N, 3) image points
    with y up (x right, y up, z towards the viewer)."""
    X = torch.as_tensor(np.asarray(model_pts, np.float64))[None]
    Y = torch.as_tensor(np.asarray(image_pts, np.float64))[None]
    return fit_similarity(X, Y)[1][0].numpy()


def geodesic_deg(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """(..., 3, 3) × 2 -> (...,) angle of the rotation Aᵀ B, degrees."""
    tr = np.einsum("...ij,...ij->...", np.asarray(A, np.float64), np.asarray(B, np.float64))
    return np.degrees(np.arccos(np.clip((tr - 1.0) / 2.0, -1.0, 1.0)))


def bfm_mean_landmarks() -> np.ndarray:
    """(68, 3) BFM's mean-face 68 landmarks in its own frame (3DDFA_V2's bases; asset 3ddfa-v2)."""
    from ..detect.tddfa import load_bases

    return load_bases().shape(np.zeros((1, 40)), np.zeros((1, 10)))[0]


def landmark_frame_rotation(model) -> np.ndarray:
    """(3, 3) Q: the model's face frame -> BFM's, from a similarity fit of the mean faces' 68
    landmarks (both in the 3DDFA landmark convention); how `models.frames`' ICT data is made."""
    with torch.no_grad():
        lm = model.landmarks(model.mean_shape[None])[0].double().cpu().numpy()
    return procrustes_rotation(lm, bfm_mean_landmarks())


def model_to_bfm_rotation(model) -> np.ndarray:
    """(3, 3) Q: the model's face frame -> BFM's (`models.frames.bfm_frame`, else computed by
    `landmark_frame_rotation`). A model pose R reads R·Qᵀ in BFM's frame."""
    from ..models.frames import bfm_frame

    Q = bfm_frame(model.name)
    return landmark_frame_rotation(model) if Q is None else Q


def convention_check(data: AFLW2000Set) -> dict[str, float]:
    """The proof of `aflw_matrix`: per image, the rotation of a Procrustes fit of BFM's mean 68
    landmarks to the image's ``pt3d_68`` (y flipped up) against R_gt rebuilt from ``Pose_Para``.
    Returns the median and 90th-percentile geodesic angle (degrees) over the images."""
    from scipy.io import loadmat

    X = bfm_mean_landmarks()
    err = []
    for nm in data.names:
        m = loadmat(data.root / "AFLW2000" / Path(nm).with_suffix(".mat"))
        p = np.asarray(m["Pose_Para"], np.float64).reshape(-1)
        Y = np.asarray(m["pt3d_68"], np.float64).T * np.array([1.0, -1.0, 1.0])
        err.append(float(geodesic_deg(procrustes_rotation(X, Y), aflw_matrix(*p[:3]))))
    return {"median_deg": float(np.median(err)), "p90_deg": float(np.percentile(err, 90)), "n": len(err)}


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class PoseSet:
    """AFLW2000 images with their ground-truth pose, filtered to |angles| <= 99°.

    data: the landmark benchmark's set (names, roi boxes, raw yaw for the bins), filtered rows only.
    euler_deg: (N, 3) ground-truth (pitch, yaw, roll) degrees, raw ``Pose_Para``.
    R: (N, 3, 3) ground-truth rotations (`aflw_matrix`). dropped: names removed by the filter.
    """

    data: AFLW2000Set
    euler_deg: np.ndarray
    R: np.ndarray
    dropped: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.data)


def load_aflw2000_pose(root: str | Path, limit: int | None = None) -> PoseSet:
    """The pose benchmark under `root` (the landmark benchmark's layout; `.mat` files beside the images)."""
    from scipy.io import loadmat

    data = load_aflw2000(root)
    if limit is not None:
        data = data.subset(max(0, limit))
    eul, keep, dropped = [], [], []
    for i, nm in enumerate(data.names):
        path = data.root / "AFLW2000" / Path(nm).with_suffix(".mat")
        if not path.is_file():
            raise DatasetError(f"AFLW2000: missing ground-truth pose file {path}")
        try:
            p = np.asarray(loadmat(path)["Pose_Para"], np.float64).reshape(-1)[:3]
        except (KeyError, ValueError, OSError) as e:
            raise DatasetError(f"{path}: no readable Pose_Para ({e})") from None
        d = np.degrees(p)
        if np.all(np.abs(d) <= POSE_LIMIT_DEG):
            keep.append(i)
            eul.append(d)
        else:
            dropped.append(nm)
    k = np.asarray(keep, int)
    sub = AFLW2000Set(data.root, data.gt, tuple(data.names[i] for i in k), data.roi_boxes[k], data.pts68[k],
                      data.yaw[k])
    eul = np.asarray(eul, np.float64).reshape(-1, 3)
    R = np.stack([aflw_matrix(*np.radians(e)) for e in eul]) if len(eul) else np.zeros((0, 3, 3))
    return PoseSet(sub, eul, R, tuple(dropped))


# ----------------------------------------------------------------------------- scoring


def wrap_deg(a):
    return (np.asarray(a, np.float64) + 180.0) % 360.0 - 180.0


@dataclass(frozen=True)
class PoseStats:
    label: str
    n: int
    failed: int
    mae: tuple[float, float, float]  # yaw, pitch, roll degrees
    mean: float  # mean of the three
    geodesic: float  # mean geodesic error, degrees


@dataclass
class PoseResult:
    """Per-image records (filtered list order) and per-bin / overall statistics."""

    data: PoseSet
    method: str
    boxes: str
    R: np.ndarray  # (N, 3, 3) estimates, NaN where failed
    err: np.ndarray  # (N, 3) |Δ yaw, pitch, roll| degrees
    geodesic: np.ndarray  # (N,) degrees
    failed: np.ndarray  # (N,) bool
    latency_ms: np.ndarray
    bins: tuple[PoseStats, ...]
    overall: PoseStats
    meta: dict = field(default_factory=dict)

    def full_set_estimate(self) -> float:
        """Mean MAE with the bins weighted as on the full set (`FULL_SET_BINS`); NaN if a bin is empty."""
        vals = [b.mean for b in self.bins]
        if not all(np.isfinite(vals)):
            return math.nan
        return float(np.dot(vals, FULL_SET_BINS) / sum(FULL_SET_BINS))


def _stats(label, err, geo, failed) -> PoseStats:
    ok = ~failed
    if not ok.any():
        return PoseStats(label, len(failed), int(failed.sum()), (math.nan,) * 3, math.nan, math.nan)
    mae = tuple(float(x) for x in err[ok].mean(0))
    return PoseStats(label, len(failed), int(failed.sum()), mae, float(np.mean(mae)), float(geo[ok].mean()))


def score_pose(R_est: np.ndarray, data: PoseSet, method_name: str = "method", boxes: str = "gt",
               latency_ms: np.ndarray | None = None) -> PoseResult:
    """(N, 3, 3) estimates (NaN rows = failed) against the ground truth."""
    R_est = np.asarray(R_est, np.float64).reshape(-1, 3, 3)
    failed = ~np.isfinite(R_est).all(axis=(1, 2))
    safe = np.where(failed[:, None, None], np.eye(3), R_est)
    est = np.degrees(aflw_euler(safe))  # (N, 3) pitch, yaw, roll
    d = np.abs(wrap_deg(est - data.euler_deg))[:, [1, 0, 2]]  # -> yaw, pitch, roll
    geo = geodesic_deg(safe, data.R)
    b = yaw_bins(data.euler_deg[:, 1])
    bins = tuple(_stats(lb, d[b == k], geo[b == k], failed[b == k]) for k, lb in enumerate(BIN_LABELS))
    lat = np.full(len(failed), np.nan) if latency_ms is None else np.asarray(latency_ms, np.float64)
    return PoseResult(data, method_name, boxes, R_est, d, geo, failed, lat, bins,
                      _stats("all", d, geo, failed))


def evaluate_pose(method: PoseMethod, data: PoseSet, boxes: str = "gt", method_name: str = "method",
                  progress: Callable[[int, int], None] | None = None) -> PoseResult:
    """Run `method(image_rgb, box_or_None) -> (3, 3) | None` on every image (GT: the protocol roi box)."""
    from ..io.image import load_image

    n = len(data)
    R = np.full((n, 3, 3), np.nan)
    lat = np.full(n, np.nan)
    for i in range(n):
        img = load_image(data.data.image_path(i)).pixels
        box = data.data.roi_boxes[i] if boxes == "gt" else None
        t = time.perf_counter()
        out = method(img, box)
        lat[i] = (time.perf_counter() - t) * 1000.0
        if out is not None:
            R[i] = np.asarray(out, np.float64).reshape(3, 3)
        if progress is not None:
            progress(i + 1, n)
    return score_pose(R, data, method_name, boxes, lat)


# ----------------------------------------------------------------------------- methods


def reconstruction_pose_method(name: str, photometric: bool = False, model: str = "ict", **options) -> PoseMethod:
    """Any reconstruction method's head pose: the model's rotation in the crop camera, read in BFM's
    face frame (`model_to_bfm_rotation`). Photometric off by default: pose comes from the landmarks."""
    from .methods import ReconstructionRunner

    runner = ReconstructionRunner(name, photometric, model, **options)
    Qt = model_to_bfm_rotation(runner.reconstructor.model).T

    def method(image, box):
        r = runner.run(image, box)
        return None if r is None else r.rotation_matrix @ Qt

    method.runner = runner
    return method


def tddfa_pose_method(tta: bool = False, **options) -> PoseMethod:
    """3DDFA_V2's own pose (our port, on the roi box as 3DDFA does): ``calc_pose``'s rotation R,
    already in BFM's frame with y up; `tta`: the mean rotation of the test-time-augmentation passes
    (image + mirror at two roi scales, `TDDFALandmarker.landmarks_tta`)."""
    from ..detect.tddfa import TDDFALandmarker

    lm = TDDFALandmarker(**options)

    def method(image, box):
        if box is None:
            raise ValueError("the 3ddfa pose methods need the protocol boxes (--boxes gt)")
        if tta:
            return lm.landmarks_tta(image, [box], box_is_roi=True)[0].rotation
        return lm.landmarks(image, box, box_is_roi=True).tddfa.R

    return method


def get_pose_method(name: str, **options) -> PoseMethod:
    """'3ddfa' (3DDFA_V2's pose), '3ddfa-tta' (averaged over its test-time augmentation), 'fit-photo'
    (fit with the photometric stage), or any reconstruction method."""
    if name in ("3ddfa", "3ddfa-tta"):
        return tddfa_pose_method(tta=name == "3ddfa-tta", **options)
    if name == "fit-photo":
        return reconstruction_pose_method("fit", photometric=True, **options)
    return reconstruction_pose_method(name, **options)


# ----------------------------------------------------------------------------- reports


def _f(v: float) -> str:
    return "—" if not np.isfinite(v) else f"{v:.2f}"


def markdown_pose(result: PoseResult) -> str:
    head = ["method", "yaw", "pitch", "roll", "mean MAE", "geodesic"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in (result.overall, *result.bins):
        name = f"**{result.method}** ({s.label}, {s.n} images, boxes={result.boxes})"
        lines.append("| " + " | ".join([name, *(_f(v) for v in s.mae), _f(s.mean), _f(s.geodesic)]) + " |")
    lines.append("| " + " | ".join([f"{result.method}, bins weighted as the full set {FULL_SET_BINS}", "—", "—", "—",
                                    _f(result.full_set_estimate()), "—"]) + " |")
    for name, mean in PUBLISHED.items():
        lines.append("| " + " | ".join([f"{name} (published)", "—", "—", "—", _f(mean), "—"]) + " |")
    lat = result.latency_ms[np.isfinite(result.latency_ms)]
    out = ["\n".join(lines), "",
           (f"{len(result.data)} images with all ground-truth angles within ±{POSE_LIMIT_DEG:g}° "
            f"({len(result.data.dropped)} dropped); failures: {int(result.failed.sum())} (left out of the MAE)."),
           ("MAE in degrees of AFLW2000's Pose_Para angles (convention: R = Rx(-pitch) Ry(-yaw) Rz(-roll), "
            "eval/pose.py); geodesic: angle of the relative rotation. Published rows: the full 1,969 images.")]
    if len(lat):
        out.append(f"Latency per image: median {np.median(lat):.1f} ms.")
    out += [f"{k}: {v}" for k, v in result.meta.items()]
    return "\n".join(out) + "\n"


def write_pose_reports(result: PoseResult, outdir: str | Path) -> dict[str, Path]:
    """``<stem>.csv`` (per image) and ``<stem>.md`` in `outdir`."""
    from ..io.atomic import write_text

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in result.method)
    stem = outdir / f"aflw2000_pose_{safe}_{result.boxes}"
    rows = ["name,gt_yaw,gt_pitch,gt_roll,est_yaw,est_pitch,est_roll,err_yaw,err_pitch,err_roll,geodesic,failed,latency_ms"]
    est = np.degrees(aflw_euler(np.where(result.failed[:, None, None], np.eye(3), result.R)))
    for i, nm in enumerate(result.data.data.names):
        g = result.data.euler_deg[i]
        if result.failed[i]:
            vals = [""] * 7
        else:
            vals = [f"{v:.4f}" for v in (est[i, 1], est[i, 0], est[i, 2], *result.err[i], result.geodesic[i])]
        lat = "" if not np.isfinite(result.latency_ms[i]) else f"{result.latency_ms[i]:.2f}"
        rows.append(",".join([nm, f"{g[1]:.4f}", f"{g[0]:.4f}", f"{g[2]:.4f}", *vals, str(int(result.failed[i])), lat]))
    csv_path = Path(f"{stem}.csv")
    write_text(csv_path, "\n".join(rows) + "\n")
    md_path = Path(f"{stem}.md")
    write_text(md_path, f"# AFLW2000 head pose (MAE, degrees)\n\n{markdown_pose(result)}")
    return {"csv": csv_path, "markdown": md_path}


def format_pose(result: PoseResult) -> str:
    lines = []
    for s in (*result.bins, result.overall):
        lines.append(f"{s.label:>8}: n={s.n:4d} failed={s.failed:3d}  yaw {_f(s.mae[0])}  pitch {_f(s.mae[1])}  "
                     f"roll {_f(s.mae[2])}  mean {_f(s.mean)}  geodesic {_f(s.geodesic)}")
    lines.append(f"mean MAE with the bins weighted as the full set: {_f(result.full_set_estimate())}")
    return "\n".join(lines)


__all__ = ["PoseResult", "PoseSet", "aflw_euler", "aflw_matrix", "convention_check", "evaluate_pose",
           "get_pose_method", "load_aflw2000_pose", "model_to_bfm_rotation", "score_pose", "write_pose_reports"]
