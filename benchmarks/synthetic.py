"""Synthetic benchmark: render random faces of the model, reconstruct them, measure the error.

For each face: random identity, expression, pose (|yaw| up to --max-yaw), SH light and a random
textured background are rendered at 224² with our renderer; the fitter sees only the image and its
68 landmarks (exact projections + Gaussian noise of --lm-noise px). Reported: mean vertex error in mm
over the face area after a similarity alignment (Umeyama, as in the literature), the same without
alignment, 68-landmark NME (normalised by sqrt(w·h) of the landmark box), and time per face.

    python benchmarks/synthetic.py --n 24 --batch 8
    python benchmarks/synthetic.py --sets 8 --views 6    # image sets: one identity, several views
    python benchmarks/synthetic.py --n 24 --dense        # + FaceMesh's dense points (MediaPipe) on the renders
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
shared = Path(__file__).resolve().parents[2] / "shared" / "assets"
if "FACERECON_ASSETS" not in os.environ and shared.is_dir():
    os.environ["FACERECON_ASSETS"] = str(shared)

from facerecon.fit import FitConfig, FitTargets, Fitter
from facerecon.geometry.rotations import fit_similarity
from facerecon.models import load_model
from facerecon.render import MeshRenderer


def similarity_align(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Umeyama: the similarity transform of src (B,V,3) that best matches dst; returns aligned src."""
    scale, R, t = fit_similarity(src, dst)
    return scale[:, None, None] * src @ R.transpose(1, 2) + t[:, None]


def make_batch(model, renderer, B, gen, max_yaw, lm_noise):
    p = model.random_params(B, generator=gen, exp_scale=0.25)
    u = lambda *s: torch.rand(*s, generator=gen)
    rot = torch.stack([(u(B) - 0.5) * 0.5, (u(B) * 2 - 1) * max_yaw, (u(B) - 0.5) * 0.4], -1)
    trans = torch.stack([(u(B) - 0.5) * 20, (u(B) - 0.5) * 20, (u(B) - 0.5) * 60], -1)
    light = torch.zeros(B, 27)
    light[:, [0, 9, 18]] = (u(B, 1) - 0.5) * 0.4  # ambient per channel around Deep3D's 0.8
    d = (u(B, 3) - 0.5) * 0.6  # a directional component, same for all channels (white light)
    for c in range(3):
        light[:, c * 9 + 1: c * 9 + 4] = d
    alb_off = (u(B, 1, 3) - 0.5) * 0.3
    p = p.replace(rotation=rot, translation=trans, light=light,
                  albedo_offset=alb_off.expand(B, model.n_vertices, 3).clone())
    with torch.no_grad():
        geo = model(p)
        bg = torch.nn.functional.interpolate(u(B, 3, 8, 8), size=(224, 224), mode="bilinear",
                                             align_corners=False).permute(0, 2, 3, 1)
        out = renderer(geo.vertices_world, geo.albedo, light, background=bg, outputs=("overlay",))
        img = out.overlay[..., :3].clamp(0, 1)
        lm = renderer.camera.project(model.landmarks(geo.vertices_world))[..., :2]
        lm_in = lm + torch.randn(lm.shape, generator=gen) * lm_noise
    return p, geo, img, lm, lm_in


