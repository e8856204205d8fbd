"""Analytic silhouette antialiasing in the spirit of nvdiffrast's `antialias`.

A rasterized image is piecewise constant in the vertex positions at silhouettes, so it gives no
gradient there. Here every *silhouette* edge (a mesh boundary, a non-manifold edge, or an edge
between a front- and a back-facing triangle on screen) is walked across the pixel grid: a mostly
vertical edge crosses the segment between horizontally adjacent pixel centres once per row, a
mostly horizontal one the segment between vertically adjacent centres once per column. At each
crossing the pixel on the edge's inner side (the side of its rendered triangle) and the outer pixel
form a pair; t ∈ [0, 1) is the distance from the inner centre to the crossing. With a box filter the
pixel straddled by the edge is blended with its neighbour by its coverage: the inner pixel takes
``(0.5 - t)`` of the outer colour when t < 0.5, the outer pixel ``(t - 0.5)`` of the inner colour
when t > 0.5. t is a differentiable function of the edge's screen-space endpoints, so colour
differences across silhouettes give gradients w.r.t. vertex positions.

A crossing is used only where the edge is visible: the outer pixel lies behind the edge (or is
background) and the inner pixel is nearer than the outer one. Walking edges (rather than looking
only at the triangle found in a pixel, as nvdiffrast does) keeps dense meshes antialiased, whose
rim triangles are often thinner than a pixel and cover no pixel centre.
"""

from __future__ import annotations

import torch

from facerecon.geometry.mesh import EdgeTopology, edge_topology
from facerecon.render.rasterize import Fragments


def silhouette_edges(verts_screen: torch.Tensor, faces: torch.Tensor, topology: EdgeTopology) -> torch.Tensor:
    """Which edges are silhouettes as seen on screen.

    Args:
        verts_screen: (B, V, 3) screen-space vertices.
        faces: (F, 3) int64.
        topology: `edge_topology(faces)`.

    Returns:
        (B, E) bool: boundary or non-manifold edges, and edges whose two faces face opposite ways.
    """
    with torch.no_grad():
        front = _front_facing(verts_screen, faces)
        ef = topology.edge_faces.to(front.device)
        f0 = front[:, ef[:, 0]]
        f1 = front[:, ef[:, 1].clamp_min(0)]
        open_edge = (topology.edge_count.to(front.device) != 2)[None]
        return open_edge | (f0 != f1)


