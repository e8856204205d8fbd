"""Mesh export: .obj (vertex colours, or UV + texture PNG + .mtl) and .ply. All writes are atomic."""

from __future__ import annotations

import io as _io
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from .atomic import atomic_path, write_bytes, write_text


def _np(a, dtype=None):
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=dtype)


def _check(vertices, faces, name):
    v, f = _np(vertices, np.float64), _np(faces, np.int64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"{name}: vertices must be (V, 3), got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or (f.size and (f.min() < 0 or f.max() >= len(v))):
        raise ValueError(f"{name}: faces must be (F, 3) indices into {len(v)} vertices")
    return v, f


def write_obj(path, vertices, faces, colors=None, uv=None, uv_faces=None, texture=None, normals=None) -> None:
    """Write a Wavefront OBJ.

    vertices (V,3); faces (F,3) 0-based; colors (V,3) in [0,1] → written as `v x y z r g b`
    (read by trimesh, MeshLab, Blender); uv (T,2) + uv_faces (F,3) + texture (H,W,3) uint8 or
    float [0,1] → also writes `<stem>.mtl` and `<stem>.png` beside the .obj.
    """
    path = Path(path)
    v, f = _check(vertices, faces, str(path))
    buf = _io.StringIO()
    buf.write("# facerecon\n")
    textured = uv is not None and texture is not None
    if textured:
        buf.write(f"mtllib {path.stem}.mtl\nusemtl face\n")
    if colors is not None:
        c = np.clip(_np(colors, np.float64), 0, 1)
        np.savetxt(buf, np.hstack([v, c]), fmt="v %.6f %.6f %.6f %.4f %.4f %.4f")
    else:
        np.savetxt(buf, v, fmt="v %.6f %.6f %.6f")
    if normals is not None:
        np.savetxt(buf, _np(normals, np.float64), fmt="vn %.5f %.5f %.5f")
    if textured:
        t = _np(uv, np.float64)
        tf = _np(uv_faces if uv_faces is not None else faces, np.int64)
        np.savetxt(buf, t, fmt="vt %.6f %.6f")
        np.savetxt(buf, np.hstack([f[:, :1], tf[:, :1], f[:, 1:2], tf[:, 1:2], f[:, 2:], tf[:, 2:]]) + 1,
                   fmt="f %d/%d %d/%d %d/%d")
        tex = _np(texture)
        if tex.dtype != np.uint8:
            tex = np.clip(tex * 255.0 + 0.5, 0, 255).astype(np.uint8)
        png = _io.BytesIO()
        PILImage.fromarray(tex).save(png, format="PNG")
        write_bytes(path.with_suffix(".png"), png.getvalue())
        write_text(path.with_suffix(".mtl"),
                   f"newmtl face\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nd 1\nillum 1\nmap_Kd {path.stem}.png\n")
    else:
        np.savetxt(buf, f + 1, fmt="f %d %d %d")
    write_text(path, buf.getvalue())


def write_ply(path, vertices, faces, colors=None) -> None:
    """Binary little-endian PLY with optional uint8 vertex colours (colors (V,3) in [0,1])."""
    import trimesh

    path = Path(path)
    v, f = _check(vertices, faces, str(path))
    kw = {}
    if colors is not None:
        c = np.clip(_np(colors, np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        kw["vertex_colors"] = np.hstack([c, np.full((len(c), 1), 255, np.uint8)])
    mesh = trimesh.Trimesh(v, f, process=False, **kw)
    with atomic_path(path) as tmp:
        mesh.export(tmp, file_type="ply")
