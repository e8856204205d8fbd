"""`MeshRenderer`: camera + rasterize + interpolate + SH shading (+ optional antialiasing).

Everything is per-vertex tensors; the renderer knows nothing about morphable models.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from facerecon.geometry.camera import PerspectiveCamera
from facerecon.geometry.mesh import edge_topology, vertex_normals
from facerecon.render.antialias import antialias as _antialias
from facerecon.render.rasterize import Fragments, interpolate, rasterize
from facerecon.render.shading import DEEP3D_INIT_LIT, sh_shade

#: Names accepted in `MeshRenderer(outputs=...)`.
OUTPUTS = ("rgb", "albedo", "mask", "depth", "normals", "pncc", "overlay")


def pncc_code(mean_vertices: torch.Tensor) -> torch.Tensor:
    """3DDFA's PNCC code: mean-face coordinates normalised to [0, 1] per axis over their bounding box.

    Args:
        mean_vertices: (V, 3) (or (B, V, 3), normalised per mesh) vertices of the mean shape.

    Returns:
        Same shape, each axis mapped by ``(v - min) / (max - min)``; render it with
        `MeshRenderer(outputs=("pncc",))` or `interpolate`.
    """
    lo = mean_vertices.amin(dim=-2, keepdim=True)
    hi = mean_vertices.amax(dim=-2, keepdim=True)
    return (mean_vertices - lo) / (hi - lo).clamp_min(torch.finfo(mean_vertices.dtype).eps)


@dataclass(frozen=True)
class RenderOutput:
    """Images from `MeshRenderer`; outputs that were not requested are None. All float images are
    in the dtype of the vertices, (B, H, W, ...) channels-last, on the vertices' device.

    rgb: (B, H, W, 3) shaded face (albedo × SH irradiance, unclamped) over black — Deep3D's
        ``pred_face``. Antialiased against black when the renderer antialiases.
    albedo: (B, H, W, 3) interpolated albedo, 0 on background.
    mask: (B, H, W) float coverage in {0, 1}, or in [0, 1] at silhouettes when antialiased.
    depth: (B, H, W) depth in mm along the camera axis, 0 on background.
    normals: (B, H, W, 3) unit normals in camera space (x right, y up, z towards the viewer;
        the camera only translates, so these equal world-space normals), 0 on background.
    pncc: (B, H, W, 3) interpolated PNCC code (see `pncc_code`), 0 on background.
    overlay: (B, H, W, 4) Deep3D's ``recon_img``: RGB = shaded face composited over the background
        image (``rgb·mask + image·(1 - mask)``, antialiased when enabled), A = mask.
    fragments: the rasterization, for further `interpolate` calls.
    """

    rgb: torch.Tensor | None
    albedo: torch.Tensor | None
    mask: torch.Tensor | None
    depth: torch.Tensor | None
    normals: torch.Tensor | None
    pncc: torch.Tensor | None
    overlay: torch.Tensor | None
    fragments: Fragments


class MeshRenderer:
    """Differentiable renderer of posed, per-vertex-coloured meshes through a `PerspectiveCamera`.

    Args:
        camera: projection and image size (H, W) = (camera.height, camera.width).
        faces: (F, 3) int64, counter-clockwise seen from outside.
        outputs: names from `OUTPUTS` to compute by default (others are skipped entirely).
        antialias: apply analytic silhouette antialiasing to rgb, mask and overlay (gives
            gradients w.r.t. vertex positions at silhouettes).
        shading: "vertex" (Deep3D: shade each vertex, then interpolate colours) or "pixel"
            (interpolate albedo and normals, renormalise, shade each pixel).
        cull_backfaces: skip triangles facing away from the camera (faster on closed meshes; keep
            False for open meshes seen from behind).
        init_lit: SH light offset (`sh_coefficients`); Deep3D's 0.8 by default.

    Example:
        >>> r = MeshRenderer(PerspectiveCamera.deep3d(), faces, outputs=("rgb", "mask"))
        >>> out = r(vertices, albedo, gamma)  # out.rgb: (B, 224, 224, 3)
    """

    def __init__(self, camera: PerspectiveCamera, faces: torch.Tensor, *,
                 outputs: tuple[str, ...] = ("rgb", "mask"), antialias: bool = False,
                 shading: str = "vertex", cull_backfaces: bool = False,
                 init_lit: float | torch.Tensor = DEEP3D_INIT_LIT):
        _check_outputs(outputs)
        if shading not in ("vertex", "pixel"):
            raise ValueError(f"shading must be 'vertex' or 'pixel', got {shading!r}")
        self.camera = camera
        self.faces = faces.long()
        self.outputs = tuple(outputs)
        self.antialias = antialias
        self.shading = shading
        self.cull_backfaces = cull_backfaces
        self.init_lit = init_lit
        self._topology = None

    def __call__(self, vertices: torch.Tensor, albedo: torch.Tensor | None = None,
                 gamma: torch.Tensor | None = None, *, background: torch.Tensor | None = None,
                 pncc: torch.Tensor | None = None, normals: torch.Tensor | None = None,
                 camera: PerspectiveCamera | None = None,
                 outputs: tuple[str, ...] | None = None) -> RenderOutput:
        """Render a batch of meshes.

        Args:
            vertices: (B, V, 3) world-space positions in mm (already posed).
            albedo: (B, V, 3) or (V, 3) reflectance in [0, 1]; needed for rgb, albedo, overlay.
            gamma: (B, 27) SH light coefficients (Deep3D layout); needed for rgb and overlay.
            background: (B, H, W, 3) or (H, W, 3) float image in [0, 1] under the overlay
                (black when None).
            pncc: (V, 3) or (B, V, 3) per-vertex PNCC code (`pncc_code(mean_vertices)`); needed
                for pncc.
            normals: (B, V, 3) unit vertex normals; computed from the mesh when None.
            camera: overrides the renderer's camera for this call.
            outputs: overrides the renderer's default outputs for this call.

        Returns:
            `RenderOutput`. Every float image is differentiable w.r.t. the inputs it is made of
            (see docs/rendering.md).
        """
        cam = camera or self.camera
        want = set(self.outputs if outputs is None else outputs)
        _check_outputs(want)
        v = vertices.unsqueeze(0) if vertices.dim() == 2 else vertices
        faces = self.faces.to(v.device)
        H, W = cam.height, cam.width
        screen = cam.project(v)
        frags = rasterize(screen, faces, (H, W), near=cam.near, cull_backfaces=self.cull_backfaces)
        B = v.shape[0]

        need_shade = bool(want & {"rgb", "overlay"})
        need_normals = need_shade or "normals" in want
        if need_normals and normals is None:
            normals = vertex_normals(v, faces)
        if need_shade and (albedo is None or gamma is None):
            raise ValueError("rgb/overlay need albedo and gamma")

        rgb = alb_img = n_img = None
        if need_shade and self.shading == "vertex":
            rgb = interpolate(sh_shade(albedo, normals, gamma, self.init_lit), frags, faces)
        if "albedo" in want or (need_shade and self.shading == "pixel"):
            if albedo is None:
                raise ValueError("albedo output needs per-vertex albedo")
            alb_img = interpolate(albedo, frags, faces)
        if "normals" in want or (need_shade and self.shading == "pixel"):
            n_img = interpolate(normals, frags, faces)
            n_img = n_img / n_img.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        if need_shade and self.shading == "pixel":
            rgb = sh_shade(alb_img, n_img, gamma, self.init_lit)

        mask = frags.mask.to(v.dtype) if want & {"mask", "overlay"} else None
        overlay = None
        if "overlay" in want:
            bg = background if background is not None else torch.zeros_like(rgb)
            bg = bg.to(rgb).expand(B, H, W, 3)
            comp = rgb * mask[..., None] + bg * (1.0 - mask[..., None])
            overlay = torch.cat([comp, mask[..., None]], -1)

        if self.antialias and (rgb is not None or mask is not None):
            # One pass over the concatenated channels that need it.
            chans = [t for t in (rgb if "rgb" in want else None,
                                 None if mask is None else mask[..., None], overlay) if t is not None]
            if self._topology is None or self._topology.face_edges.device != faces.device:
                self._topology = edge_topology(faces)
            aa = _antialias(torch.cat(chans, -1), frags, screen, faces, self._topology)
            parts = list(torch.split(aa, [c.shape[-1] for c in chans], -1))
            if "rgb" in want:
                rgb = parts.pop(0)
            if mask is not None:
                mask = parts.pop(0)[..., 0]
            if overlay is not None:
                overlay = torch.cat([parts.pop(0)[..., :3], mask[..., None]], -1)

        return RenderOutput(
            rgb=rgb if "rgb" in want else None,
            albedo=alb_img if "albedo" in want else None,
            mask=mask if "mask" in want else None,
            depth=frags.depth if "depth" in want else None,
            normals=n_img if "normals" in want else None,
            pncc=None if "pncc" not in want else _pncc(pncc, frags, faces),
            overlay=overlay,
            fragments=frags,
        )


def _pncc(code: torch.Tensor | None, frags: Fragments, faces: torch.Tensor) -> torch.Tensor:
    if code is None:
        raise ValueError("pncc output needs the per-vertex code: pncc=pncc_code(mean_vertices)")
    return interpolate(code, frags, faces)


def _check_outputs(outputs) -> None:
    bad = set(outputs) - set(OUTPUTS)
    if bad:
        raise ValueError(f"unknown outputs {sorted(bad)}; choose from {OUTPUTS}")
