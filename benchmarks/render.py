"""Renderer speed: facerecon's differentiable CPU renderer against an OpenGL (llvmpipe) reference.

    .venv/bin/python benchmarks/render.py [--repeat 15] [--quick]

Prints, for a face-like height-field mesh of ~18k triangles (the size of ICT's face area) and of
~70k triangles, at 224² and 512², batch 1 and 8, on 2 threads:
  fwd      MeshRenderer(outputs=("rgb", "mask")), Deep3D vertex shading: project, vertex normals,
           SH shading, rasterize, interpolate.
  fwd+bwd  the same plus backward of a photometric-style loss to vertices, albedo and gamma.
  fwd AA   forward with silhouette antialiasing (rgb, mask).
  GL       moderngl standalone EGL context (llvmpipe): upload world vertices + colours, draw with
           a depth test, read back colour (RGB f4) and depth; batch 8 = 8 draws. Not
           differentiable. Skipped when moderngl/EGL is unavailable.
  ratio    fwd / GL.
Times are the minimum over `--repeat` runs (the machine is shared; the minimum is the least
disturbed measurement), in milliseconds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from facerecon.geometry.camera import PerspectiveCamera
from facerecon.geometry.mesh import grid_mesh
from facerecon.render import MeshRenderer


def face_like_mesh(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A 180 × 200 mm height field (an elliptic dome, ~ a face's extent) with 2·n² triangles."""
    v, f, _ = grid_mesh(n, n, 180.0, 200.0)
    r2 = v[:, 0] ** 2 / 90.0 ** 2 + v[:, 1] ** 2 / 100.0 ** 2
    v[:, 2] = 80.0 * torch.clamp(1.0 - r2, min=0.0).sqrt()
    return v, f


