"""`facerecon demo`: the newcomer's first run, on embedded inputs only (no user files needed).

Reconstructs scikit-image's bundled astronaut photo (Eileen Collins, public domain; shipped inside
the scikit-image wheel, no download) end to end, and decodes a random ICT face with an expression.
"""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="run the main job on an embedded example and write the results")
    p.add_argument("-o", "--output", default="out/demo", help="output folder (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=run)


def _example_image():
    try:
        from skimage import data
    except ImportError:
        return None
    return data.astronaut()


def run(args) -> int:
    from .. import api

    api.set_threads(args.threads)
    out = Path(args.output)
    face = api.decode("ict", seed=7, identity_scale=1.0,
                      expression={"jawOpen": 0.4, "mouthSmile_L": 0.6, "mouthSmile_R": 0.6})
    face.save(out / "random_face.obj")
    print(f"decoded a random ICT identity, smiling, jaw 40% open -> {out / 'random_face.obj'}")

    image = _example_image()
    if image is None:
        print("scikit-image is not installed, so there is no embedded photo: pip install \"facerecon[demo]\"")
        return 0
    r = api.FaceReconstructor("ict").reconstruct(image, max_faces=1)[0]
    files = r.save(out, stem="astronaut")
    t = r.times
    print(f"reconstructed the astronaut photo: yaw {r.pose_deg['yaw']:.1f}°, pitch {r.pose_deg['pitch']:.1f}°, "
          f"roll {r.pose_deg['roll']:.1f}°; detection {t.get('detect', 0):.2f}s, fit {t.get('fit_total', 0):.2f}s")
    for f in files:
        print(f"  {f}")
    return 0
