"""Extreme expressions: does 3DDFA_V3's PRDL (part maps) recover what sparse landmarks miss?

Synthetic renders of the ICT model: random identities, |yaw| <= --max-yaw degrees, random pitch/roll,
SH light and background (as benchmarks/synthetic.py), with one extreme expression each set through
ICT's ARKit blendshapes (plus a little random expression elsewhere):

    eyes closed      eyeBlink_L = eyeBlink_R = 1
    wink L / wink R  eyeBlink_L = 1 / eyeBlink_R = 1 (ICT's _L / _R: the subject's left / right)
    mouth open       jawOpen = 0.9
    frown            browDown_L = browDown_R = 1
    smile L          mouthSmile_L = 1, mouthSmile_R = 0.2 (asymmetric)

Each face is fitted (landmark stages, no photometric stage) to its 68 landmarks + Gaussian noise of
--lm-noise px, without PRDL and with PRDL (`FitConfig.w_prdl` = --w-prdl) against (a) the exact part
maps of the render (`render.parts.part_label_map`: the parser stand-in) and (b) the face parser on the
rendered image (`fit.targets.default_parser()`, the trained `facerecon.detect.parsing` network, when
installed with its weights; --no-parser skips it).
Errors, per fit, then averaged over the faces of an expression:

    eye R / eye L    |opening − true opening| in mm, model space (unposed): the distance between the
                     upper and lower lid midpoints of the 106 (points 72/73: subject's right eye,
                     75/76: left eye)
    mouth            |opening − true| mm between the inner-lip midpoints (68/62 and 68/66)
    ARKit            mean |weight − true| over the blendshapes the expression sets
    NME              68-landmark NME (%) against the noise-free projected landmarks (box sqrt(w·h))
    IoU              mean part IoU of the fit's label map vs the true one (parts present in either)

    python benchmarks/expressions.py --n 4 --out docs/expressions_benchmark.md
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
shared = Path(__file__).resolve().parents[2] / "shared" / "assets"
if "FACERECON_ASSETS" not in os.environ and shared.is_dir():
    os.environ["FACERECON_ASSETS"] = str(shared)

from facerecon.fit import FitConfig, FitTargets, Fitter
from facerecon.io.atomic import atomic_path
from facerecon.models import load_model
from facerecon.models.annotations import annotations_for
from facerecon.objective.prdl import PartMesh, part_iou
from facerecon.render import MeshRenderer

EXPRESSIONS = {
    "eyes closed": {"eyeBlink_L": 1.0, "eyeBlink_R": 1.0},
    "wink L": {"eyeBlink_L": 1.0},
    "wink R": {"eyeBlink_R": 1.0},
    "mouth open": {"jawOpen": 0.9},
    "frown": {"browDown_L": 1.0, "browDown_R": 1.0},
    "smile L": {"mouthSmile_L": 1.0, "mouthSmile_R": 0.2},
}


def make_faces(model, renderer, part_mesh, expression: dict, B: int, gen: torch.Generator, max_yaw_deg: float,
               lm_noise: float):
    """B random faces with `expression`: params, crops (B, S, S, 3) [0, 1], true landmarks (B, 68, 2),
    noisy landmarks, true part label maps (B, S, S) uint8."""
    p = model.random_params(B, generator=gen, exp_scale=0.05)
    e = p.expression.clone()
    e[:, [model.expression_names.index(k) for k in expression]] = 0
    e = e + model.expression_vector(expression, B)
    u = lambda *s: torch.rand(*s, generator=gen)
    rot = torch.stack([(u(B) - 0.5) * math.radians(20), (u(B) * 2 - 1) * math.radians(max_yaw_deg),
                       (u(B) - 0.5) * math.radians(16)], -1)
    trans = torch.stack([(u(B) - 0.5) * 20, (u(B) - 0.5) * 20, (u(B) - 0.5) * 60], -1)
    light = torch.zeros(B, 27)
    light[:, [0, 9, 18]] = (u(B, 1) - 0.5) * 0.4
    d = (u(B, 3) - 0.5) * 0.6
    for c in range(3):
        light[:, c * 9 + 1: c * 9 + 4] = d
    p = p.replace(expression=e.clamp(0, 1), rotation=rot, translation=trans, light=light)
    with torch.no_grad():
        geo = model(p)
        bg = torch.nn.functional.interpolate(u(B, 3, 8, 8), size=(224, 224), mode="bilinear",
                                             align_corners=False).permute(0, 2, 3, 1)
        img = renderer(geo.vertices_world, geo.albedo, light, background=bg, outputs=("overlay",)).overlay[..., :3]
        lm = model.project_points(model.landmarks(geo.vertices), rot, trans, renderer.camera)
        lm_in = lm + torch.randn(lm.shape, generator=gen) * lm_noise
        maps = part_mesh.label_maps(geo.vertices_world, renderer.camera)
    return p, img.clamp(0, 1), lm, lm_in, maps


def measures(model, ann, part_mesh, camera, params, true_params, lm_true, maps_true, names: list[str]) -> dict:
    """Per-face errors (arrays of B) of fitted `params` against the truth."""
    with torch.no_grad():
        def openings(p):
            v = model.shape(p.identity, p.expression)
            l106 = ann.lm106(v)
            l68 = model.landmarks(v)
            return ((l106[:, 72] - l106[:, 73]).norm(dim=-1), (l106[:, 75] - l106[:, 76]).norm(dim=-1),
                    (l68[:, 62] - l68[:, 66]).norm(dim=-1))

        fo, to = openings(params), openings(true_params)
        idx = [model.expression_names.index(k) for k in names]
        arkit = (params.expression[:, idx] - true_params.expression[:, idx]).abs().mean(-1)
        geo = model(params)
        lm = model.project_points(model.landmarks(geo.vertices), params.rotation, params.translation, camera)
        box = lm_true.amax(1) - lm_true.amin(1)
        nme = (lm - lm_true).norm(dim=-1).mean(-1) / (box[:, 0] * box[:, 1]).sqrt() * 100
        maps = part_mesh.label_maps(geo.vertices_world, camera)
    iou = np.nanmean(part_iou(maps, maps_true), 1)
    return {"eye R": (fo[0] - to[0]).abs().numpy(), "eye L": (fo[1] - to[1]).abs().numpy(),
            "mouth": (fo[2] - to[2]).abs().numpy(), "ARKit": arkit.numpy(), "NME": nme.numpy(), "IoU": iou}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4, help="faces per expression")
    ap.add_argument("--max-yaw", type=float, default=45.0, help="degrees")
    ap.add_argument("--lm-noise", type=float, default=1.5, help="px")
    ap.add_argument("--w-prdl", type=float, default=None, help="FitConfig.w_prdl (default: the --prdl option's)")
    ap.add_argument("--steps-prdl", type=int, default=FitConfig.steps_prdl)
    ap.add_argument("--expressions", default=",".join(EXPRESSIONS), help="comma list of: " + ", ".join(EXPRESSIONS))
    ap.add_argument("--no-parser", action="store_true", help="skip the real face parser even when installed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the markdown table to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from facerecon.log import set_progress
    from facerecon.methods.fit import PRDL_WEIGHT

    set_progress(False)

    w_prdl = PRDL_WEIGHT if args.w_prdl is None else args.w_prdl
    model = load_model("ict")
    ann = annotations_for(model)
    part_mesh = PartMesh(ann, model.faces)
    base = FitConfig(steps_photo=0)
    fit_off = Fitter(model, base)
    fit_on = Fitter(model, replace(base, w_prdl=w_prdl, steps_prdl=args.steps_prdl))
    renderer = MeshRenderer(fit_off.camera, model.faces)
    parser = None
    if not args.no_parser:
        from facerecon.errors import FaceReconError
        from facerecon.fit.targets import default_parser

        try:
            parser = default_parser()
        except FaceReconError as e:
            print(f"(no face parser: {e}; the 'parser' rows are left out)")
    runs = ["no PRDL", "PRDL, exact maps"] + (["PRDL, parser"] if parser is not None else [])
    gen = torch.Generator().manual_seed(args.seed)
    keys = ["eye R", "eye L", "mouth", "ARKit", "NME", "IoU"]
    rows, secs = [], {r: 0.0 for r in runs}
    for name in [s.strip() for s in args.expressions.split(",")]:
        expr = EXPRESSIONS[name]
        p, img, lm, lm_in, maps = make_faces(model, renderer, part_mesh, expr, args.n, gen, args.max_yaw,
                                             args.lm_noise)
        targets = FitTargets(lm68=lm_in)
        for run in runs:
            t0 = time.perf_counter()
            if run == "no PRDL":
                res = fit_off.fit(targets)
            elif run == "PRDL, exact maps":
                res = fit_on.fit(replace(targets, parts=torch.from_numpy(maps.astype(np.int64))))
            else:
                parsed = parser.parse((img * 255).round().byte().numpy())
                res = fit_on.fit(replace(targets, parts=torch.as_tensor(np.asarray(parsed), dtype=torch.int64)))
            secs[run] += time.perf_counter() - t0
            m = measures(model, ann, part_mesh, fit_off.camera, res.params, p, lm, maps, list(expr))
            rows.append((name, run, {k: float(np.mean(m[k])) for k in keys}))
            print(f"{name:12s} {run:18s} " + " ".join(f"{k} {rows[-1][2][k]:.3f}" for k in keys), flush=True)
    n_all = args.n * len({r[0] for r in rows})
    head = (f"{args.n} faces per expression, |yaw| <= {args.max_yaw:.0f}°, landmark noise {args.lm_noise} px, "
            f"landmark stages only, w_prdl {w_prdl}, {args.steps_prdl} PRDL steps, seed {args.seed}\n\n"
            "| expression | fit | eye R mm | eye L mm | mouth mm | ARKit abs | NME % | part IoU |\n"
            "|---|---|---|---|---|---|---|---|\n")
    body = "".join(f"| {e} | {r} | " + " | ".join(f"{v[k]:.2f}" if k != "ARKit" else f"{v[k]:.3f}" for k in keys)
                   + " |\n" for e, r, v in rows)
    means = ""
    for run in runs:
        vals = [v for _, r, v in rows if r == run]
        means += f"| **all** | {run} | " + " | ".join(
            f"{np.mean([v[k] for v in vals]):.{3 if k == 'ARKit' else 2}f}" for k in keys) + " |\n"
    timing = "\n" + ", ".join(f"{r}: {secs[r] / n_all:.2f} s/face" for r in runs) + " (shared 2-core machine, noisy)\n"
    table = head + body + means + timing
    print("\n" + table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(Path(args.out)) as tmp:
            Path(tmp).write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