def identity_sets(model, renderer, n_people, views, gen, max_yaw, lm_noise):
    """Image sets: `views` renders of each random identity (own expression, pose, light). Returns
    the mean neutral-shape error (mm, similarity-aligned) of one photo's fit, of the average of the
    independent fits, and of the set fit (`share_identity=True`), landmarks only."""
    zero = torch.zeros(1, model.layout.n_expression)
    err = {"one photo": [], "average of independent fits": [], "set fit (shared identity)": []}

    def shape_error(identity, truth):
        with torch.no_grad():
            s = model.shape(identity, zero.expand(len(identity), -1))
            return float((similarity_align(s, truth.expand(len(identity), -1, -1)) - truth).norm(dim=-1).mean())

    for _ in range(n_people):
        p, *_ = make_batch(model, renderer, views, gen, max_yaw, lm_noise)
        p = p.replace(identity=p.identity[:1].expand(views, -1).clone())
        with torch.no_grad():
            lm = renderer.camera.project(model.landmarks(model(p).vertices_world))[..., :2]
            truth = model.shape(p.identity[:1], zero)
        lm_in = lm + torch.randn(lm.shape, generator=gen) * lm_noise
        solo = Fitter(model, FitConfig()).fit(FitTargets(lm68=lm_in)).params.identity
        shared = Fitter(model, FitConfig(share_identity=True)).fit(FitTargets(lm68=lm_in)).params.identity
        err["one photo"].append(sum(shape_error(solo[i:i + 1], truth) for i in range(views)) / views)
        err["average of independent fits"].append(shape_error(solo.mean(0, keepdim=True), truth))
        err["set fit (shared identity)"].append(shape_error(shared[:1], truth))
    return {k: sum(v) / len(v) for k, v in err.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-yaw", type=float, default=0.8, help="radians")
    ap.add_argument("--lm-noise", type=float, default=1.0, help="px")
    ap.add_argument("--photo-steps", type=int, default=FitConfig.steps_photo)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sets", type=int, default=0, metavar="PEOPLE",
                    help="instead: image sets of PEOPLE random identities × --views renders each")
    ap.add_argument("--views", type=int, default=6)
    ap.add_argument("--dense", action="store_true",
                    help="also fit with FaceMesh's dense points, found by MediaPipe on the rendered images")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model("ict")
    fitter = Fitter(model, FitConfig(steps_photo=args.photo_steps))
    renderer = MeshRenderer(fitter.camera, model.faces)
    gen = torch.Generator().manual_seed(args.seed)
    if args.sets:
        res = identity_sets(model, renderer, args.sets, args.views, gen, args.max_yaw, args.lm_noise)
        print(f"{args.sets} random identities × {args.views} views, |yaw| <= {args.max_yaw:.2f} rad, "
              f"landmark noise {args.lm_noise} px, landmarks only\n")
        print("| identity from | neutral-shape error mm (sim-aligned) |\n|---|---|")
        for k, v in res.items():
            print(f"| {k} | {v:.2f} |")
        return
    runs = [("lm only", False, False), ("lm + photo", True, False)]
    if args.dense:
        from facerecon.detect.mediapipe import MediaPipeLandmarker
        from facerecon.fit.dense import load_dense_map

        facemesh, dense_map = MediaPipeLandmarker(), load_dense_map("ict")
        dense_fitter = Fitter(model, fitter.cfg, dense_map=dense_map)
        runs += [("lm + dense", False, True), ("lm + dense + photo", True, True)]
    if args.photo_steps == 0:
        runs = [r for r in runs if not r[1]]
    rows = {name: [] for name, _, _ in runs}
    times = dict.fromkeys(rows, 0.0)
    done = n_found = 0
    while done < args.n:
        B = min(args.batch, args.n - done)
        _p, geo, img, lm, lm_in = make_batch(model, renderer, B, gen, args.max_yaw, args.lm_noise)
        dense = dense_w = None
        if args.dense:  # FaceMesh on the 8-bit render, in the box of the noisy landmarks
            dense, dense_w = torch.zeros(B, dense_map.n_points, 2), torch.zeros(B, 1)
            for i in range(B):
                px = (img[i] * 255).round().byte().numpy()
                box = torch.cat([lm_in[i].amin(0), lm_in[i].amax(0)]).numpy()
                mesh = facemesh.mesh_in_box(px, box)
                if mesh is not None:
                    dense[i], dense_w[i] = torch.from_numpy(mesh[: dense_map.n_points, :2]), 1.0
            n_found += int(dense_w.sum())
        for name, photo, use_dense in runs:
            t = time.perf_counter()
            f = dense_fitter if use_dense else fitter
            res = f.fit(FitTargets(lm68=lm_in, image=img if photo else None,
                                   dense=dense if use_dense else None, dense_weights=dense_w))
            times[name] += time.perf_counter() - t
            with torch.no_grad():
                fit_geo = model(res.params)
            v_al = similarity_align(fit_geo.vertices, geo.vertices)
            err_al = (v_al - geo.vertices).norm(dim=-1).mean(-1)
            err_raw = (fit_geo.vertices_world - geo.vertices_world).norm(dim=-1).mean(-1)
            wh = (lm.amax(1) - lm.amin(1)).prod(-1).sqrt()
            nme = (res.lm68 - lm).norm(dim=-1).mean(-1) / wh * 100
            for i in range(B):
                rows[name].append((float(err_al[i]), float(err_raw[i]), float(nme[i])))
        done += B
    print(f"faces: {args.n}, |yaw| <= {args.max_yaw:.2f} rad, landmark noise {args.lm_noise} px, "
          f"threads {args.threads}, model {model.name} ({model.n_vertices} vertices)"
          + (f", FaceMesh found on {n_found}" if args.dense else "") + "\n")
    print("| fit | vertex err mm (sim-aligned) | vertex err mm (posed, raw) | landmark NME % | s / face |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        t = torch.tensor(r)
        print(f"| {name} | {t[:, 0].mean():.2f} (median {t[:, 0].median():.2f}) | {t[:, 1].mean():.2f} | "
              f"{t[:, 2].mean():.2f} | {times[name] / args.n:.2f} |")


if __name__ == "__main__":
    main()
