"""`facerecon albedo build ENGINE_DIRS... -o FILE`: the learned ICT albedo basis (docs/albedo.md)."""

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


def run(args) -> int:
    from ..dataset.albedo import AlbedoBuildConfig, build_albedo_file

    cfg = AlbedoBuildConfig(n_components=args.components, min_facing=args.min_facing, outlier=args.outlier)
    path, built = build_albedo_file(args.engines, args.output, cfg, progress=not getattr(args, "quiet", False))
    print(f"{path}: mean + {built['basis'].shape[2]} components from {built['faces_used']} faces "
          f"({built['faces_dropped']} dropped); {100 * built['variance'][:10].sum() / built['variance'].sum():.0f}% "
          f"of the kept variance in the first 10")
    return 0
