"""PRNet position-map heads against the 3DMM regressor and fitting (issue 15's closing figures).

  aflw   AFLW2000-3D dev, GT roi boxes: 68-point 2-D NME per |yaw| bin and the mean of bins, and the
         3-D NME (`eval.aflw2000.nme3d`: pt3d_68 with z, each z centred, over the GT box size).
         Every method runs the evaluator's way (`eval.methods.ReconstructionRunner`: 3DDFA_V2 with
         TTA on the roi box → 5-point crop → the method); "fit" is the landmark-only fit.
  dense  the data engine's held-out views ("val" split, photos unseen in training): each crop as a
         photo through the API (detect → align → method); mean vertex distance (mm) over the face
         (`prnet.train.face_vertex_mask`) after a similarity alignment onto the engine's mesh.
  speed  parameters, CPU ms per face (torch; ONNX Runtime when it exports) at batch 1 and 32.

  FACERECON_ASSETS=../shared/assets python benchmarks/prnet_eval.py aflw --methods prnet regress fit \\
      --prnet-weights weights/prnet_mobilenetv2.pt --out out/prnet_aflw.json
  python benchmarks/prnet_eval.py dense --engine /work/scratch_parser/ds --n 60 --methods prnet regress
  python benchmarks/prnet_eval.py speed --threads 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def method_options(name: str, a) -> tuple[str, dict]:
    """(reconstruction method, options) of a benchmark name: "prnet[:WEIGHTS]", "regress", "fit"."""
    if name.startswith("prnet"):
        w = name.split(":", 1)[1] if ":" in name else a.prnet_weights
        return "prnet", ({"weights": w} if w else {})
    return name, {}


def run_aflw(a) -> dict:
    from facerecon.eval import aflw2000 as bench
    from facerecon.eval.methods import ReconstructionRunner, reconstruction_landmarks_3d
    from facerecon.log import progress

    data = bench.load_aflw2000(a.root)
    gt3 = bench.load_pts3d(a.root)
    if a.limit:
        data, gt3 = data.subset(a.limit), gt3[:a.limit]
    out = {}
    for name in a.methods:
        meth, opts = method_options(name, a)
        runner = ReconstructionRunner(meth, photometric=False, **opts)
        from facerecon.io.image import load_image

        p2 = np.full((len(data), 68, 2), np.nan, np.float32)
        p3 = np.full((len(data), 68, 3), np.nan, np.float64)
        t0 = time.perf_counter()
        for i in progress(range(len(data)), desc=name):
            img = load_image(data.image_path(i)).pixels
            r = runner.run(img, data.roi_boxes[i].copy())
            if r is None:
                continue
            p2[i] = r.lm68
            l3 = reconstruction_landmarks_3d(r)
            if l3 is not None:
                p3[i] = l3
        res = bench.score(p2, data, method_name=name)
        e3 = bench.nme3d(p3, gt3)
        s3 = bench.summarize(e3, data.yaw, ~np.isfinite(e3))
        out[name] = {"nme2d": list(res.summary.row()), "nme3d": list(s3.row()), "failed": int(res.summary.failed),
                     "n": len(data), "s_per_image": (time.perf_counter() - t0) / len(data),
                     "per_image": {"name": list(data.names), "nme2d": [float(v) for v in res.nme],
                                   "nme3d": [float(v) for v in e3]}}
        print(f"{name:28s} 2-D " + " ".join(f"{v:5.2f}" for v in res.summary.row())
              + " | 3-D " + " ".join(f"{v:5.2f}" for v in s3.row()), flush=True)
    return out


def run_dense(a) -> dict:
    from facerecon.api import FaceReconstructor
    from facerecon.errors import FaceReconError
    from facerecon.io.image import load_image
    from facerecon.log import progress
    from facerecon.models import load_model
    from facerecon.prnet.data import engine_rows
    from facerecon.prnet.train import dense_error_mm, face_vertex_mask

    rows = engine_rows(a.engine, "val")
    model = load_model("ict")
    mask = face_vertex_mask(model)
    out = {}
    for name in a.methods:
        n = a.n_fit if name == "fit" else a.n
        pick = np.unique(np.linspace(0, len(rows) - 1, min(n, len(rows))).round().astype(int))
        meth, opts = method_options(name, a)
        rec = FaceReconstructor(model, method=meth, **opts)
        errs, failed = [], 0
        t0 = time.perf_counter()
        for i in progress(pick, desc=name):
            root, row = rows[i]
            with np.load(root / row["sample"]) as z:
                gt = torch.as_tensor(z["vertices_world"]).double()[None]
            try:
                res = rec.reconstruct(load_image(root / row["image"]), photometric=False)
            except FaceReconError:
                res = []
            if not res:
                failed += 1
                continue
            v = torch.as_tensor(res[0].vertices).double()[None]
            errs.append(float(dense_error_mm(v, gt, mask)[0]))
        out[name] = {"dense_mm": float(np.mean(errs)), "median_mm": float(np.median(errs)), "n": len(errs),
                     "failed": failed, "s_per_image": (time.perf_counter() - t0) / max(len(pick), 1)}
        print(f"{name:28s} dense {np.mean(errs):.2f} mm (median {np.median(errs):.2f}, n={len(errs)}, "
              f"no face {failed})", flush=True)
    return out


def run_speed(a) -> dict:
    from facerecon.prnet.model import PositionNet
    from facerecon.prnet.nets import count_parameters

    torch.set_num_threads(a.threads)
    out = {}
    for enc in a.encoders:
        net = PositionNet(enc, a.width, a.size, head=a.head).eval()
        row = {"params": count_parameters(net), "fp16_mib": count_parameters(net) * 2 / 2 ** 20}
        for b in (1, 32):
            x = torch.rand(b, 3, a.size, a.size)
            with torch.no_grad():
                net(x)
                reps = 10 if b == 1 else 2
                t = time.perf_counter()
                for _ in range(reps):
                    net(x)
            row[f"torch_ms_b{b}"] = (time.perf_counter() - t) / reps / b * 1e3
        try:
            import onnxruntime as ort

            path = Path(a.tmp) / f"prnet_{enc}.onnx"
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.onnx.export(net.net, torch.rand(1, 3, a.size, a.size), path, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "b"}, "y": {0: "b"}}, opset_version=17, dynamo=False)
            so = ort.SessionOptions()
            so.intra_op_num_threads = a.threads
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            for b in (1, 32):
                x = np.random.rand(b, 3, a.size, a.size).astype(np.float32)
                sess.run(None, {"x": x})
                reps = 10 if b == 1 else 2
                t = time.perf_counter()
                for _ in range(reps):
                    sess.run(None, {"x": x})
                row[f"onnx_ms_b{b}"] = (time.perf_counter() - t) / reps / b * 1e3
        except Exception as e:  # noqa: BLE001 - report, don't fail the torch figures
            row["onnx_error"] = f"{type(e).__name__}: {e}"[:200]
        out[enc] = row
        print(enc, json.dumps(row), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["aflw", "dense", "speed"])
    ap.add_argument("--methods", nargs="+", default=["prnet", "regress", "fit"],
                    help="prnet, prnet:WEIGHTS, regress, fit, regress+refine")
    ap.add_argument("--prnet-weights", default=None)
    ap.add_argument("--root", default="/work/shared/data/aflw2000-3d-dev")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--engine", nargs="+", default=["/work/scratch_parser/ds"])
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--n-fit", type=int, default=20)
    ap.add_argument("--encoders", nargs="+", default=["mobilenetv2", "baseline", "resnet18", "mobilenetv1_3ddfa"])
    ap.add_argument("--width", type=float, default=0.75)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--head", type=int, default=3, help="decoder head channels (speed)")
    ap.add_argument("--tmp", default="/tmp/prnet_onnx")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    res = {"aflw": run_aflw, "dense": run_dense, "speed": run_speed}[a.what](a)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
