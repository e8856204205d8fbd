"""Detection / face-picking benchmark on held-out sets (never the AFLW2000-3D dev split).

Per |yaw| bin: found / missed / wrong face, and the NME of the picked face's landmarks
(`facerecon.eval.detection` defines the match rule). Sets (`--sets`, all by default):

- ``merl-pad``: aflw-lm68's MERL-RAV *test* faces (120x120 AFLW crops, manual labels; `--split train`
  draws the train split instead, for choosing settings without touching the test faces), each resized to a random 130-260 px and placed at a random position on a canvas
  1.8-2.6x its size filled with the crop's reflected, blurred surroundings (no second sharp face).
- ``merl-lfw``: the same faces beside another person: an LFW photo (identity-sets/lfw, random
  200-400 px) is extended sideways by 0.9x its width with its blurred edge, and the crop is pasted
  there (feathered) with its face 1.15-1.6x the LFW face's size (LFW faces are ~0.45 of the photo), so
  the labelled face is the largest one and the LFW face is a real "wrong face" to avoid.
- ``engine-pad`` / ``engine-lfw`` (with ``--engine DIR``): the data engine's views (`facerecon dataset
  build ... --no-photometric --views 4`, docs/dataset.md; exact model landmarks at every yaw, all 68
  positioned) placed the same two ways; the LFW photo beside is of another identity.
- ``lfw``: the 200 LFW photos themselves; the person is the face at the image centre (no landmarks,
  no yaw: one row; centre rule of `eval.detection`).

The MERL faces are drawn per |yaw| bin (`--per-bin`, the same faces for both placements); seeds are
fixed (`--seed`), so two runs see the same images.

    python benchmarks/detection.py [--per-bin 100] [--sets merl-pad,merl-lfw,lfw] [--threads 1]
        [--engine DIR] [--option KEY=VALUE ...] [-o DIR]

`--option` passes keyword arguments to the detector (`DefaultPipeline`), e.g. to compare settings.
"""

from __future__ import annotations

import argparse
import ast
import csv
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
shared = Path(__file__).resolve().parents[2] / "shared"
if "FACERECON_ASSETS" not in os.environ and (shared / "assets").is_dir():
    os.environ["FACERECON_ASSETS"] = str(shared / "assets")

from PIL import Image

from facerecon.detect import placement as P
from facerecon.eval import detection as D
from facerecon.eval.aflw2000 import yaw_bins


def place_pad(face, rng) -> D.Sample:
    name, crop, pts, yaw = face
    return D.Sample(f"pad/{name}", *P.place_on_padding(crop, pts, rng), yaw)


def place_lfw(face, photo: np.ndarray, rng) -> D.Sample:
    name, crop, pts, yaw = face
    return D.Sample(f"lfw-paste/{name}", *P.place_beside(crop, pts, photo, rng), yaw)


def merl_faces(root: Path, per_bin: int, seed: int, split: str = "test") -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """(name, crop (120,120,3), lm68 (68,2) NaN-holed, yaw) for up to per_bin MERL faces of `split` per bin."""
    lab = np.load(root / "labels.npz")
    test = np.flatnonzero(lab["merl_split"] == split)
    rng = np.random.default_rng(seed)
    b = yaw_bins(lab["yaw_deg"][test])
    pick = []
    for k in range(3):
        idx = test[b == k]
        pick += list(rng.permutation(idx)[:per_bin])
    out = []
    for i in sorted(pick):
        name = str(lab["names"][i])
        img = np.asarray(Image.open(root / "images" / f"{name}.jpg").convert("RGB"))
        out.append((name, img, lab["lm68"][i].astype(np.float32), float(lab["yaw_deg"][i])))
    return out


def engine_faces(root: Path, per_bin: int, seed: int) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """(name, 224x224 crop, lm68 (68, 2) exact model landmarks, yaw) from a `facerecon dataset build`
    folder, up to per_bin samples per |yaw| bin (every view, the unrotated view 0 included)."""
    import json

    rows = [json.loads(ln) for ln in (root / "manifest.jsonl").read_text().splitlines() if ln.strip()]
    rows = [r for r in rows if r.get("status") == "ok"]
    rng = np.random.default_rng(seed)
    b = yaw_bins(np.array([r["yaw"] for r in rows]))
    out = []
    for k in range(3):
        for i in sorted(rng.permutation(np.flatnonzero(b == k))[:per_bin]):
            r = rows[i]
            with np.load(root / r["sample"]) as z:
                lm = z["lm68"].astype(np.float32)
            img = np.asarray(Image.open(root / r["image"]).convert("RGB"))
            out.append((Path(r["image"]).stem, img, lm, float(r["yaw"])))
    return out


