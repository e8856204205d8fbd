"""AFLW2000-3D 68-point 2D NME, the 3DDFA protocol (Zhu et al. CVPR 2016; 3DDFA ``benchmark_aflw2000.py``).

- NME of one image = mean over the 68 points of the 2D error / sqrt(w·h) of the ground-truth
  68-point bounding box; reported in percent.
- Bins by |yaw| of ``AFLW2000-3D.pose.npy`` (raw degrees, not wrapped): [0, 30], (30, 60], > 60;
  |yaw| > 90 goes in the last bin, as 3DDFA does. The headline number is the mean of the 3 bin means.
- Ground truth: ``--gt original`` = ``AFLW2000-3D.pts68.npy`` (the fitted ``pt3d_68``), ``--gt
  reannotated`` = ``AFLW2000-3D-Reannotated.pts68.npy``; rows follow ``AFLW2000-3D_crop.list``.
- Boxes: ``gt`` = the protocol roi boxes (``AFLW2000-3D_crop.roi_box.npy``), ``detect`` = the method
  finds the face itself (box None).
- Failures (method returns None) stay in the table: each bin reports its failure count, the NME over
  the images that were landmarked, and the NME with every failure counted at `failure_nme`
  (default 10 %, the usual failure threshold of 68-point NME, so a failure is never better than
  a bad prediction). The CED treats a failure as never reaching any threshold.

Dataset layout (root): ``protocol/`` with the list and arrays, ``AFLW2000/`` with the images.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FaceReconError

BIN_LABELS = ("[0,30]", "(30,60]", ">60")
LIST_FILE = "AFLW2000-3D_crop.list"
ROI_FILE = "AFLW2000-3D_crop.roi_box.npy"
POSE_FILE = "AFLW2000-3D.pose.npy"
GT_FILES = {"original": "AFLW2000-3D.pts68.npy", "reannotated": "AFLW2000-3D-Reannotated.pts68.npy"}
DEFAULT_FAILURE_NME = 10.0  # percent

# Published full-set (2,000 images) numbers, NME % by |yaw| bin and mean of bins.
PUBLISHED = {
    "Deep3D (Deng et al. 2019)": (2.56, 3.11, 4.45, 3.37),
    "PRNet (Feng et al. 2018)": (2.75, 3.51, 4.61, 3.62),
    "3DDFA_V2 (Guo et al. 2020)": (2.74, 3.48, 4.54, 3.59),
}
# The original 3DDFA_V2 code (mb05_120x120) on shared/data/aflw2000-3d-dev, GT roi boxes, original GT.
REFERENCE_DEV = {"3DDFA_V2 original code, dev subset (200), gt boxes": (2.88, 3.75, 4.46, 3.70)}


class DatasetError(FaceReconError, FileNotFoundError):
    """The AFLW2000-3D folder is missing a file or its files disagree (message names the file)."""


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class AFLW2000Set:
    """The benchmark arrays, row i <-> line i of ``AFLW2000-3D_crop.list``.

    names: N image file names. roi_boxes: (N, 4) float32 [sx, sy, ex, ey] pixels.
    pts68: (N, 68, 2) float32 ground-truth x, y pixels. yaw: (N,) float32 raw degrees.
    """

    root: Path
    gt: str
    names: tuple[str, ...]
    roi_boxes: np.ndarray
    pts68: np.ndarray
    yaw: np.ndarray

    def __len__(self) -> int:
        return len(self.names)

    def image_path(self, i: int) -> Path:
        return self.root / "AFLW2000" / self.names[i]

    def subset(self, n: int) -> AFLW2000Set:
        """The first n rows (list order)."""
        return AFLW2000Set(self.root, self.gt, self.names[:n], self.roi_boxes[:n], self.pts68[:n], self.yaw[:n])


def _need(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"AFLW2000-3D: missing {what}: {path}")
    return path


def load_aflw2000(root: str | Path, gt: str = "original") -> AFLW2000Set:
    """Read the protocol files under `root` and check that they agree with each other and the images.

    Raises DatasetError naming the first missing or inconsistent file.
    """
    if gt not in GT_FILES:
        raise ValueError(f"gt must be one of {sorted(GT_FILES)}, got '{gt}'")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"AFLW2000-3D root is not a folder: {root}")
    proto = root / "protocol"
    names = tuple(
        ln.strip() for ln in _need(proto / LIST_FILE, "image list").read_text().splitlines() if ln.strip()
    )
    roi = np.load(_need(proto / ROI_FILE, "roi boxes")).astype(np.float32)
    yaw = np.load(_need(proto / POSE_FILE, "yaw angles")).astype(np.float32).reshape(-1)
    pts = np.load(_need(proto / GT_FILES[gt], f"{gt} ground truth")).astype(np.float32)
    n = len(names)
    for arr, f in ((roi, ROI_FILE), (yaw, POSE_FILE), (pts, GT_FILES[gt])):
        if len(arr) != n:
            raise DatasetError(f"{proto / f}: {len(arr)} rows but {LIST_FILE} lists {n} images")
    if roi.shape[1:] != (4,) or pts.ndim != 3 or pts.shape[2] != 68 or pts.shape[1] < 2:
        raise DatasetError(f"{proto}: unexpected shapes roi {roi.shape}, pts68 {pts.shape}")
    missing = [nm for nm in names if not (root / "AFLW2000" / nm).is_file()]
    if missing:
        raise DatasetError(
            f"AFLW2000-3D: {len(missing)} listed image(s) missing, first: {root / 'AFLW2000' / missing[0]}"
        )
    pts68 = np.ascontiguousarray(pts[:, :2].transpose(0, 2, 1))  # (N, 2|3, 68) -> (N, 68, 2)
    return AFLW2000Set(root, gt, names, roi, pts68, yaw)


# ----------------------------------------------------------------------------- metric


def nme(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N, 68, 2), (N, 68, 2) -> (N,) NME in percent: mean point error / sqrt(w·h) of gt's bbox.

    Rows of `pred` that contain NaN give NaN.
    """
    pred = np.asarray(pred, np.float64).reshape(-1, 68, 2)
    gt = np.asarray(gt, np.float64).reshape(-1, 68, 2)
    wh = gt.max(axis=1) - gt.min(axis=1)
    norm = np.sqrt(wh[:, 0] * wh[:, 1])
    return np.linalg.norm(pred - gt, axis=2).mean(axis=1) / norm * 100.0


