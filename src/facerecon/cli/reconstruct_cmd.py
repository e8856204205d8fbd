"""`facerecon reconstruct INPUT... -o OUT`: photos, photo sets and videos → meshes, arrays, images."""

from __future__ import annotations

import sys
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("reconstruct", help="reconstruct 3D faces from images, an image set or a video")
    p.add_argument("inputs", nargs="*", help="image files, folders or glob patterns")
    p.add_argument("-o", "--output", help="output folder (required unless listing)")
    p.add_argument("--model", default="ict", choices=["ict", "bfm"])
    p.add_argument("--method", default="fit",
                   help="a registered reconstruction method: fit (analysis-by-synthesis, default), regress "
                        "(learned R-Net), regress+refine (regress then fit), or any registered since "
                        "(--list-methods)")
    p.add_argument("--list-methods", action="store_true", help="print the registered methods and exit")
    p.add_argument("--refine", type=int, default=None, metavar="N",
                   help="photometric fitting steps (default 80); with --method regress: refine the "
                        "regressed face with N steps (= --method regress+refine)")
    p.add_argument("--set", action="store_true", help="all inputs show ONE person: share identity")
    p.add_argument("--video", help="a video file (frames share identity, temporally smoothed)")
    p.add_argument("--stride", type=int, default=1, help="video: use every N-th frame")
    p.add_argument("--max-frames", type=int, default=None, help="video: stop after N frames")
    p.add_argument("--max-faces", type=int, default=1, help="faces per image, largest first")
    p.add_argument("--detector", default="auto",
                   help="detector backend; auto: the method's choice ('fast' for --method regress, else 'default')")
    p.add_argument("--no-photometric", action="store_true", help="landmark-only fit (fast)")
    p.add_argument("--identity-loss", action="store_true",
                   help="add the MobileFaceNet identity-perceptual loss (asset mobilefacenet; research use)")
    p.add_argument("--outputs", default="all", help="comma list of output formats (default all; --list-outputs)")
    p.add_argument("--list-outputs", action="store_true", help="print the output formats and exit")
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
    from tqdm import tqdm

    from .. import api
    from ..errors import FaceReconError

    if args.list_methods:
        for name, desc in api.available_methods().items():
            print(f"{name:16s} {desc}")
        return 0
    formats = api.output_formats()
    if args.list_outputs:
        for name, desc in formats.items():
            print(f"{name:10s} {desc}")
        return 0
    if not args.output:
        print("facerecon: reconstruct needs -o/--output FOLDER", file=sys.stderr)
        return 2
    if args.threads:
        api.set_threads(args.threads)
    what = tuple(formats) if args.outputs == "all" else tuple(s.strip() for s in args.outputs.split(","))
    bad = set(what) - set(formats)
    if bad:
        print(f"facerecon: unknown outputs {sorted(bad)}; choose from {','.join(formats)}", file=sys.stderr)
        return 2
    method = "regress+refine" if args.method == "regress" and args.refine is not None else args.method
    options = {}
    if args.refine is not None:
        options["fit_config"] = api.FitConfig(steps_photo=args.refine)
    if args.identity_loss:
        options["identity_loss"] = True
    rec = api.FaceReconstructor(args.model, detector=args.detector, device=args.device, method=method, **options)
    out = Path(args.output)
    photometric = not args.no_photometric
    failures: list[str] = []
    reported: set[int] = set()  # failures already shown as they happened
    n_faces = 0

    if args.video:
        frames = list(api.read_frames(args.video, max_frames=args.max_frames, stride=args.stride))
        recs = rec.reconstruct_video(frames, photometric=photometric)
        for i, r in enumerate(tqdm(recs, desc="writing", unit="frame", disable=args.quiet)):
            r.save(out, what, stem=f"frame{i:05d}")
        n_faces = len(recs)
        failures += [f"{s}: no face" for s in rec.last_skipped]
    else:
        paths, problems = api.expand_inputs(args.inputs)
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
                    images.append(api.load_image(p))
                except FaceReconError as e:
                    failures.append(str(e))
            recs = rec.reconstruct_set(images, photometric=photometric)
            for r in tqdm(recs, desc="writing", unit="face", disable=args.quiet):
                r.save(out, what, stem=stems[Path(r.source)])
            n_faces = len(recs)
            failures += [f"{s}: no face" for s in rec.last_skipped]
        else:
            bar = tqdm(paths, desc="reconstructing", unit="image", disable=args.quiet)
            for p in bar:
                try:
                    recs = rec.reconstruct(api.load_image(p), max_faces=args.max_faces, photometric=photometric)
                    for k, r in enumerate(recs):
                        r.save(out, what, stem=stems[p] if k == 0 else f"{stems[p]}_face{k}")
                    n_faces += len(recs)
                except FaceReconError as e:
                    bar.write(f"facerecon: skipped {e}", file=sys.stderr)
                    reported.add(len(failures))
                    failures.append(str(e))
    for i, f in enumerate(failures):
        if i not in reported:
            print(f"facerecon: {f}", file=sys.stderr)
    print(f"reconstructed {n_faces} face(s) -> {out}; {len(failures)} input(s) failed")
    return 0 if n_faces > 0 else 1
