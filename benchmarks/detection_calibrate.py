"""How the default pipeline's pick thresholds were chosen: on MERL-RAV *train* faces, never the test faces
of benchmarks/detection.py nor AFLW2000-3D.

Places `--per-bin` train faces per |yaw| bin like the benchmark (seed 7: other canvases), runs RetinaFace
down to score 0.3 and 3DDFA_V2 with TTA on every box, and prints the face-likeness (score x mean landmark
confidence) of boxes that match the labelled face and of those that do not, then simulates pick rules
(misses / wrong faces per bin). Approximate: it models neither FaceBoxes nor the padding retries nor the
overlap suppression.

    python benchmarks/detection_calibrate.py [--per-bin 80] [-o calib.csv]
"""

from __future__ import annotations

import argparse
import collections
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import detection as B  # benchmarks/detection.py: the placements

D = B.D


def collect(per_bin: int, out: Path, min_score: float = 0.3) -> list[dict]:
    import torch

    from facerecon.detect.pipeline import DefaultPipeline, head_size

    torch.set_num_threads(1)
    det = DefaultPipeline()
    det.retinaface.score_threshold = min_score
    rows = []
    for name, samples in B.build_sets(["merl-pad", "merl-lfw"], per_bin, 7, "train").items():
        for s in samples:
            g = D.points_box(s.pts68)
            for f in det.retinaface.detect(s.image):
                lf = det.landmarks(s.image, f.box, f.score, f)
                rows.append({"set": name, "name": s.name, "yaw": s.yaw, "score": f.score,
                             "conf": float(np.mean(lf.lm68_conf)), "size": f.size, "head": head_size(lf),
                             "iou": D.iou(D.points_box(lf.lm68), g), "match": int(D.matches(lf, s.pts68))})
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rows


def simulate(rows: list[dict], rule, rescue: float | None, rescue_score: float = 0.5) -> collections.Counter:
    imgs = collections.defaultdict(list)
    for r in rows:
        imgs[(r["set"], r["name"])].append(r)
    res = collections.Counter()
    for bs in imgs.values():
        b = int(D.yaw_bins(np.array([bs[0]["yaw"]]))[0])
        cands = [r for r in bs if r["score"] >= 0.9]
        if rescue is not None:
            cands += [r for r in bs if rescue_score <= r["score"] < 0.9 and r["like"] >= rescue]
        if not cands:
            res[(b, "miss")] += 1
        else:
            res[(b, "found" if max(cands, key=rule)["match"] else "wrong")] += 1
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-bin", type=int, default=80)
    ap.add_argument("--csv", default=None, help="read boxes from this CSV instead of running the detector")
    ap.add_argument("--min-score", type=float, default=0.3, help="RetinaFace boxes collected down to this score")
    ap.add_argument("-o", "--out", default="detection_calib.csv")
    args = ap.parse_args()
    if args.csv:
        with open(args.csv) as fh:
            rows = list(csv.DictReader(fh))
        for r in rows:
            for k in ("yaw", "score", "conf", "size", "head", "iou"):
                r[k] = float(r[k])
            r["match"] = int(r["match"])
    else:
        rows = collect(args.per_bin, Path(args.out), args.min_score)
    for r in rows:
        r["like"] = r["score"] * r["conf"]
    # merl-pad has no second face: its non-matching boxes are false ones; merl-lfw's include the LFW face
    for what, sel in (("matching boxes", lambda r: r["match"]),
                      ("false boxes (merl-pad, not matching)", lambda r: not r["match"] and r["set"] == "merl-pad")):
        v = np.array([r["like"] for r in rows if sel(r)])
        print(f"{what}: {len(v)}, likeness percentiles 0/1/5/10/50/90/100:",
              np.percentile(v, [0, 1, 5, 10, 50, 90, 100]).round(3) if len(v) else "-")

    def gate(t, size="size"):
        return lambda r: (r["like"] >= t, r[size] if r["like"] >= t else r[size] * r["like"])

    rules = {"size x likeness (old)": lambda r: r["size"] * r["like"], "gate 0.3": gate(0.3), "gate 0.5": gate(0.5)}
    # head_size (the 3-D landmarks' extent) in place of the box size, at several gates
    rules.update({f"head, gate {t}": gate(t, "head") for t in (0.3, 0.35, 0.4, 0.45, 0.5)})
    for name, rule in rules.items():
        for rescue, rescue_score in ((None, 0.5), (0.25, 0.5), (0.25, 0.3)):
            res = simulate(rows, rule, rescue, rescue_score)
            print(f"{name:22s} rescue {rescue} from score {rescue_score}: " + "  ".join(
                f"{lb}: miss {res[(k, 'miss')]} wrong {res[(k, 'wrong')]}" for k, lb in enumerate(D.BIN_LABELS)))


if __name__ == "__main__":
    main()