def nme3d(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N, 68, 3), (N, 68, 3) -> (N,) 3-D NME in percent: mean point distance with each set's z
    centred on its own mean (depth has no common origin), over sqrt(w·h) of gt's 2-D bbox.

    x, y in image pixels; z in the same pixel scale, larger = nearer the camera (AFLW2000-3D's
    ``pt3d_68``: 3DDFA's image-frame vertices). Rows with NaN give NaN.
    """
    pred = np.array(pred, np.float64).reshape(-1, 68, 3)
    gt = np.array(gt, np.float64).reshape(-1, 68, 3)
    pred[..., 2] -= pred[..., 2].mean(1, keepdims=True)
    gt[..., 2] -= gt[..., 2].mean(1, keepdims=True)
    wh = gt[..., :2].max(axis=1) - gt[..., :2].min(axis=1)
    return np.linalg.norm(pred - gt, axis=2).mean(axis=1) / np.sqrt(wh[:, 0] * wh[:, 1]) * 100.0


def load_pts3d(root: str | Path) -> np.ndarray:
    """(N, 68, 3) float32 AFLW2000-3D ``pt3d_68`` (original ground truth, x, y px, z) in list order."""
    pts = np.load(_need(Path(root) / "protocol" / GT_FILES["original"], "original ground truth")).astype(np.float32)
    if pts.ndim != 3 or pts.shape[1] != 3 or pts.shape[2] != 68:
        raise DatasetError(f"{Path(root) / 'protocol' / GT_FILES['original']}: no z row, shape {pts.shape}")
    return np.ascontiguousarray(pts.transpose(0, 2, 1))


def yaw_bins(yaw: np.ndarray) -> np.ndarray:
    """(N,) raw yaw degrees -> (N,) int bin 0: |yaw| <= 30, 1: 30 < |yaw| <= 60, 2: > 60 (incl. > 90)."""
    a = np.abs(np.asarray(yaw, np.float64))
    return np.where(a <= 30, 0, np.where(a <= 60, 1, 2))


@dataclass(frozen=True)
class BinStats:
    label: str
    n: int
    failed: int
    nme: float  # mean NME % over landmarked images (NaN if none)
    nme_failures_counted: float  # failures at failure_nme


@dataclass(frozen=True)
class Summary:
    """Per-bin statistics and the mean of the 3 bins (bins with no image are left out of the mean)."""

    bins: tuple[BinStats, ...]
    mean: float
    mean_failures_counted: float
    n: int
    failed: int
    failure_nme: float

    def row(self, failures_counted: bool = False) -> tuple[float, float, float, float]:
        if failures_counted:
            return tuple(b.nme_failures_counted for b in self.bins) + (self.mean_failures_counted,)
        return tuple(b.nme for b in self.bins) + (self.mean,)


def summarize(nmes: np.ndarray, yaw: np.ndarray, failed: np.ndarray | None = None,
              failure_nme: float = DEFAULT_FAILURE_NME) -> Summary:
    """(N,) NME % (ignored where failed), (N,) yaw, (N,) bool failed -> Summary."""
    nmes = np.asarray(nmes, np.float64)
    failed = np.zeros(len(nmes), bool) if failed is None else np.asarray(failed, bool)
    failed = failed | ~np.isfinite(nmes)
    counted = np.where(failed, failure_nme, nmes)
    b = yaw_bins(yaw)
    stats = []
    for k, label in enumerate(BIN_LABELS):
        m = b == k
        ok = m & ~failed
        stats.append(BinStats(
            label, int(m.sum()), int((m & failed).sum()),
            float(nmes[ok].mean()) if ok.any() else math.nan,
            float(counted[m].mean()) if m.any() else math.nan,
        ))
    present = [s for s in stats if s.n]
    mean = float(np.mean([s.nme for s in present])) if present else math.nan
    mean_fc = float(np.mean([s.nme_failures_counted for s in present])) if present else math.nan
    return Summary(tuple(stats), mean, mean_fc, len(nmes), int(failed.sum()), failure_nme)


# ----------------------------------------------------------------------------- running a method


@dataclass
class Result:
    """Per-image records (list order) and the summary of one evaluation run."""

    data: AFLW2000Set
    method: str
    boxes: str
    pred: np.ndarray  # (N, 68, 2) float32, NaN where failed
    nme: np.ndarray  # (N,) percent, NaN where failed
    failed: np.ndarray  # (N,) bool
    latency_ms: np.ndarray  # (N,) wall time of each method call
    summary: Summary
    meta: dict = field(default_factory=dict)


def evaluate(method: Callable, data: AFLW2000Set, boxes: str = "gt", method_name: str = "method",
             failure_nme: float = DEFAULT_FAILURE_NME, warmup: bool = True,
             progress: Callable[[int, int], None] | None = None) -> Result:
    """Run `method(image_rgb, box_or_None) -> (68, 2) | None` on every image, one call per image.

    boxes: "gt" passes the protocol roi box, "detect" passes None. The first image is run once
    untimed when `warmup` (lazy model loading must not count as latency).
    A method that refines other landmarks (a fit) may set `method.last_input` ((68, 2) or None)
    on each call: those are scored too, as `result.meta["input_summary"]`, so that "better than
    what it started from" is measured in the same run.
    """
    from ..io.image import load_image

    if boxes not in ("gt", "detect"):
        raise ValueError(f"boxes must be 'gt' or 'detect', got '{boxes}'")
    n = len(data)
    pred = np.full((n, 68, 2), np.nan, np.float32)
    start = np.full((n, 68, 2), np.nan, np.float32)
    has_start = False
    lat = np.zeros(n)
    for i in range(n):
        img = load_image(data.image_path(i)).pixels
        box = data.roi_boxes[i].copy() if boxes == "gt" else None
        if warmup and i == 0:
            method(img, box)
        t = time.perf_counter()
        out = method(img, box)
        lat[i] = (time.perf_counter() - t) * 1e3
        if out is not None:
            out = np.asarray(out, np.float32)
            if out.shape != (68, 2):
                raise ValueError(f"{method_name} returned shape {out.shape} for {data.names[i]}, expected (68, 2)")
            pred[i] = out
        inp = getattr(method, "last_input", None)
        if inp is not None:
            start[i], has_start = np.asarray(inp, np.float32).reshape(68, 2), True
        if progress is not None:
            progress(i + 1, n)
    result = score(pred, data, boxes=boxes, method_name=method_name, failure_nme=failure_nme, latency_ms=lat)
    if has_start:
        result.meta["input_summary"] = score(start, data, boxes=boxes, method_name=f"{method_name} input",
                                             failure_nme=failure_nme).summary
    return result


def score(pred: np.ndarray, data: AFLW2000Set, boxes: str = "gt", method_name: str = "method",
          failure_nme: float = DEFAULT_FAILURE_NME, latency_ms: np.ndarray | None = None) -> Result:
    """Score ready-made predictions: (N, 68, 2) with NaN rows for failures -> Result."""
    pred = np.asarray(pred, np.float32).reshape(len(data), 68, 2)
    failed = ~np.isfinite(pred).all(axis=(1, 2))
    e = nme(pred, data.pts68)
    e[failed] = np.nan
    lat = np.full(len(data), np.nan) if latency_ms is None else np.asarray(latency_ms, np.float64)
    return Result(data, method_name, boxes, pred, e, failed, lat, summarize(e, data.yaw, failed, failure_nme))


# ----------------------------------------------------------------------------- reports


def ced(nmes: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Fraction of images with NME <= t for each threshold; NaN (failures) never count as reached."""
    e = np.asarray(nmes, np.float64)
    e = np.where(np.isfinite(e), e, np.inf)
    return (e[None, :] <= np.asarray(thresholds)[:, None]).mean(axis=1) if len(e) else np.zeros(len(thresholds))


def write_csv(result: Result, path: str | Path) -> Path:
    """Per-image rows: name, yaw (raw degrees), bin, nme_pct (empty when failed), failed, latency_ms."""
    path = Path(path)
    b = yaw_bins(result.data.yaw)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "yaw", "bin", "nme_pct", "failed", "latency_ms"])
        for i, nm in enumerate(result.data.names):
            e = result.nme[i]
            w.writerow([nm, f"{result.data.yaw[i]:.4f}", BIN_LABELS[b[i]], "" if not np.isfinite(e) else f"{e:.4f}",
                        int(result.failed[i]), "" if not np.isfinite(result.latency_ms[i]) else f"{result.latency_ms[i]:.2f}"])
    return path