def _time(fn, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


class GLReference:
    """Plain OpenGL rasterization of the same mesh through the same camera (no gradients)."""

    VS = """
    #version 330
    uniform mat4 mvp;
    in vec3 in_pos;
    in vec3 in_col;
    out vec3 v_col;
    void main() { gl_Position = mvp * vec4(in_pos, 1.0); v_col = in_col; }
    """
    FS = """
    #version 330
    in vec3 v_col;
    out vec4 f_col;
    void main() { f_col = vec4(v_col, 1.0); }
    """

    def __init__(self, faces: np.ndarray, n_verts: int, cam: PerspectiveCamera):
        import moderngl

        self.ctx = moderngl.create_standalone_context(backend="egl")
        self.prog = self.ctx.program(vertex_shader=self.VS, fragment_shader=self.FS)
        W, H, f = cam.width, cam.height, cam.focal
        near, far = 1.0, 10.0 * cam.distance
        # Same projection as PerspectiveCamera (pixel centres at integers), clip w = depth.
        ax, ay = (cam.cx + 0.5) * 2 / W - 1, 1 - (cam.cy + 0.5) * 2 / H
        proj = np.array([[2 * f / W, 0, -ax, 0], [0, 2 * f / H, -ay, 0],
                         [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)],
                         [0, 0, -1, 0]], dtype=np.float64)
        view = np.eye(4)
        view[2, 3] = -cam.distance
        self.prog["mvp"].write((proj @ view).T.astype("f4").tobytes())
        self.vbo = self.ctx.buffer(reserve=n_verts * 12)
        self.cbo = self.ctx.buffer(reserve=n_verts * 12)
        ibo = self.ctx.buffer(faces.astype("i4").tobytes())
        self.vao = self.ctx.vertex_array(self.prog, [(self.vbo, "3f", "in_pos"), (self.cbo, "3f", "in_col")], ibo)
        self.fbo = self.ctx.framebuffer(self.ctx.renderbuffer((W, H), 4, dtype="f4"),
                                        self.ctx.depth_renderbuffer((W, H)))
        self.size = (H, W)

    def render(self, verts: np.ndarray, colors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.vbo.write(verts.astype("f4").tobytes())
        self.cbo.write(colors.astype("f4").tobytes())
        self.fbo.use()
        self.ctx.enable(self.ctx.DEPTH_TEST)
        self.fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        self.vao.render()
        H, W = self.size
        rgb = np.frombuffer(self.fbo.read(components=3, dtype="f4"), "f4").reshape(H, W, 3)
        depth = np.frombuffer(self.fbo.read(components=1, attachment=-1, dtype="f4"), "f4").reshape(H, W)
        return rgb, depth

    def release(self) -> None:
        self.ctx.release()


def run_case(v0: torch.Tensor, faces: torch.Tensor, cam: PerspectiveCamera, B: int, gl: GLReference | None,
             repeat: int) -> tuple[float, float, float, float | None]:
    """Times (ms) of forward, forward+backward, antialiased forward and the GL reference."""
    res = cam.height
    g = torch.Generator().manual_seed(0)
    verts = v0[None].repeat(B, 1, 1) + 0.5 * torch.randn(B, *v0.shape, generator=g)
    albedo = 0.3 + 0.4 * torch.rand(B, v0.shape[0], 3, generator=g)
    gamma = 0.1 * torch.randn(B, 27, generator=g)
    target = torch.rand(B, res, res, 3, generator=g)
    r = MeshRenderer(cam, faces, outputs=("rgb", "mask"))
    r_aa = MeshRenderer(cam, faces, outputs=("rgb", "mask"), antialias=True)

    def fwd():
        with torch.no_grad():
            return r(verts, albedo, gamma)

    def fwd_aa():
        with torch.no_grad():
            return r_aa(verts, albedo, gamma)

    def fwd_bwd():
        vv = verts.clone().requires_grad_()
        aa = albedo.clone().requires_grad_()
        gg = gamma.clone().requires_grad_()
        out = r(vv, aa, gg)
        loss = ((out.rgb - target) ** 2 * out.mask[..., None]).sum()
        loss.backward()

    t_gl = None
    if gl is not None:
        vn, cn = verts.numpy(), albedo.numpy()

        def gl_run():
            for b in range(B):
                gl.render(vn[b], cn[b])

        t_gl = _time(gl_run, repeat)
    return _time(fwd, repeat), _time(fwd_bwd, repeat), _time(fwd_aa, repeat), t_gl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="224² and batch 1 only")
    ap.add_argument("--threads", type=int, default=2, help="torch and numba threads (default 2)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import numba

        numba.set_num_threads(args.threads)
    except ImportError:
        pass

    meshes = {"18k": face_like_mesh(95), "70k": face_like_mesh(187)}
    sizes = (224,) if args.quick else (224, 512)
    batches = (1,) if args.quick else (1, 8)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; min of {args.repeat} runs, ms")
    hdr = f"{'mesh':>5} {'F':>6} {'res':>4} {'B':>2} | {'fwd':>7} {'fwd+bwd':>8} {'fwd AA':>7} | {'GL':>6} {'ratio':>6}"
    print(hdr)
    print("-" * len(hdr))
    for name, (v0, faces) in meshes.items():
        for res in sizes:
            cam = PerspectiveCamera.deep3d(res)
            try:
                gl = GLReference(faces.numpy(), v0.shape[0], cam)
            except Exception as e:  # noqa: BLE001 - moderngl missing, no EGL, ...: skip the column
                gl, gl_err = None, e
            for B in batches:
                t_f, t_fb, t_aa, t_gl = run_case(v0, faces, cam, B, gl, args.repeat)
                gl_txt = f"{'n/a':>6} {'':>6}" if t_gl is None else f"{t_gl:6.2f} {t_f / t_gl:6.2f}"
                print(f"{name:>5} {faces.shape[0]:>6} {res:>4} {B:>2} | {t_f:7.2f} {t_fb:8.2f} {t_aa:7.2f} | {gl_txt}",
                      flush=True)
            if gl is not None:
                gl.release()
            elif res == sizes[0]:
                print(f"(GL reference unavailable: {gl_err})")


if __name__ == "__main__":
    main()
