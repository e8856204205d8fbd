"""`facerecon albedo build ENGINE_DIRS... -o FILE`: the learned ICT albedo basis; `facerecon albedo
refiner-cache` / `refiner-train`: the GCN texture refiner (issue 18 D3, docs/albedo.md)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("albedo", help="build the learned albedo basis from data-engine folders",
                       description="Albedo bases for the ICT model.")
    asub = p.add_subparsers(dest="albedo_command", metavar="ACTION")
    asub.required = True
    b = asub.add_parser("build", help="de-light the engines' source photos and fit a symmetric PCA albedo basis",
                        description="For each 'train' photo of the data-engine folders (view 0): sample vertex "
                        "colours where visible and not grazing, divide out a grey SH light solved on the photo, drop "
                        "occluder outliers, fill from the mirror side, symmetrise, and fit mean + K components "
                        "(unit-variance coefficients). 'val' photos of any engine are never used (docs/albedo.md).")
    b.add_argument("engines", nargs="+", help="data-engine folders (`facerecon dataset build` outputs)")
    b.add_argument("-o", "--output", required=True, help="output .npz (e.g. weights/albedo_ict/albedo_ict.npz)")
    b.add_argument("--components", type=int, default=80, help="K, components kept")
    b.add_argument("--min-facing", type=float, default=0.3, help="cos(normal, view) below which a vertex is grazing")
    b.add_argument("--outlier", type=float, default=0.15,
                   help="luminance distance from the population median (albedo units) that marks an occluder")
    b.set_defaults(func=run)
    c = asub.add_parser("refiner-cache", help="precompute the GCN texture refiner's training data",
                        description="Per 'train' photo (view 0) of the data-engine folders: crop, solved light, "
                        "de-lit vertex colours, basis texture, rasterization, image features, identity target "
                        "(one .pt per photo; resumable). 'val' photos of any engine are never used.")
    c.add_argument("engines", nargs="+", help="data-engine folders")
    c.add_argument("--cache", required=True, help="cache folder (outside the repository)")
    c.add_argument("--limit", type=int, default=None, help="only the first N photos")
    c.set_defaults(func=run_cache)
    t = asub.add_parser("refiner-train", help="train the GCN texture refiner on a refiner cache",
                        description="Adam on the rendered photometric, identity, symmetry, skin-variance and "
                        "basis-L1 losses (docs/albedo.md); checkpoints OUT/last.pt every few minutes.")
    t.add_argument("--cache", required=True, help="folder written by `refiner-cache`")
    t.add_argument("--out", required=True, help="run folder (checkpoints, logs; outside the repository)")
    t.add_argument("--weights", default=None, help="final float16 weights (default OUT/refiner.pt)")
    t.add_argument("--steps", type=int, default=4000)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--minutes", type=float, default=None, help="stop (and save) after this much training wall time")
    t.add_argument("--threads", type=int, default=1, help="torch threads")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    t.set_defaults(func=run_train)


def run(args) -> int:
    from ..dataset.albedo import AlbedoBuildConfig, build_albedo_file

    cfg = AlbedoBuildConfig(n_components=args.components, min_facing=args.min_facing, outlier=args.outlier)
    path, built = build_albedo_file(args.engines, args.output, cfg, progress=not getattr(args, "quiet", False))
    print(f"{path}: mean + {built['basis'].shape[2]} components from {built['faces_used']} faces "
          f"({built['faces_dropped']} dropped); {100 * built['variance'][:10].sum() / built['variance'].sum():.0f}% "
          f"of the kept variance in the first 10")
    return 0


def run_cache(args) -> int:
    from ..dataset.texture import build_refiner_cache

    res = build_refiner_cache(args.engines, args.cache, progress=not getattr(args, "quiet", False), limit=args.limit)
    print(f"{res['cache']}: {res['photos']} photos cached, {res['skipped']} skipped")
    return 0


def run_train(args) -> int:
    from ..dataset.texture import RefinerTrainConfig, train_refiner
    from ..threads import apply

    apply(args.threads)
    cfg = RefinerTrainConfig(steps=args.steps, batch=args.batch, lr=args.lr)
    res = train_refiner(args.cache, args.out, cfg, resume=args.resume, weights=args.weights, minutes=args.minutes,
                        progress=not getattr(args, "quiet", False))
    print(f"{res['weights']}: {res['steps']} steps on {res['photos_train']} photos in {res['wall_s'] / 60:.1f} min "
          f"({res['bytes'] / 2**20:.1f} MiB)")
    return 0