def _front_facing(v: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    t = v[..., :2][:, faces]  # (B, F, 3, 2)
    d1, d2 = t[:, :, 1] - t[:, :, 0], t[:, :, 2] - t[:, :, 0]
    return d1[..., 0] * d2[..., 1] - d1[..., 1] * d2[..., 0] < 0  # counter-clockwise seen by the camera


def antialias(color: torch.Tensor, fragments: Fragments, verts_screen: torch.Tensor, faces: torch.Tensor,
              topology: EdgeTopology | None = None) -> torch.Tensor:
    """Blend colours across visible silhouette edges by analytic pixel coverage.

    Args:
        color: (B, H, W, C) image to antialias, e.g. shaded faces composited over a background.
        fragments: `rasterize(verts_screen, faces, ...)`.
        verts_screen: (B, V, 3) or (V, 3) the screen-space vertices given to `rasterize`.
        faces: (F, 3) int64.
        topology: `edge_topology(faces)`, computed when None (pass it when rendering many frames).

    Returns:
        (B, H, W, C) antialiased image. Differentiable w.r.t. `color` and `verts_screen` (x, y of
        silhouette-edge endpoints); pixels away from silhouettes pass through unchanged.
    """
    v = verts_screen.unsqueeze(0) if verts_screen.dim() == 2 else verts_screen
    faces = faces.to(device=v.device, dtype=torch.int64)
    if topology is None:
        topology = edge_topology(faces)
    B, H, W, C = color.shape
    if v.shape[0] != B or fragments.batch != B:
        raise ValueError("antialias: color, fragments and vertices must have the same batch size")
    dev = v.device
    V = v.shape[1]

    with torch.no_grad():
        front = _front_facing(v, faces)
        ef = topology.edge_faces.to(dev)
        eo = topology.edge_opposite.to(dev)
        count = topology.edge_count.to(dev)
        f0, f1 = front[:, ef[:, 0]], front[:, ef[:, 1].clamp_min(0)]
        sil = (count != 2)[None] | (f0 != f1)
        bk, ek = torch.nonzero(sil, as_tuple=True)  # silhouette (batch, edge) pairs
        # The edge's rendered side is its front-facing face (its only face at a boundary).
        use_second = (count[ek] == 2) & ~f0[bk, ek]
        opp = torch.where(use_second, eo[ek, 1], eo[ek, 0])
        ev = topology.edge_vertices.to(dev)[ek]
        base = bk * V
        o = v.reshape(B * V, 3)[base + opp].detach()
    pa = v.reshape(B * V, 3)[base + ev[:, 0]]
    pb = v.reshape(B * V, 3)[base + ev[:, 1]]

    p2f = fragments.pix_to_face.reshape(-1)
    depth = fragments.depth.detach().reshape(-1)
    depth = torch.where(p2f >= 0, depth, torch.full_like(depth, float("inf")))
    flat = color.reshape(B * H * W, C)
    out = flat
    d = (pb - pa).detach()
    vertical = d[:, 1].abs() >= d[:, 0].abs()
    # Mostly vertical edges cross rows (horizontal pixel pairs); the others cross columns.
    for major, minor, mask in ((1, 0, vertical), (0, 1, ~vertical)):
        idx = torch.nonzero(mask).squeeze(1)
        if idx.numel() == 0:
            continue
        a, b_, oo, bb = pa[idx], pb[idx], o[idx], bk[idx]
        n_major, n_minor = (H, W) if major == 1 else (W, H)
        with torch.no_grad():
            lo = torch.minimum(a[:, major], b_[:, major])
            hi = torch.maximum(a[:, major], b_[:, major])
            # Half-open [lo, hi) so a grid line through a shared vertex is crossed once.
            s0 = torch.ceil(lo).clamp_min(0).long()
            s1 = (torch.ceil(hi) - 1).clamp_max(n_major - 1).long()
            n = (s1 - s0 + 1).clamp_min(0)
            rep = torch.repeat_interleave(torch.arange(idx.numel(), device=dev), n)
            if rep.numel() == 0:
                continue
            offs = torch.arange(rep.numel(), device=dev) - torch.repeat_interleave(torch.cumsum(n, 0) - n, n)
            line = (s0[rep] + offs)
        a, b_, oo, bb = a[rep], b_[rep], oo[rep], bb[rep]
        dm = b_[:, major] - a[:, major]
        s = (line.to(a.dtype) - a[:, major]) / dm  # position along the edge
        cross = a[:, minor] + s * (b_[:, minor] - a[:, minor])  # crossing, minor coordinate
        with torch.no_grad():
            j = torch.floor(cross).long()
            ok = (j >= 0) & (j + 1 < n_minor)
            # Inner side = side of the opposite vertex of the rendered triangle.
            so = (oo[:, major] - a[:, major]) / dm
            inner_low = oo[:, minor] < a[:, minor] + so * (b_[:, minor] - a[:, minor])
            jc = j.clamp(0, n_minor - 2)
            if major == 1:
                p_lo, p_hi = bb * H * W + line * W + jc, bb * H * W + line * W + jc + 1
            else:
                p_lo, p_hi = bb * H * W + jc * W + line, bb * H * W + (jc + 1) * W + line
            pin = torch.where(inner_low, p_lo, p_hi)
            pout = torch.where(inner_low, p_hi, p_lo)
            inv_z = (1 - s) / a[:, 2] + s / b_[:, 2]
            z_edge = 1.0 / inv_z
            d_in, d_out = depth[pin], depth[pout]
            ok = ok & (d_out > z_edge) & (d_in < d_out) & (p2f[pin] != p2f[pout])
        sel = torch.nonzero(ok).squeeze(1)
        if sel.numel() == 0:
            continue
        frac = cross[sel] - j[sel].to(cross.dtype)
        t = torch.where(inner_low[sel], frac, 1.0 - frac)
        pin, pout = pin[sel], pout[sel]
        cin, cout = flat[pin], flat[pout]
        w_in = (0.5 - t).clamp_min(0)[:, None]
        w_out = (t - 0.5).clamp_min(0)[:, None]
        out = out.index_add(0, pin, w_in * (cout - cin)).index_add(0, pout, w_out * (cin - cout))
    return out.reshape(B, H, W, C)
