"""`facerecon decode`: decode morphable-model parameters (random or given) into a mesh file."""

from __future__ import annotations

from pathlib import Path


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
    import numpy as np
    import torch

    from ..io import write_obj, write_ply
    from ..models import load_model

    model = load_model(args.model, variant=args.variant)
    if args.coeffs:
        from ..io.arrays import read_mat
        src = Path(args.coeffs)
        if src.suffix == ".mat":
            vec = read_mat(src)["coeff"]
        elif src.suffix == ".npz":
            vec = np.load(src)["coeff"]
        else:
            vec = np.load(src)
        params = model.layout.split(torch.as_tensor(np.asarray(vec, np.float32)).reshape(1, -1))
    else:
        g = torch.Generator().manual_seed(args.seed)
        params = model.random_params(1, generator=g, id_scale=args.identity_scale, exp_scale=0.0)
    if args.expression:
        w = {}
        for item in args.expression:
            k, _, v = item.partition("=")
            w[k] = float(v or 1.0)
        params = params.replace(expression=params.expression + model.expression_vector(w))
    with torch.no_grad():
        geo = model(params)
    out = Path(args.output)
    v, f = geo.vertices[0], model.faces
    # Simple Lambert shading from the camera direction for a viewable vertex colour.
    shade = geo.normals[0][:, 2].clamp(0, 1) * 0.7 + 0.3
    colors = geo.albedo[0] * shade[:, None]
    if out.suffix.lower() == ".ply":
        write_ply(out, v, f, colors)
    else:
        write_obj(out, v, f, colors=colors)
    print(f"wrote {out} ({model.n_vertices} vertices, {model.n_faces} triangles, model {model.name})")
    return 0
