"""`facerecon decode`: decode morphable-model parameters (random or given) into a mesh file."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("decode", help="decode model parameters (random identity + expression) and export a mesh")
    p.add_argument("-o", "--output", default="out/face.obj", help="output .obj or .ply (default: %(default)s)")
    p.add_argument("--model", default="ict", choices=["ict", "bfm"])
    p.add_argument("--variant", default=None, help="ICT variant: face (default), narrow, head")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--identity-scale", type=float, default=1.0, help="std of random identity coefficients")
    p.add_argument("--expression", action="append", default=[], metavar="NAME=W",
                   help="expression weight, e.g. jawOpen=0.6 (repeatable; ARKit names for ICT)")
    p.add_argument("--coeffs", help="a .npy/.npz/.mat coefficient vector in the model's layout instead of random")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..api import decode

    w = {}
    for item in args.expression:
        k, _, v = item.partition("=")
        w[k] = float(v or 1.0)
    face = decode(args.model, variant=args.variant, coeffs=args.coeffs, seed=args.seed,
                  identity_scale=args.identity_scale, expression=w)
    path = face.save(args.output)
    print(f"wrote {path} ({len(face.vertices)} vertices, {len(face.triangles)} triangles, model {face.model_name})")
    return 0
