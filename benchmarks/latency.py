"""Per-face latency of the regression pipeline: detection, alignment, regression (torch and ONNX,
batch 1 and 32), decoding. CPU, 2 threads (torch.set_num_threads, ORT intra-op) by default.

    FACERECON_ASSETS=... python benchmarks/latency.py [--weights W.pt] [--backbone NAME]
        [--images DIR] [--threads 2] [--repeat 20]

Prints a markdown table of milliseconds per face (median and minimum over repeats; the minimum is
the better estimate on a shared machine). Without --weights a randomly initialised regressor of
--backbone is timed (same cost as a trained one).
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch


def timeit(fn, repeat: int, per: int = 1) -> tuple[float, float]:
    """(median, min) ms per item of fn() over `repeat` runs after one warm-up; `per` items per run."""
    fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e3 / per)
    return statistics.median(ts), min(ts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=None, help="regressor weights/checkpoint (default: random init)")
    ap.add_argument("--backbone", default="mobilenet_v1_3ddfa")
    ap.add_argument("--images", default=None, help="folder of face photos (default: $FACERECON_DATA/utkface/images)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--n-images", type=int, default=10)
    ap.add_argument("--detector", default="fast",
                    help="detector of the regression path (default: 'fast', what method 'regress' uses)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from facerecon.align import align_face
    from facerecon.detect.registry import get_detector
    from facerecon.geometry.camera import PerspectiveCamera
    from facerecon.io.image import load_image
    from facerecon.models import load_model
    from facerecon.regress.model import Regressor
    from facerecon.regress.onnx import OnnxRegressor, export_regressor_onnx
    from facerecon.regress.predict import load_regressor, project_landmarks

    model = load_model("ict")
    reg = load_regressor(args.weights) if args.weights else Regressor(args.backbone, model, pretrained=False).eval()
    img_dir = args.images or os.path.join(os.environ.get("FACERECON_DATA", "/work/shared/data"), "utkface", "images")
    paths = sorted(glob.glob(os.path.join(img_dir, "*")))[: args.n_images]
    if not paths:
        print(f"no images in {img_dir}", file=sys.stderr)
        return 1
    images = [load_image(p).pixels for p in paths]
    det = get_detector(args.detector)
    cam = PerspectiveCamera.deep3d(224)
    ref = model.mean_lm5().double().numpy()
    rows = []

    def cycling(fn):
        """A call that runs fn on the next image each time (no repeated-input caching effects)."""
        it = iter(range(10 ** 9))
        return lambda: fn(images[next(it) % len(images)])

    det_row = f"detection ({args.detector})"
    rows.append((det_row, *timeit(cycling(det.detect), args.repeat)))
    if args.detector != "default":  # the fitting path's detector (landmark TTA), for reference
        rows.append(("detection (default, for reference: not in the sum)",
                     *timeit(cycling(get_detector("default").detect), args.repeat)))
    faces = [det.detect(im)[0] for im in images]
    rows.append(("alignment (224² crop)", *timeit(
        lambda: [align_face(im, f.lm5, ref, camera=cam, lm68=f.lm68) for im, f in zip(images, faces)],
        args.repeat, len(images))))
    crops = np.stack([align_face(im, f.lm5, ref, camera=cam).image for im, f in zip(images, faces)])
    c1 = crops[:1]
    c32 = np.concatenate([crops] * (32 // len(crops) + 1))[:32]
    rows.append(("regression torch, batch 1", *timeit(lambda: reg.predict(c1), args.repeat)))
    rows.append(("regression torch, batch 32", *timeit(lambda: reg.predict(c32), max(3, args.repeat // 4), 32)))
    tmp = tempfile.TemporaryDirectory()
    ort = OnnxRegressor(export_regressor_onnx(reg, os.path.join(tmp.name, "r.onnx")), threads=args.threads)
    rows.append(("regression ONNX, batch 1", *timeit(lambda: ort.predict(c1), args.repeat)))
    rows.append(("regression ONNX, batch 32", *timeit(lambda: ort.predict(c32), max(3, args.repeat // 4), 32)))
    p1 = reg.predict(c1)

    @torch.no_grad()
    def decode():
        model(p1)
        project_landmarks(model, p1)

    rows.append(("decoding (mesh + normals + 68 lm)", *timeit(decode, args.repeat)))
    by = {r[0]: r for r in rows}
    e2e = [by[det_row], by["alignment (224² crop)"], by["regression ONNX, batch 1"],
           by["decoding (mesh + normals + 68 lm)"]]
    rows.append(("end to end (ONNX b1), sum", sum(r[1] for r in e2e), sum(r[2] for r in e2e)))
    # The real thing, not a sum: one API call per photo (no batching), torch and ONNX regressor.
    from facerecon.api import FaceReconstructor

    # The regress method's default is one pass (flip_tta off); flip TTA regresses each crop twice.
    for name, r, tta in (("torch, flip_tta on", reg, True), ("torch (default: flip_tta off)", reg, False),
                         ("ONNX, flip_tta on", ort, True)):
        rec = FaceReconstructor(model, detector=det, method="regress", regressor=r, flip_tta=tta)
        rows.append((f"end to end, FaceReconstructor(method='regress').reconstruct, {name} b1",
                     *timeit(cycling(lambda im, rec=rec: rec.reconstruct(im, photometric=False)), args.repeat)))
    tmp.cleanup()
    print(f"backbone {reg.backbone_name}, {args.threads} threads, {len(images)} images from {img_dir}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| step | ms/face median | ms/face min |\n|---|---|---|")
    for name, med, mn in rows:
        print(f"| {name} | {med:.1f} | {mn:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
