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
    p.add_argument("--video", help="a video file (frames share identity, temporally smoothed): writes an overlay "
                                   "MP4, the sequence (CSV + NPZ), an animated GLB and an ARKit CSV (--outputs "
                                   "picks among mp4,sequence,glb,livelink; image formats given there are written "
                                   "per frame into OUT/frames/); the fit is landmark-only unless --refine N is given")
    p.add_argument("--stride", type=int, default=1, help="video: use every N-th frame")
    p.add_argument("--start", type=int, default=0, help="video: first frame number to use")
    p.add_argument("--max-frames", type=int, default=None, help="video: stop after N frames")
    p.add_argument("--window", type=int, default=32,
                   help="video: frames reconstructed together (memory and the smoothing's reach; 0: whole clip)")
    p.add_argument("--overlap", type=int, default=8, help="video: frames shared by consecutive windows")
    p.add_argument("--smoothing", type=float, default=1.0, help="video: weight of temporal smoothness (0: off)")
    p.add_argument("--per-frame-meshes", action="store_true",
                   help="video: also write each frame's mesh (OUT/frames/frameNNNNNN.obj, numbered as in the video)")
    p.add_argument("--max-faces", type=int, default=1, help="faces per image, largest first")
    p.add_argument("--detector", default="auto",
                   help="detector backend; auto: the method's choice ('fast' for --method regress, else 'default')")
    p.add_argument("--no-photometric", action="store_true", help="landmark-only fit (fast)")
    p.add_argument("--identity-loss", action="store_true",
                   help="add the MobileFaceNet identity-perceptual loss (asset mobilefacenet; research use)")
    p.add_argument("--prdl", action="store_true",
                   help="fitting methods: add 3DDFA_V3's part re-projection distance loss against the face "
                        "parser's part maps (docs/parts.md)")
    p.add_argument("--texture", choices=("constant", "basis", "photo", "refined"), default=None,
                   help="colour source of meshes and renders: constant (the model's flat albedo), basis (the "
                        "learned ICT albedo basis fitted to the photo; --method fit), photo (the photo's colours, "
                        "de-lit by the fitted light), refined (the GCN texture refiner: a decoded texture refined with "
                        "the photo's colours; fit, regress, regress+refine); default: the method's own (fit: "
                        "constant + a fitted per-vertex offset). docs/albedo.md")
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
    if args.video:
        video_formats = api.video_outputs()
        what = tuple(video_formats) if args.outputs == "all" else tuple(s.strip() for s in args.outputs.split(","))
        bad = set(what) - set(formats) - set(video_formats)
    else:
        what = tuple(formats) if args.outputs == "all" else tuple(s.strip() for s in args.outputs.split(","))
        bad = set(what) - set(formats)
    if bad:
        choices = ",".join([*formats, *(api.video_outputs() if args.video else ())])
        print(f"facerecon: unknown outputs {sorted(bad)}; choose from {choices}", file=sys.stderr)
        return 2
    method = "regress+refine" if args.method == "regress" and args.refine is not None else args.method
    options = {}
    if args.refine is not None:
        options["fit_config"] = api.FitConfig(steps_photo=args.refine)
    if args.identity_loss:
        options["identity_loss"] = True
    if args.prdl:
        options["prdl"] = True
    if args.texture is not None:
        options["texture"] = args.texture
    rec = api.FaceReconstructor(args.model, detector=args.detector, device=args.device, method=method, **options)
    out = Path(args.output)
    photometric = not args.no_photometric
    if args.video:  # the photometric stages cost ~10x the landmark fit per frame: only when asked (--refine)
        photometric = photometric and args.refine is not None
    failures: list[str] = []
    reported: set[int] = set()  # failures already shown as they happened
    n_faces = 0

    if args.video:
        video_formats = api.video_outputs()
        per_frame = tuple(w for w in what if w not in video_formats)
        if args.per_frame_meshes and "obj" not in per_frame:
            per_frame += ("obj",)
        summary = rec.reconstruct_video_file(
            args.video, out, outputs=tuple(w for w in what if w in video_formats), frame_formats=per_frame,
            photometric=photometric, smoothing=args.smoothing, window=args.window, overlap=args.overlap,
            start=args.start, max_frames=args.max_frames, stride=args.stride, progress=not args.quiet)
        n_faces = summary.faces
        if summary.skipped:
            failures.append(f"{args.video}: no face in {len(summary.skipped)} of {summary.frames} frames "
                            f"({', '.join(summary.skipped[:5])}{', ...' if len(summary.skipped) > 5 else ''})")
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