def lfw_photos(root: Path) -> list[tuple[str, np.ndarray]]:
    files = sorted(root.glob("*/*.jpg"))
    return [(str(f.relative_to(root)), np.asarray(Image.open(f).convert("RGB"))) for f in files]


def build_sets(names: list[str], per_bin: int, seed: int, split: str = "test",
               engine: str | None = None) -> dict[str, list[D.Sample]]:
    data = shared / "data"
    sets: dict[str, list[D.Sample]] = {}
    faces = merl_faces(data / "aflw-lm68", per_bin, seed, split) if {"merl-pad", "merl-lfw"} & set(names) else []
    photos = lfw_photos(data / "identity-sets" / "lfw")
    if "merl-pad" in names:
        rng = np.random.default_rng(seed + 1)
        sets["merl-pad"] = [place_pad(f, rng) for f in faces]
    if "merl-lfw" in names:
        rng = np.random.default_rng(seed + 2)
        sets["merl-lfw"] = [place_lfw(f, photos[int(rng.integers(len(photos)))][1], rng) for f in faces]
    if engine is not None:
        views = engine_faces(Path(engine), per_bin, seed)
        rng = np.random.default_rng(seed + 3)
        sets["engine-pad"] = [place_pad(f, rng) for f in views]
        # the views are of LFW people: the photo beside is drawn from the other identities
        sets["engine-lfw"] = []
        for f in views:
            while True:
                n, im = photos[int(rng.integers(len(photos)))]
                if n.split("/")[0] not in f[0]:
                    break
            sets["engine-lfw"].append(place_lfw(f, im, rng))
    if "lfw" in names:
        sets["lfw"] = [D.Sample(f"lfw/{n}", im, None, float("nan"), ((im.shape[1] - 1) / 2, (im.shape[0] - 1) / 2))
                       for n, im in photos]
    return sets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-bin", type=int, default=100, help="MERL test faces per |yaw| bin")
    ap.add_argument("--sets", default="merl-pad,merl-lfw,lfw")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engine", default=None, metavar="DIR",
                    help="a `facerecon dataset build` output: adds sets engine-pad / engine-lfw of its views")
    ap.add_argument("--split", default="test", choices=("test", "train"), help="MERL-RAV split of the faces")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a loaded 2-core machine 2 threads made conv2d ~40x slower)")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="keyword argument for DefaultPipeline (Python literal value)")
    ap.add_argument("--save-images", type=int, default=0, help="write the first N images of each set to -o")
    ap.add_argument("-o", "--out", default="detection_out")
    args = ap.parse_args()

    import torch
    from tqdm import tqdm

    from facerecon.detect.pipeline import DefaultPipeline

    torch.set_num_threads(args.threads)
    kw = {k: ast.literal_eval(v) for k, v in (o.split("=", 1) for o in args.option)}
    det = DefaultPipeline(**kw)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sets = build_sets(args.sets.split(","), args.per_bin, args.seed, args.split, args.engine)
    det.detect(next(iter(sets.values()))[0].image)  # warm-up: lazy loading is not latency
    import facerecon

    report = [f"package: {Path(facerecon.__file__).parent}", f"options: {kw or 'defaults'}; MERL split {args.split}; per-bin {args.per_bin}; seed {args.seed}; threads {args.threads}", ""]
    for name, samples in sets.items():
        for s in samples[: args.save_images]:
            Image.fromarray(s.image).save(out / f"{s.name.replace('/', '_')}.jpg")
        with tqdm(total=len(samples), desc=name) as bar:
            recs = D.run(det.detect, samples, progress=bar.update)
        with open(out / f"{name}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["name", "yaw", "status", "any_match", "nme", "n_faces", "ms"])
            for r in recs:
                w.writerow([r.name, f"{r.yaw:.2f}", r.status, int(r.any_match), f"{r.nme:.3f}", r.n_faces, f"{r.ms:.1f}"])
        ms = np.array([r.ms for r in recs])
        report += [D.markdown(D.summarize(recs), name), "",
                   f"ms per image: median {np.median(ms):.0f}, mean {ms.mean():.0f}", ""]
        print("\n".join(report[-4:]), flush=True)
    (out / "report.md").write_text("\n".join(report))


if __name__ == "__main__":
    main()
