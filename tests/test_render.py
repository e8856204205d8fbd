"""Rasterizer, interpolation, antialiasing, renderer and texture extraction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facerecon.geometry.camera import PerspectiveCamera
from facerecon.geometry.mesh import grid_mesh, icosphere
from facerecon.render import (
    OUTPUTS,
    MeshRenderer,
    antialias,
    extract_uv_texture,
    interpolate,
    pncc_code,
    rasterize,
    sample_vertex_colors,
)

# --------------------------------------------------------------------------- reference rasterizer


def _reference(verts: np.ndarray, faces: np.ndarray, H: int, W: int):
    """Loop over pixels and triangles: face id, perspective-correct bary, and an 'ambiguous' flag
    for pixel centres within a hair of an edge or with a depth tie (either answer is right)."""
    p2f = np.full((H, W), -1)
    bary = np.zeros((H, W, 3))
    ambiguous = np.zeros((H, W), bool)
    for i in range(H):
        for j in range(W):
            best, best_iz, hits = -1, 0.0, []
            for f, (a, b, c) in enumerate(faces):
                (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = verts[a], verts[b], verts[c]
                area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
                if area == 0:
                    continue
                w0 = ((x2 - x1) * (i - y1) - (y2 - y1) * (j - x1)) / area
                w1 = ((x0 - x2) * (i - y2) - (y0 - y2) * (j - x2)) / area
                w2 = ((x1 - x0) * (i - y0) - (y1 - y0) * (j - x0)) / area
                w = np.array([w0, w1, w2])
                if w.min() < -1e-9:
                    continue
                if w.min() < 1e-9:
                    ambiguous[i, j] = True
                iz = (w / np.array([z0, z1, z2])).sum()
                hits.append(iz)
                if iz > best_iz:
                    best, best_iz = f, iz
                    q = w / np.array([z0, z1, z2])
                    bary[i, j] = q / q.sum()
            if len(hits) > 1 and max(hits) - sorted(hits)[-2] < 1e-9:
                ambiguous[i, j] = True
            p2f[i, j] = best
    return p2f, bary, ambiguous


def _random_mesh(seed: int, n_faces: int = 20, size: int = 32):
    g = np.random.default_rng(seed)
    verts = np.concatenate([g.uniform(-4, size + 4, (3 * n_faces, 2)), g.uniform(2.0, 10.0, (3 * n_faces, 1))], 1)
    faces = np.arange(3 * n_faces).reshape(n_faces, 3)
    # Some triangles share an edge with the previous one (a strip), others overlap freely.
    for f in range(1, n_faces, 3):
        faces[f, 0], faces[f, 1] = faces[f - 1, 1], faces[f - 1, 0]
    return verts, faces


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_bruteforce_reference(seed):
    H = W = 32
    verts, faces = _random_mesh(seed)
    fr = rasterize(torch.tensor(verts), torch.tensor(faces), (H, W))
    p2f_ref, bary_ref, amb = _reference(verts, faces, H, W)
    p2f = fr.pix_to_face[0].numpy()
    ok = ~amb
    assert ok.sum() > 0.9 * H * W
    assert (p2f[ok] == p2f_ref[ok]).all()
    covered = ok & (p2f_ref >= 0)
    assert covered.sum() > 200
    np.testing.assert_allclose(fr.bary[0].numpy()[covered], bary_ref[covered], atol=1e-5)
    assert fr.bary.dtype == torch.float64 and fr.pix_to_face.dtype == torch.int64
    # Depth is the perspective-correct interpolation of the vertices' depths, 0 on background.
    z = verts[:, 2][faces[p2f.clip(0)]]
    np.testing.assert_allclose(fr.depth[0].numpy()[covered], (bary_ref * z).sum(-1)[covered], rtol=1e-6)
    assert (fr.depth[0].numpy()[p2f < 0] == 0).all()


def test_zbuffer_nearest_wins_regardless_of_order():
    tri = torch.tensor([[2.0, 2.0], [28.0, 4.0], [6.0, 28.0]])
    near = torch.cat([tri, torch.full((3, 1), 3.0)], 1)
    far = torch.cat([tri + 0.5, torch.full((3, 1), 5.0)], 1)
    for order in ([near, far], [far, near]):
        v = torch.cat(order, 0)
        fr = rasterize(v, torch.tensor([[0, 1, 2], [3, 4, 5]]), (32, 32))
        near_id = 0 if order[0] is near else 1
        assert (fr.pix_to_face[0, 10, 10] == near_id)
        assert abs(fr.depth[0, 10, 10].item() - 3.0) < 1e-5


def _coverage_count(verts, faces, H, W):
    count = torch.zeros(H, W, dtype=torch.int64)
    for f in range(faces.shape[0]):
        count += (rasterize(verts, faces[f:f + 1], (H, W)).pix_to_face[0] >= 0).long()
    return count


def test_shared_edges_cover_each_pixel_once():
    H = W = 24
    # A square of two triangles whose diagonal passes exactly through pixel centres.
    v = torch.tensor([[2.0, 2.0, 1.0], [20.0, 2.0, 1.0], [20.0, 20.0, 1.0], [2.0, 20.0, 1.0]])
    f = torch.tensor([[0, 1, 2], [0, 2, 3]])
    count = _coverage_count(v, f, H, W)
    assert count.max() == 1
    union = rasterize(v, f, (H, W)).mask[0]
    assert torch.equal(union, count == 1)
    # Half-open along every border: 18 × 18 pixels of the closed 19 × 19 lattice.
    assert count.sum() == 18 * 18
    # A fine grid with vertices on and off pixel centres (and a vertex fan on a centre).
    gv, gf, _ = grid_mesh(6, 6, width=18.0, height=18.0, dtype=torch.float64)
    for shift in (12.0, 12.37):
        sv = torch.cat([gv[:, :2] + shift - 0.0, torch.ones(gv.shape[0], 1, dtype=torch.float64)], 1)
        count = _coverage_count(sv, gf, H, W)
        assert count.max() == 1
        inside = torch.zeros(H, W, dtype=torch.bool)
        inside[math.ceil(shift - 9 + 1e-9):math.floor(shift + 9) + 1, math.ceil(shift - 9 + 1e-9):math.floor(shift + 9) + 1] = True
        assert (count[inside] == 1).sum() >= inside.sum() - 2 * 19  # only the outer border may be open


def _sphere_screen(radius=50.0, fov=12.0, size=224, subdiv=4, dtype=torch.float32):
    v, f = icosphere(subdiv, radius, dtype=dtype)
    cam = PerspectiveCamera.from_fov(fov, size, size)
    return v, f, cam


def test_sphere_area_and_no_holes():
    v, f, cam = _sphere_screen()
    for cull in (False, True):
        fr = rasterize(cam.project(v), f, (cam.height, cam.width), cull_backfaces=cull)
        r = cam.focal * 50.0 / math.sqrt(1000.0 ** 2 - 50.0 ** 2)
        area = fr.mask.sum().item()
        assert abs(area - math.pi * r * r) / (math.pi * r * r) < 0.01
        yy, xx = torch.meshgrid(torch.arange(224.0), torch.arange(224.0), indexing="ij")
        inside = (xx - cam.cx) ** 2 + (yy - cam.cy) ** 2 < (r - 1.5) ** 2
        assert fr.mask[0][inside].all()  # watertight: no cracks inside the silhouette
    # Culling back faces changes nothing for a closed mesh; flipped, only the far half survives.
    fr_front = rasterize(cam.project(v), f, (224, 224))
    fr_cull = rasterize(cam.project(v), f, (224, 224), cull_backfaces=True)
    assert torch.equal(fr_front.pix_to_face, fr_cull.pix_to_face)
    assert abs(fr_front.depth[0, 112, 112].item() - 950.0) < 0.5
    flipped = rasterize(cam.project(v), f[:, [0, 2, 1]], (224, 224), cull_backfaces=True)
    assert abs(flipped.depth[0, 112, 112].item() - 1050.0) < 0.5


def test_behind_camera_and_near_culling():
    v = torch.tensor([[2.0, 2.0, 5.0], [28.0, 4.0, 5.0], [6.0, 28.0, 5.0]])
    f = torch.tensor([[0, 1, 2]])
    assert rasterize(v, f, (32, 32)).mask.sum() > 100
    v_behind = v.clone()
    v_behind[:, 2] = -5.0
    assert rasterize(v_behind, f, (32, 32)).mask.sum() == 0
    v_straddle = v.clone()
    v_straddle[1, 2] = 0.5
    assert rasterize(v_straddle, f, (32, 32), near=1.0).mask.sum() == 0
    assert rasterize(v_straddle, f, (32, 32), near=0.1).mask.sum() > 100
    # Through a camera: a sphere behind it renders nothing.
    sv, sf, cam = _sphere_screen()
    behind = sv + torch.tensor([0.0, 0.0, 2000.0])
    assert rasterize(cam.project(behind), sf, (224, 224), near=cam.near).mask.sum() == 0


def test_batch_matches_single_renders():
    v, f, cam = _sphere_screen(subdiv=2, size=64)
    v2 = v * torch.tensor([1.2, 0.8, 1.0]) + torch.tensor([10.0, -5.0, 30.0])
    batch = torch.stack([v, v2])
    fr = rasterize(cam.project(batch), f, (64, 64))
    attrs = torch.stack([v, -v2])
    img = interpolate(attrs, fr, f)
    for k, vk in enumerate((v, v2)):
        single = rasterize(cam.project(vk), f, (64, 64))
        assert torch.equal(fr.pix_to_face[k], single.pix_to_face[0])
        assert torch.allclose(fr.bary[k], single.bary[0])
        assert torch.allclose(img[k], interpolate(attrs[k], single, f)[0])
    # A (V, C) attribute is shared across the batch.
    shared = interpolate(v, fr, f)
    assert torch.allclose(shared[0], interpolate(v, rasterize(cam.project(v), f, (64, 64)), f)[0])


def test_interpolate_gradcheck():
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    base = torch.tensor([[[1.3, 1.2, 2.0], [9.6, 0.7, 3.0], [10.2, 9.1, 2.5], [0.4, 8.3, 4.0]]],
                        dtype=torch.float64)
    attrs = torch.randn(1, 4, 2, dtype=torch.float64)

    def f_attr(a):
        return interpolate(a, rasterize(base, faces, (11, 11)), faces)

    def f_pos(v):
        return interpolate(attrs, rasterize(v, faces, (11, 11)), faces)

    assert torch.autograd.gradcheck(f_attr, (attrs.clone().requires_grad_(),))
    assert torch.autograd.gradcheck(f_pos, (base.clone().requires_grad_(),))
    assert torch.autograd.gradcheck(lambda v: rasterize(v, faces, (11, 11)).depth,
                                    (base.clone().requires_grad_(),))


def test_antialias_area_and_gradient():
    torch.manual_seed(0)
    f = torch.tensor([[0, 1, 2]])
    for shift in (0.0, 0.31, 0.77):
        v = torch.tensor([[[3.3, 2.2, 1.0], [25.7, 6.1, 1.0], [8.2, 27.6, 1.0]]], dtype=torch.float64)
        v[..., :2] += shift
        v.requires_grad_()
        fr = rasterize(v, f, (32, 32))
        aa = antialias(fr.mask.to(v.dtype)[..., None], fr, v, f)
        x, y = v[0, :, 0], v[0, :, 1]
        area = 0.5 * ((x[1] - x[0]) * (y[2] - y[0]) - (y[1] - y[0]) * (x[2] - x[0])).abs()
        assert abs(aa.sum().item() - area.item()) < 0.01 * area.item()
        assert abs(fr.mask.sum().item() - area.item()) < 0.05 * area.item()
        (g_aa,) = torch.autograd.grad(aa.sum(), v)
        (g_area,) = torch.autograd.grad(area, v)
        assert torch.allclose(g_aa[..., :2], g_area[..., :2], atol=0.1 * g_area.abs().max().item())
    # Interior pixels are untouched; a sphere's silhouette gets fractional coverage.
    sv, sf, cam = _sphere_screen(subdiv=3, size=96)
    s = cam.project(sv)[None]
    fr = rasterize(s, sf, (96, 96))
    m = fr.mask.float()[..., None]
    aa = antialias(m, fr, s, sf)[..., 0]
    frac = (aa > 0.01) & (aa < 0.99)
    assert frac.sum() > 50
    mk = m[..., 0]
    eroded = mk.clone()
    eroded[:, 1:-1, 1:-1] = mk[:, 1:-1, 1:-1] * mk[:, :-2, 1:-1] * mk[:, 2:, 1:-1] * mk[:, 1:-1, :-2] * mk[:, 1:-1, 2:]
    assert (aa[eroded == 1] == 1).all()
    r = cam.focal * 50.0 / math.sqrt(1000.0 ** 2 - 50.0 ** 2)
    assert abs(aa.sum().item() - math.pi * r * r) < abs(m.sum().item() - math.pi * r * r) + 0.01 * math.pi * r * r


# --------------------------------------------------------------------------- renderer


def test_renderer_outputs():
    v, f, cam = _sphere_screen(subdiv=3, size=64)
    B = 2
    verts = torch.stack([v, v + torch.tensor([5.0, 0.0, 0.0])])
    albedo = torch.full((B, v.shape[0], 3), 0.6)
    gamma = torch.zeros(B, 27)
    bg = torch.rand(B, 64, 64, 3)
    r = MeshRenderer(cam, f, outputs=OUTPUTS)
    out = r(verts, albedo, gamma, background=bg, pncc=pncc_code(v))
    mask = out.mask > 0
    assert out.rgb.shape == (B, 64, 64, 3) and out.overlay.shape == (B, 64, 64, 4)
    assert (out.depth[~mask] == 0).all() and (out.depth[mask] > 900).all()
    assert torch.allclose(out.normals[mask].norm(dim=-1), torch.ones(()), atol=1e-5)
    assert out.normals[0, 32, 32, 2] > 0.99  # the sphere's centre faces the camera (+z)
    assert torch.allclose(out.overlay[..., :3][~mask], bg[~mask])
    assert torch.allclose(out.overlay[..., :3][mask], out.rgb[mask])
    assert (out.pncc >= 0).all() and (out.pncc <= 1).all()
    assert torch.allclose(out.albedo[mask], torch.tensor(0.6))
    # Only requested outputs are computed.
    few = MeshRenderer(cam, f, outputs=("mask", "depth"))(verts)
    assert few.rgb is None and few.normals is None and few.mask is not None
    # Antialiased outputs give gradients to positions through the silhouette.
    aa = MeshRenderer(cam, f, outputs=("mask", "overlay"), antialias=True)
    scale = torch.ones((), requires_grad=True)
    o = aa(verts * scale, albedo, gamma, background=bg)
    (g,) = torch.autograd.grad(o.mask.sum(), scale)
    # Growing the spheres grows the antialiased mask: d(area)/d(scale) ≈ 2·area.
    area = o.mask.sum().item()
    assert 1.6 * area < g.item() < 2.4 * area
    (g2,) = torch.autograd.grad(aa(verts * scale, albedo, gamma, background=bg).overlay.sum(), scale)
    assert torch.isfinite(g2) and g2 != 0


def test_pncc_code_range():
    v, _ = icosphere(1, 3.0)
    c = pncc_code(v * torch.tensor([2.0, 1.0, 0.5]) + 7)
    assert torch.allclose(c.amin(0), torch.zeros(3)) and torch.allclose(c.amax(0), torch.ones(3))


# --------------------------------------------------------------------------- textures


def test_uv_texture_round_trip():
    # A 100 mm plane facing the camera, textured with its own projection: the texture must
    # reproduce the photo's colour at every texel's projection.
    cam = PerspectiveCamera.from_fov(12.0, 128, 128)
    gv, gf, uv = grid_mesh(8, 8, width=100.0, height=100.0)
    yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    image = torch.stack([xx / 127, yy / 127, 0.5 + 0 * xx], -1)  # linear: bilinear lookup is exact
    tex, vis = extract_uv_texture(gv, gf, uv, cam, image, texture_size=32)
    assert tex.shape == (1, 32, 32, 3) and vis.shape == (1, 32, 32)
    assert vis.float().mean() > 0.9
    j = torch.arange(32.0)
    u = (j + 0.5) / 32
    vv = 1 - (j + 0.5) / 32
    pts = torch.stack([(u[None, :] - 0.5) * 100 + 0 * vv[:, None], (vv[:, None] - 0.5) * 100 + 0 * u[None, :],
                       torch.zeros(32, 32)], -1)
    proj = cam.project(pts)
    expect = torch.stack([proj[..., 0] / 127, proj[..., 1] / 127, torch.full((32, 32), 0.5)], -1)
    assert torch.allclose(tex[0][vis[0]], expect[vis[0]], atol=1e-4)
    # Turned away from the camera: nothing is visible.
    back = gv * torch.tensor([-1.0, 1.0, -1.0])
    _, vis_back = extract_uv_texture(back, gf, uv, cam, image, texture_size=32)
    assert not vis_back.any()
    # Per-vertex colours with occlusion: a small plane in front hides the centre of the big one.
    cols, vis_v = sample_vertex_colors(gv, cam, image, gf)
    assert vis_v.all() and torch.allclose(cols[0, :, 2], torch.tensor(0.5))
    occluder = gv * 0.3 + torch.tensor([0.0, 0.0, 100.0])
    both = torch.cat([gv, occluder], 0)
    both_f = torch.cat([gf, gf + gv.shape[0]], 0)
    _, vis_both = sample_vertex_colors(both, cam, image, both_f)
    centre = gv[:, :2].abs().max(1).values < 10
    assert not vis_both[0, : gv.shape[0]][centre].any()
    assert vis_both[0, gv.shape[0]:].all()


# --------------------------------------------------------------------------- views (images the exporters write)


def test_key_light_is_the_old_hand_built_light():
    from facerecon.render import key_light

    for dt in (torch.float32, torch.float64):
        old = torch.zeros(2, 27, dtype=dt)
        for c in range(3):
            old[:, c * 9 + 2] = 0.35
            old[:, c * 9 + 1] = 0.1
        new = key_light(2, dt)
        assert new.dtype == dt and new.shape == (2, 27) and torch.equal(new, old)


def _sphere_scene(dtype=torch.float32, size=48):
    v, f = icosphere(3, radius=50.0, dtype=dtype)
    albedo = torch.full_like(v, 0.6)[None]
    light = torch.zeros(1, 27, dtype=dtype)
    light[:, [0, 9, 18]] = 0.2
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    return v[None], f, albedo, light, PerspectiveCamera.deep3d(size), crop


def test_crop_views_shapes_and_content():
    from facerecon.render import crop_views, sh_shade, shaded_colors

    v, f, albedo, light, cam, crop = _sphere_scene()
    views = crop_views(v, albedo, light, f, cam, crop)
    rc, geo = views["recon_crop"], views["geometry_crop"]
    assert set(views) == {"recon_crop", "geometry_crop"}
    assert rc.shape == (48, 48, 4) and geo.shape == (48, 48, 3) and rc.dtype == geo.dtype == np.uint8
    # Centre: the sphere (opaque, shaded); corners: the crop (overlay) and white (geometry view).
    assert rc[24, 24, 3] == 255 and rc[0, 0, 3] == 0 and np.array_equal(rc[0, 0, :3], crop[0, 0])
    assert (geo[0, 0] == 255).all() and geo.min() < 200  # the sphere's rim is darker than the white
    assert (geo == geo[..., :1]).all()  # grey: the same in every channel
    # The overlay is the renderer's, rounded; the geometry view uses the key light, not `light`.
    ref = MeshRenderer(cam, f, outputs=("overlay",), antialias=True)(
        v, albedo, light, background=torch.tensor(crop, dtype=torch.float32)[None] / 255.0).overlay[0]
    assert np.array_equal(rc, np.clip(ref.clamp(0, 1).numpy() * 255.0 + 0.5, 0, 255).astype(np.uint8))
    assert np.array_equal(crop_views(v, albedo, light * 3, f, cam, crop)["geometry_crop"], geo)
    # No light estimate: zeros (ambient only); float64 and unbatched inputs work alike.
    dark = crop_views(v, albedo, None, f, cam, crop)
    assert np.array_equal(dark["recon_crop"], crop_views(v, albedo, torch.zeros(1, 27), f, cam, crop)["recon_crop"])
    v64, _, a64, l64, _, _ = _sphere_scene(torch.float64)
    d64 = crop_views(v64[0], a64[0], l64, f, cam, crop)
    assert np.abs(d64["recon_crop"].astype(int) - rc).max() <= 1
    # Vertex colours: the shader's, clamped, in the inputs' dtype.
    from facerecon.geometry.mesh import vertex_normals

    n = vertex_normals(v, f)
    c = shaded_colors(albedo, n, light * 10)
    assert c.shape == (v.shape[1], 3) and c.dtype == np.float32 and c.max() == 1.0
    assert np.array_equal(c, sh_shade(albedo, n, light * 10)[0].clamp(0, 1).numpy())
    assert shaded_colors(a64, vertex_normals(v64, f), None).dtype == np.float64


def test_photo_overlay_downscales_big_photos():
    from facerecon.render import photo_overlay

    v, f, albedo, light, _, _ = _sphere_scene()
    cam = PerspectiveCamera.from_fov(20.0, 90, 60)
    photo = np.full((60, 90, 3), 7, np.uint8)
    ov = photo_overlay(v, albedo, light, f, cam, photo)
    assert ov.shape == (60, 90, 3) and ov.dtype == np.uint8
    assert (ov[0, 0] == 7).all() and (ov[30, 45] != 7).any()
    small = photo_overlay(v, albedo, light, f, cam, photo, max_side=45)
    assert small.shape == (30, 45, 3) and (small[0, 0] == 7).all() and (small[15, 22] != 7).any()


def test_uv_texture_fills_hidden_texels_with_mean_albedo():
    from facerecon.render import uv_texture

    cam = PerspectiveCamera.from_fov(12.0, 64, 64)
    gv, gf, uv = grid_mesh(4, 4, width=100.0, height=100.0)
    photo = np.full((64, 64, 3), (200, 100, 50), np.uint8)
    albedo = torch.rand(gv.shape[0], 3, generator=torch.Generator().manual_seed(0))
    tex = uv_texture(gv, gf, uv, None, cam, photo, albedo, size=16)
    assert tex.shape == (16, 16, 3) and tex.dtype == np.uint8
    assert (np.abs(tex[8, 8].astype(int) - (200, 100, 50)) <= 1).all()
    back = gv * torch.tensor([-1.0, 1.0, -1.0])  # turned away: every texel takes the mean albedo
    fill = np.clip(albedo.mean(0).numpy() * 255.0 + 0.5, 0, 255).astype(np.uint8)
    assert (uv_texture(back, gf, uv, gf, cam, photo, albedo, size=16) == fill).all()


def test_landmark_image_and_render_images():
    from facerecon.io.export import images_needed
    from facerecon.render import landmark_image, render_images

    v, f, albedo, light, cam, crop = _sphere_scene()
    fitted = np.array([[10.0, 10.0]] * 68)
    detected = np.array([[30.0, 20.0]] * 68)
    lm = landmark_image(crop, fitted, detected)
    assert lm.shape == crop.shape and lm.dtype == np.uint8
    assert tuple(lm[10, 10]) == (0, 255, 80) and tuple(lm[20, 30]) == (255, 200, 0)
    assert tuple(landmark_image(crop, fitted)[20, 30]) == tuple(crop[20, 30])
    kw = {"vertices_world": v, "albedo": albedo, "light": light, "faces": f, "camera_crop": cam,
          "crop_image": crop, "lm68_crop": fitted, "lm68_detected_crop": detected}
    # Without a photo: no overlay, no texture (their formats are then skipped); unknown names ignored;
    # no PNCC without a reference shape.
    imgs = render_images(images_needed() | {"depth"}, **kw)
    assert set(imgs) == {"recon_crop", "geometry_crop", "landmarks_crop", "geometry_side", "depth_crop",
                         "normals_crop"}
    assert np.array_equal(imgs["landmarks_crop"], lm)
    assert np.array_equal(imgs["recon_crop"], crop_views_ref(kw)["recon_crop"])
    assert set(render_images({"geometry_crop"}, **kw)) == {"geometry_crop"}
    photo = np.zeros((40, 40, 3), np.uint8)
    pcam = PerspectiveCamera.from_fov(20.0, 40, 40)
    both = render_images({"overlay", "texture"}, **kw, camera_photo=pcam, photo=photo,
                         uv=torch.rand(v.shape[1], 2), texture_size=8)
    assert both["overlay"].shape == (40, 40, 3) and both["texture"].shape == (8, 8, 3)
    no_uv = render_images({"overlay", "texture"}, **kw, camera_photo=pcam, photo=photo, uv=torch.zeros(0, 2))
    assert set(no_uv) == {"overlay"}


def test_side_view_and_crop_maps():
    from facerecon.render import crop_views
    from facerecon.render.views import DEPTH_UNIT_MM, crop_maps, render_images, side_view

    v, f, albedo, light, cam, crop = _sphere_scene()
    # A sphere is the same from the side (up to the tessellation): a grey disc on white, like the front.
    side = side_view(v, f, cam)
    front = crop_views(v, albedo, light, f, cam, crop)["geometry_crop"]
    assert side.shape == front.shape and side.dtype == np.uint8 and (side == side[..., :1]).all()
    assert ((side < 250).all(-1) == (front < 250).all(-1)).mean() > 0.97
    # An off-centre bar turned about its own centroid: a long x-extent becomes a long z-extent.
    bar = v.clone()
    bar[..., 0] *= 3.0
    wide, turned = crop_views(bar, albedo, light, f, cam, crop)["geometry_crop"], side_view(bar, f, cam)
    cols = lambda im: (im < 250).all(-1).any(0).sum()
    assert cols(turned) < cols(wide) * 0.6
    # Maps: depth in 0.1 mm on the sphere (nearest at the centre), normals facing the camera there,
    # PNCC of the reference; zero on background.
    ref = v[0] * 2.0 + 5.0
    maps = crop_maps(v, f, cam, ref)
    d, n, p = maps["depth_crop"], maps["normals_crop"], maps["pncc_crop"]
    assert d.dtype == np.uint16 and d.shape == (48, 48) and n.shape == p.shape == (48, 48, 3)
    assert d[0, 0] == 0 and (n[0, 0] == 0).all() and (p[0, 0] == 0).all()
    radius = float(v[0].norm(dim=-1).max())
    centre_mm = d[24, 24] * DEPTH_UNIT_MM
    assert abs(centre_mm - (cam.distance - float(v[0, :, 2].max()))) < 1.0
    assert d[d > 0].max() * DEPTH_UNIT_MM <= cam.distance + radius
    assert abs(int(n[24, 24, 2]) - 255) <= 3 and abs(int(n[24, 24, 0]) - 128) <= 6
    assert p[d > 0].std(0).min() > 20
    assert set(crop_maps(v, f, cam, None)) == {"depth_crop", "normals_crop"}
    kw = {"vertices_world": v, "albedo": albedo, "light": light, "faces": f, "camera_crop": cam, "crop_image": crop}
    imgs = render_images({"depth_crop", "pncc_crop"}, **kw, pncc_reference=ref)
    assert set(imgs) == {"depth_crop", "pncc_crop"} and np.array_equal(imgs["depth_crop"], d)


def crop_views_ref(kw):
    from facerecon.render import crop_views

    return crop_views(kw["vertices_world"], kw["albedo"], kw["light"], kw["faces"], kw["camera_crop"],
                      kw["crop_image"])
