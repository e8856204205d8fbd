"""How well each texture source reproduces held-out photos (issue 18; docs/albedo.md).

Held-out photos: the data engine's 'val' split (never used by the albedo basis). For each photo the
default detector runs once; then `FaceReconstructor.reconstruct_faces` with method 'fit' (photometric)
for each variant:

    constant  ICT's constant albedo (texture="constant": no per-vertex offset)
    basis     the learned albedo basis, coefficients fitted (texture="basis")
    offset    the fitter's default: constant + a smooth fitted per-vertex offset
    photo     the 'offset' fit's geometry and light with the photo's de-lit colours (texture="photo";
              a reference: it copies the photo, it is not a model)
    refined   the 'offset' fit's geometry and light with the GCN texture refiner's albedo
              (texture="refined", `methods.texture.with_refined_texture`); its ms = the fit's + the
              refiner's, and `refiner_ms` is the refiner alone (features, sampling, network)

Each is rendered in the crop camera with its fitted SH light and compared with the crop over the
model's skin region (narrow face) where rendered: L1 (mean abs. difference per channel, [0, 1]
units), PSNR (dB), SSIM (scikit-image, averaged over the mask); identity cosine: MobileFaceNet
embeddings (flip-averaged, aligned on the crop's 5 points) of the render over black vs the photo under
the same face mask over black. Time: CPU ms per face of `reconstruct_faces` (torch threads 1; the
machine is shared, so timings are noisy). Also a re-shading check without fitting: the engine's
de-lit albedo of each val photo (`dataset.albedo.delight_sample`), projected onto the basis and
re-shaded with the photo's solved light, vs the photo's vertex colours.

    python benchmarks/texture.py --engine /work/scratch_parser/ds --n 30 --out OUT_DIR [--grid docs/images/texture_grid.jpg]
        [--steps-photo 40 --steps-albedo 10] [--variants offset,photo,refined]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
shared = Path(__file__).resolve().parents[2] / "shared" / "assets"
if "FACERECON_ASSETS" not in os.environ and shared.is_dir():
    os.environ["FACERECON_ASSETS"] = str(shared)

from facerecon import api
from facerecon.dataset.albedo import delight_sample
from facerecon.dataset.store import load_sample, read_manifest
from facerecon.methods.texture import with_photo_texture, with_refined_texture
from facerecon.models import load_model
from facerecon.nets.mobilefacenet import IdentityEncoder, similarity_to_template
from facerecon.render import MeshRenderer

VARIANTS = ("constant", "basis", "offset")
RECOLOURED = ("photo", "refined")  # re-colour the 'offset' fit


def render(rec, skin_w: torch.Tensor):
    """(H, W, 3) render in [0, 1], (H, W) skin mask, (H, W) face mask of a reconstruction."""
    g = rec.geometry
    r = MeshRenderer(rec.camera_crop, rec.topology.triangles, outputs=("rgb", "mask", "albedo"))
    out = r(g.vertices_world, skin_w.to(g.albedo).expand(1, -1, 3), rec.params.light.to(g.albedo))
    rgb = r(g.vertices_world, g.albedo, rec.params.light.to(g.albedo), outputs=("rgb",)).rgb
    face = out.mask[0] > 0.5
    skin = face & (out.albedo[0, ..., 0] > 0.99)
    return rgb[0].clamp(0, 1).numpy(), skin.numpy(), face.numpy()


def metrics(img: np.ndarray, photo: np.ndarray, mask: np.ndarray) -> dict:
    d = img[mask] - photo[mask]
    out = {"l1": float(np.abs(d).mean()), "psnr": float(10 * np.log10(1.0 / max(float((d ** 2).mean()), 1e-12)))}
    try:
        from skimage.metrics import structural_similarity

        _, smap = structural_similarity(img, photo, channel_axis=2, data_range=1.0, full=True)
        out["ssim"] = float(smap[mask].mean())
    except ImportError:
        pass
    return out


def identity_cos(enc, img, photo, face_mask, lm5) -> float:
    m = face_mask[..., None].astype(np.float32)
    x = torch.from_numpy(np.stack([img * m, photo * m])).permute(0, 3, 1, 2).float()
    A = similarity_to_template(torch.as_tensor(lm5, dtype=torch.float32)[None]).expand(2, 2, 3)
    with torch.no_grad():
        e = enc(x, A)
    return float((e[0] * e[1]).sum())


def reshade_check(engine: Path, rows: list, model_b) -> dict:
    """Basis projection of the engine's de-lit val textures, re-shaded with their light, vs the photo."""
    from PIL import Image

    from facerecon.dataset.albedo import _sample_rgb
    from facerecon.geometry.mesh import vertex_normals
    from facerecon.render.shading import sh_shade

    faces = model_b.faces.numpy()
    skin = np.zeros(model_b.n_vertices, bool)
    skin[model_b.region("skin").numpy()] = True
    mean = model_b.albedo_mean.double().numpy().reshape(-1)
    B = model_b.albedo_basis.double().numpy()  # (3V, K)
    errs = {"self": [], "basis": [], "basis_mean": []}
    for r in rows:
        s = load_sample(engine / r["sample"])
        img = np.asarray(Image.open(engine / r["image"]).convert("RGB"))
        t = delight_sample(s, img, faces)
        ok = t.seen & skin
        rows3 = (3 * np.flatnonzero(ok)[:, None] + np.arange(3)).ravel()
        y = t.albedo.astype(np.float64).reshape(-1)[rows3] - mean[rows3]
        A = B[rows3]
        # MAP with the N(0, 1) prior and a per-value noise of 0.05 (the de-lit albedo's spread)
        coef = np.linalg.solve(A.T @ A + 0.05 ** 2 * np.eye(A.shape[1]), A.T @ y)
        fit = (mean + B @ coef).reshape(-1, 3)
        vw = torch.as_tensor(s["vertices_world"], dtype=torch.float64)[None]
        n = vertex_normals(vw, torch.as_tensor(faces))
        light = torch.as_tensor(t.light, dtype=torch.float64)[None]
        col = _sample_rgb(img, np.asarray(s["vertices_px"])[:, :2])
        for name, alb in (("self", t.albedo.astype(np.float64)), ("basis", fit),
                          ("basis_mean", mean.reshape(-1, 3))):
            shaded = sh_shade(torch.as_tensor(alb)[None], n, light)[0].numpy()
            errs[name].append(float(np.abs(shaded[ok] - col[ok]).mean()))
    return {k: float(np.mean(v)) for k, v in errs.items()} | {"photos": len(rows)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", default="/work/scratch_parser/ds", help="data-engine folder with a 'val' split")
    ap.add_argument("--n", type=int, default=30, help="held-out photos")
    ap.add_argument("--out", required=True, help="folder for results.json and per-photo rows")
    ap.add_argument("--grid", default=None, help="write a picture grid (JPEG) of the first --grid-rows photos here")
    ap.add_argument("--grid-rows", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps-photo", type=int, default=api.FitConfig().steps_photo, help="photometric fitting steps")
    ap.add_argument("--steps-albedo", type=int, default=api.FitConfig().steps_albedo,
                    help="per-vertex offset steps (variant 'offset')")
    ap.add_argument("--variants", default=",".join((*VARIANTS, *RECOLOURED)),
                    help="comma list of rows to compute (photo and refined need offset)")
    args = ap.parse_args(argv)
    names = [v for v in (*VARIANTS, *RECOLOURED) if v in args.variants.split(",")]
    if any(v in RECOLOURED for v in names) and "offset" not in names:
        ap.error("photo and refined re-colour the 'offset' fit: add offset to --variants")
    torch.set_num_threads(args.threads)
    engine = Path(args.engine)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [r for r in read_manifest(engine) if r.get("status") == "ok" and r.get("view") == 0
            and r.get("split") == "val"][: args.n]

    cfg = api.FitConfig(steps_photo=args.steps_photo, steps_albedo=args.steps_albedo)
    recs = {"offset": api.FaceReconstructor("ict", fit_config=cfg)}
    for v in ("constant", "basis"):
        if v in names:
            recs[v] = api.FaceReconstructor("ict", texture=v, fit_config=cfg)
    det = recs["offset"]
    model = det.model
    skin_w = model.skin_weights()[:, None]
    enc = IdentityEncoder().eval()
    per = []
    grid = []
    done_path = out / "rows.jsonl"
    done = {}
    if done_path.is_file():  # resumable
        for ln in done_path.read_text().splitlines():
            d = json.loads(ln)
            done[d["source"]] = d
    for i, r in enumerate(rows):
        src = r["source"]
        prev = done.get(src, {})
        # A resumed run computes the variants a photo lacks (the 'offset' fit again when a re-colouring
        # needs it) and re-renders the grid's photos; figures already in rows.jsonl are kept.
        todo = names if i < args.grid_rows else [n for n in names if n not in prev]
        if not todo:
            per.append(prev)
            continue
        if any(n in RECOLOURED for n in todo) and "offset" not in todo:
            todo = [n for n in names if n in todo or n == "offset"]
        img = api.load_image(src)
        faces = det.detect(img)
        if not faces:
            print(f"{src}: no face", file=sys.stderr)
            continue
        row = {"source": src}
        pics = [None]
        base = None  # the 'offset' fit, which the 'photo' and 'refined' textures re-colour
        for name in todo:
            extra = {}
            if name in RECOLOURED:
                t0 = time.perf_counter()
                rec = with_photo_texture(base) if name == "photo" else with_refined_texture(base)
                extra = {f"{name}_only_ms": (time.perf_counter() - t0) * 1e3}
                dt = time.perf_counter() - t0 + row["offset"]["ms"] / 1e3
            else:
                t0 = time.perf_counter()
                rec = recs[name].reconstruct_faces([img], faces[:1])[0]
                dt = time.perf_counter() - t0
            if name == "offset":
                base = rec
            photo = rec.crop.image.astype(np.float32) / 255.0
            pics[0] = photo
            im, skin, face = render(rec, skin_w)
            m = metrics(im, photo, skin)
            m["id_cos"] = identity_cos(enc, im, photo, face, rec.crop.lm5)
            m["ms"] = dt * 1e3
            row[name] = m | extra
            pics.append(np.where(face[..., None], im, photo * 0.35))
        merged = row | prev  # earlier figures win
        per.append(merged)
        if merged != prev:
            with open(done_path, "a") as f:
                f.write(json.dumps(merged) + "\n")
        if i < args.grid_rows:
            grid.append(np.concatenate(pics, 1))
        print(f"{i + 1}/{len(rows)} {Path(src).name}: " + ", ".join(
            f"{k} L1 {merged[k]['l1']:.3f} id {merged[k]['id_cos']:.3f}" for k in names if k in merged), flush=True)
    summary = {"photos": len(per), "engine": str(engine), "steps_photo": args.steps_photo,
               "steps_albedo": args.steps_albedo, "variants": names}
    for name in names:
        have = [p for p in per if name in p]  # a resumed run may add variants to earlier rows' photos
        summary[name] = {k: float(np.mean([p[name][k] for p in have])) for k in have[0][name]}
        summary[name]["photos"] = len(have)
        for k in ("ms", f"{name}_only_ms"):  # medians: the first call warms up
            if k in have[0][name]:
                summary[name][k + "_median"] = float(np.median([p[name][k] for p in have]))
    if "refined" in names and "basis" in names:
        both = [p for p in per if "refined" in p and "basis" in p]
        summary["refined_beats_basis"] = {k: sum(p["refined"][k] < p["basis"][k] if k == "l1" else
                                                 p["refined"][k] > p["basis"][k] for p in both) for k in
                                          ("l1", "psnr", "ssim", "id_cos")} | {"photos": len(both)}
    summary["reshade"] = reshade_check(engine, rows, load_model("ict", albedo="learned"))
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    if args.grid and grid:
        from PIL import Image

        g = (np.concatenate(grid, 0) * 255 + 0.5).clip(0, 255).astype(np.uint8)
        Image.fromarray(g).resize((g.shape[1] // 2, g.shape[0] // 2), Image.LANCZOS).save(args.grid, quality=85)
    return 0


if __name__ == "__main__":
    sys.exit(main())
