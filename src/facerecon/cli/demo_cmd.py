"""`facerecon demo`: the newcomer's first run, on embedded inputs only (no user files needed)."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="run the main job on an embedded example and write the results")
    p.add_argument("-o", "--output", default="out/demo", help="output folder (default: %(default)s)")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..io import write_obj, write_ply
    from ..models import load_model

    out = Path(args.output)
    model = load_model("ict")
    g = torch.Generator().manual_seed(7)
    params = model.random_params(1, generator=g, exp_scale=0.0)
    params = params.replace(expression=model.expression_vector({"jawOpen": 0.4, "mouthSmile_L": 0.6,
                                                                 "mouthSmile_R": 0.6}))
    with torch.no_grad():
        geo = model(params)
    shade = geo.normals[0][:, 2].clamp(0, 1) * 0.7 + 0.3
    write_obj(out / "random_face.obj", geo.vertices[0], model.faces, colors=geo.albedo[0] * shade[:, None])
    write_ply(out / "random_face.ply", geo.vertices[0], model.faces, colors=geo.albedo[0] * shade[:, None])
    print(f"decoded a random ICT identity smiling with the jaw 40% open -> {out}/random_face.obj, .ply")
    return 0