def write_ced_plot(result: Result, path: str | Path, max_nme: float = 10.0) -> Path | None:
    """CED curves (all images and each bin) as a PNG; returns None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    path = Path(path)
    t = np.linspace(0, max_nme, 201)
    b = yaw_bins(result.data.yaw)
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    ax.plot(t, ced(result.nme, t) * 100, "k-", lw=2, label=f"all (n={len(b)}), mean of bins {result.summary.mean:.2f}")
    for k, label in enumerate(BIN_LABELS):
        m = b == k
        if m.any():
            ax.plot(t, ced(result.nme[m], t) * 100, lw=1.2, label=f"|yaw| {label} (n={m.sum()})")
    ax.set_xlabel("NME (%) — normalised by sqrt(w·h) of the GT 68-point box")
    ax.set_ylabel("images (%)")
    ax.set_xlim(0, max_nme)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.set_title(f"AFLW2000-3D, {result.method}, gt={result.data.gt}, boxes={result.boxes}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _fmt(v: float) -> str:
    return "—" if not np.isfinite(v) else f"{v:.2f}"


def markdown_table(result: Result) -> str:
    """Our numbers beside the published ones, plus counts, failures and latency."""
    s = result.summary
    head = ["method", *(f"\\|yaw\\| {lb}" for lb in BIN_LABELS), "mean"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(name, vals):
        lines.append("| " + " | ".join([name, *(_fmt(v) for v in vals)]) + " |")

    row(f"**{result.method}** (ours, {s.n} images, gt={result.data.gt}, boxes={result.boxes})", s.row())
    if s.failed:
        row(f"{result.method}, failures counted at {s.failure_nme:g} %", s.row(True))
    inp = result.meta.get("input_summary")
    if inp is not None:
        row(f"landmarks {result.method} started from (same run)", inp.row())
    for name, vals in {**REFERENCE_DEV, **PUBLISHED}.items():
        row(name, vals)
    counts = ", ".join(f"{b.label}: {b.n} images, {b.failed} failed" for b in s.bins)
    lat = result.latency_ms[np.isfinite(result.latency_ms)]
    out = ["\n".join(lines), "", f"Images per |yaw| bin: {counts}."]
    if len(lat):
        out.append(f"Latency per image (method call, incl. detection when boxes=detect): median "
                   f"{np.median(lat):.1f} ms, mean {lat.mean():.1f} ms, p90 {np.percentile(lat, 90):.1f} ms.")
    out.append("Published rows are on the full 2,000 images (original GT, protocol boxes); the dev-subset "
               "reference row is the original 3DDFA_V2 code on the 200 dev images.")
    for k, v in result.meta.items():
        if k != "input_summary":
            out.append(f"{k}: {v}")
    return "\n".join(out) + "\n"


def write_reports(result: Result, outdir: str | Path, plot: bool = True) -> dict[str, Path | None]:
    """Write ``<stem>.csv``, ``<stem>_ced.png`` and ``<stem>.md`` to `outdir`; returns their paths."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in result.method)
    stem = f"aflw2000_{safe}_{result.data.gt}_{result.boxes}"
    md = outdir / f"{stem}.md"
    md.write_text(f"# AFLW2000-3D 68-point NME (%)\n\n{markdown_table(result)}")
    return {
        "csv": write_csv(result, outdir / f"{stem}.csv"),
        "ced": write_ced_plot(result, outdir / f"{stem}_ced.png") if plot else None,
        "markdown": md,
    }


def format_summary(s: Summary) -> str:
    """One-line-per-bin text for terminals."""
    lines = [f"{b.label:>8}: n={b.n:4d} failed={b.failed:3d} NME {_fmt(b.nme)}"
             + (f" (failures counted {_fmt(b.nme_failures_counted)})" if b.failed else "") for b in s.bins]
    lines.append(f"{'mean':>8}: NME {_fmt(s.mean)}" + (f" (failures counted {_fmt(s.mean_failures_counted)})" if s.failed else ""))
    return "\n".join(lines)

