"""`facerecon reconstruct INPUT... -o OUT`: photos, photo sets and videos → meshes, arrays, images."""

from __future__ import annotations

import sys
from pathlib import Path

from ..io.paths import expand_inputs


def add_parser(sub) -> None:
    p = sub.add_parser("reconstruct", help="reconstruct 3D faces from images, an image set or a video")
    p.add_argument("inputs", nargs="*", help="image files, folders or glob patterns")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--model", default="ict", choices=["ict", "bfm"])
    p.add_argument("--method", default="fit", choices=["fit", "regress", "regress+refine"],
                   help="fit (analysis-by-synthesis), regress (learned R-Net), or regress then fit")
    p.add_argument("--refine", type=int, default=None, metavar="N",
                   help="photometric fitting steps (default 80); with --method regress: refine the "
                        "regressed face with N steps (= --method regress+refine)")
    p.add_argument("--set", action="store_true", help="all inputs show ONE person: share identity")
    p.add_argument("--video", help="a video file (frames share identity, temporally smoothed)")
    p.add_argument("--stride", type=int, default=1, help="video: use every N-th frame")
    p.add_argument("--max-frames", type=int, default=None, help="video: stop after N frames")
    p.add_argument("--max-faces", type=int, default=1, help="faces per image, largest first")
    p.add_argument("--detector", default="auto",
                   help="detector backend; auto: 'fast' (no landmark TTA) for --method regress, else 'default'")
    p.add_argument("--no-photometric", action="store_true", help="landmark-only fit (fast)")
    p.add_argument("--identity-loss", action="store_true",
                   help="add the MobileFaceNet identity-perceptual loss (asset mobilefacenet; research use)")
    p.add_argument("--outputs", default="all", help="comma list of mat,npz,obj,textured,ply,json,panel,overlay")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(func=run)


def _stems(paths: list[Path]) -> list[str]:
    """Output stems: file stems, disambiguated when two inputs share one."""
    count: dict[str, int] = {}
    out = []
    for p in paths:
        s = p.stem
        count[s] = count.get(s, 0) + 1
        out.append(s if count[s] == 1 else f"{s}_{count[s]}")
    return out


def run(args) -> int:
    import torch
    from tqdm import tqdm

    from ..api import FaceReconstructor
    from ..errors import FaceReconError
    from ..fit import FitConfig
    from ..io.image import load_image
    from ..outputs import ALL, write_reconstruction

    if args.threads:
        torch.set_num_threads(args.threads)
    what = ALL if args.outputs == "all" else tuple(s.strip() for s in args.outputs.split(","))
    bad = set(what) - set(ALL)
    if bad:
        print(f"facerecon: unknown outputs {sorted(bad)}; choose from {','.join(ALL)}", file=sys.stderr)
        return 2
    cfg = FitConfig() if args.refine is None else FitConfig(steps_photo=args.refine)
    method = "regress+refine" if args.method == "regress" and args.refine is not None else args.method
    rec = FaceReconstructor(args.model, detector=args.detector, fit_config=cfg, device=args.device,
                            method=method, identity_loss=args.identity_loss)
    out = Path(args.output)
    photometric = not args.no_photometric
    failures: list[str] = []
    n_faces = 0

    if args.video:
        from ..io.video import read_frames

        frames = list(read_frames(args.video, max_frames=args.max_frames, stride=args.stride))
        recs = rec.reconstruct_video(frames, photometric=photometric)
        for i, r in enumerate(tqdm(recs, desc="writing", unit="frame")):
            write_reconstruction(r, rec.model, out, f"frame{i:05d}", what, image=frames[i])
        n_faces = len(recs)
        failures += [f"{s}: no face" for s in rec.last_skipped]
    else:
        paths, problems = expand_inputs(args.inputs)
        failures += problems
        if not paths:
            for f in failures:
                print(f"facerecon: {f}", file=sys.stderr)
            print("facerecon: no input images", file=sys.stderr)
            return 2
        stems = dict(zip(paths, _stems(paths)))
        if args.set:
            images = []
            for p in paths:
                try:
                    images.append(load_image(p))
                except FaceReconError as e:
                    failures.append(str(e))
            recs = rec.reconstruct_set(images, photometric=photometric)
            by_name = {im.name: im for im in images}
            for r in tqdm(recs, desc="writing", unit="face"):
                write_reconstruction(r, rec.model, out, stems[Path(r.source)], what, image=by_name[r.source].pixels)
            n_faces = len(recs)
            failures += [f"{s}: no face" for s in rec.last_skipped]
        else:
            bar = tqdm(paths, desc="reconstructing", unit="image")
            for p in bar:
                try:
                    img = load_image(p)
                    recs = rec.reconstruct(img, max_faces=args.max_faces, photometric=photometric)
                    for k, r in enumerate(recs):
                        stem = stems[p] if k == 0 else f"{stems[p]}_face{k}"
                        write_reconstruction(r, rec.model, out, stem, what, image=img.pixels)
                    n_faces += len(recs)
                except FaceReconError as e:
                    failures.append(str(e))
                    bar.write(f"skipped {e}")
    for f in failures:
        print(f"facerecon: {f}", file=sys.stderr)
    print(f"reconstructed {n_faces} face(s) -> {out}; {len(failures)} input(s) failed")
    return 0 if n_faces > 0 else 1
