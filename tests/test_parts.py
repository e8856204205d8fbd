"""3DDFA_V3's outputs on the ICT face: part annotation, part masks, 106/134 landmarks, ldm106_2d,
the extracted texture and their exporters."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from facerecon.geometry.camera import PerspectiveCamera
from facerecon.geometry.rotations import euler_to_matrix
from facerecon.render.parts import pack_masks, part_label_map, part_masks, unpack_masks
from facerecon.render.rasterize import rasterize

pytestmark = pytest.mark.assets


@pytest.fixture(scope="module")
def ann(ict_model):
    from facerecon.models.annotations import annotations_for

    a = annotations_for(ict_model)
    assert a is not None
    return a


def _posed(model, ann, yaw_deg=0.0, pitch_deg=0.0, expression=None, size=96):
    v = model.mean_shape.double()
    if expression is not None:
        v = model.shape(torch.zeros(1, model.layout.n_identity), model.expression_vector(expression))[0].double()
    rot = torch.tensor([math.radians(pitch_deg), math.radians(yaw_deg), 0.0], dtype=torch.float64)
    t = torch.tensor([0.0, -5.0, 0.0], dtype=torch.float64)
    cam = PerspectiveCamera.from_fov(14.0, size, size, distance=1000.0)
    return v, rot, t, cam


# -------------------------------------------------------------------------- the annotation

def test_parts_are_where_the_face_has_them(ict_model, ann):
    from facerecon.models.annotations import OTHER, PART_NAMES

    v = ict_model.mean_shape.numpy()
    lab = ann.vertex_parts
    assert lab.shape == (v.shape[0],) and set(np.unique(lab)) == set(range(9))
    c = {name: v[lab == k].mean(0) for k, name in enumerate(PART_NAMES)}
    # "right" = the subject's right = model -x (model x points to the subject's left).
    for side in ("eye", "brow"):
        assert c[f"right_{side}"][0] < -15 and c[f"left_{side}"][0] > 15
        assert abs(c[f"right_{side}"][0] + c[f"left_{side}"][0]) < 3  # mirror images
    assert c["right_brow"][1] > c["right_eye"][1] > c["nose"][1] > c["upper_lip"][1] > c["lower_lip"][1]
    assert abs(c["nose"][0]) < 1.5
    # The eye rims are holes of the mesh: each consecutive pair is a boundary edge.
    f = ict_model.faces.numpy()
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), 1)
    u, n = np.unique(e, axis=0, return_counts=True)
    boundary = {tuple(x) for x in u[n == 1]}
    for rim in ann.eye_rims.values():
        assert all(tuple(sorted((a, b))) in boundary for a, b in zip(rim, np.roll(rim, -1)))
    # The 68's eye points sit on their eye's rim region, its lip points on the lips.
    lm = ict_model.landmarks68.numpy()
    assert (lab[lm[60:68]] != OTHER).all()
    assert set(lab[lm[[61, 62, 63]]]) <= {5} and set(lab[lm[[65, 66, 67]]]) <= {6}


def test_triangle_parts_and_eye_caps(ict_model, ann):
    faces, labels = ann.part_mesh(ict_model.faces.numpy())
    F = ict_model.faces.shape[0]
    assert faces.shape == (F + sum(len(r) for r in ann.eye_rims.values()), 3)
    assert (labels[F:] <= 1).all() and (faces[F:, 2] >= ict_model.n_vertices).all()
    # Caps are wound like their neighbours: a frontal face shows them front-facing.
    v, rot, t, cam = _posed(ict_model, ann)
    scr = cam.project(ann.cap_vertices(v) @ euler_to_matrix(rot).T + t)[:, :2].numpy()
    s = scr[faces[F:]]
    area = (s[:, 1, 0] - s[:, 0, 0]) * (s[:, 2, 1] - s[:, 0, 1]) - (s[:, 1, 1] - s[:, 0, 1]) * (s[:, 2, 0] - s[:, 0, 0])
    assert (area <= 1e-9).mean() > 0.9


# -------------------------------------------------------------------------- landmarks

#: (106 index, 68 index) of the points the two conventions share.
SHARED_106_68 = [(0, 0), (16, 8), (32, 16), (33, 17), (37, 21), (38, 22), (42, 26), (43, 27), (46, 30), (49, 33),
                 (52, 36), (55, 39), (58, 42), (61, 45), (84, 48), (87, 51), (90, 54), (93, 57), (96, 60),
                 (100, 64)]
#: (134 index, 68 index): brow ends, eye corners, mouth corners.
SHARED_134_68 = [(0, 17), (4, 21), (10, 22), (14, 26), (20, 36), (32, 39), (44, 42), (56, 45), (68, 48), (85, 54),
                 (102, 60), (118, 64)]


def test_106_and_134_agree_with_the_68(ict_model, ann):
    v, *_ = _posed(ict_model, ann, expression={"jawOpen": 0.6, "mouthSmile_L": 0.5, "browInnerUp_R": 0.7})
    v = v.float()
    l68, l106, l134 = ict_model.landmarks(v[None])[0], ann.lm106(v), ann.lm134(v)
    assert l106.shape == (106, 3) and l134.shape == (134, 3)
    for a, b in SHARED_106_68:
        assert torch.allclose(l106[a], l68[b], atol=1e-4), (a, b)
    for a, b in SHARED_134_68:
        assert torch.allclose(l134[a], l68[b], atol=1e-4), (a, b)
    # Odd jaw points lie halfway between their even neighbours; the jaw runs image-left to right.
    assert torch.allclose(l106[1:33:2], 0.5 * (l106[0:31:2] + l106[2:33:2]), atol=1e-4)
    assert (torch.diff(l106[:33, 0]) > 0).all()
    # Pupils are the eye centres; the eye centres are inside their eyes' corners.
    assert torch.allclose(l106[104], l106[74]) and torch.allclose(l106[105], l106[77])
    assert l106[52, 0] < l106[74, 0] < l106[55, 0] and l106[58, 0] < l106[77, 0] < l106[61, 0]
    # Upper-lid points above lower-lid points, upper lip above lower lip (134 and 106 alike).
    assert (l134[21:32, 1].mean() > l134[33:44, 1].mean()) and (l134[45:56, 1].mean() > l134[57:68, 1].mean())
    assert l106[72, 1] > l106[73, 1] and l106[87, 1] > l106[98, 1] > l106[102, 1] > l106[93, 1]
    assert l134[69:85, 1].mean() > l134[86:102, 1].mean()
    # The brows' lower points lie below their upper points.
    assert l106[64:68, 1].mean() < l106[33:38, 1].mean() and l134[5:10, 1].mean() < l134[0:5, 1].mean()


def test_134_lids_follow_a_blink(ict_model, ann):
    def openings(expr):
        v, *_ = _posed(ict_model, ann, expression=expr)
        p = ann.lm134(v.float())
        # per eye: the upper-lid points against the lower-lid points facing them
        return [(p[21:32] - p[33:44].flip(0)).norm(dim=1).max().item(),
                (p[45:56] - p[57:68].flip(0)).norm(dim=1).max().item()]

    base = openings({})
    assert min(base) > 5.0
    for name in ("eyeBlink_L", "eyeBlink_R"):
        o = openings({name: 1.0})
        ratio = sorted(a / b for a, b in zip(o, base))
        assert ratio[0] < 0.75 and abs(ratio[1] - 1) < 0.05, (name, o, base)  # one eye closes, the other stays


def test_contour_2d_lies_on_the_rendered_silhouette(ict_model, ann):
    """Each re-picked jaw point is the outermost point of its line's rendered triangles (brute force
    against the rasterizer), and on the far side of a turned face it lies on the silhouette of the face
    inside the jaw outline."""
    for yaw in (-40.0, 40.0):
        v, rot, t, cam = _posed(ict_model, ann, yaw_deg=yaw, size=160)
        pts = ann.contour_2d(v, rot, t, cam).numpy()
        R = euler_to_matrix(rot)
        scr = cam.project(v @ R.T + t)
        static = cam.project(ann.lm106(v) @ R.T + t)[:, :2].numpy()
        centre = cam.project(ann.contour_centre(v) @ R.T + t)[0, :2].numpy()
        f = ict_model.faces.numpy()
        # the face inside the jaw outline (the region the contour lines cover)
        region = np.unique(np.concatenate([x for x in ann.contour_lines if len(x)]))
        full = rasterize(scr, torch.as_tensor(f[np.isin(f, region).all(1)]), (cam.height, cam.width)).mask[0].numpy()
        on_silhouette = []
        for i, line in enumerate(ann.contour_lines):
            if len(line) == 0:
                assert np.allclose(pts[i], static[i], atol=1e-4)
                continue
            d = static[i] - centre
            d /= np.linalg.norm(d)
            tri = f[np.isin(f, line).all(1)]
            m = rasterize(scr, torch.as_tensor(tri), (cam.height, cam.width)).mask[0].numpy()
            ys, xs = np.nonzero(m)
            assert len(xs) > 0
            reach = (np.c_[xs, ys] @ d).max()
            # No rendered pixel of the band lies beyond the picked point (pixel centres: +0.75 px).
            assert reach - pts[i] @ d < 0.75, (yaw, i, reach, pts[i] @ d)
            far = (i < 16) == (yaw > 0)  # yaw > 0 turns the nose to image right: the image-left side goes away
            if far and 2 <= (i if i < 16 else 32 - i) <= 12:
                q = np.round(pts[i] + 2.5 * d).astype(int)
                on_silhouette.append(not full[q[1], q[0]])
        assert np.mean(on_silhouette) >= 0.8, (yaw, on_silhouette)


def test_contour_2d_equals_static_points_up_to_the_offset_when_frontal(ict_model, ann):
    v, rot, t, cam = _posed(ict_model, ann, size=224)
    pts = ann.contour_2d(v, rot, t, cam).numpy()
    static = cam.project(ann.lm106(v) @ euler_to_matrix(rot).T + t)[:, :2].numpy()
    assert np.allclose(pts[33:], static[33:], atol=1e-4)
    # Frontal: the picked vertices are near the (offset, possibly off-surface) jaw definitions.
    assert np.median(np.linalg.norm(pts[:33] - static[:33], axis=1)) < 4.0


# -------------------------------------------------------------------------- part masks

def _brute_force(scr: np.ndarray, faces: np.ndarray, H: int, W: int):
    """Per pixel centre: the front-most covering triangle (perspective-correct depth), -1 if none."""
    best_z = np.full((H, W), np.inf)
    best_f = np.full((H, W), -1)
    for fi, (a, b, c) in enumerate(faces):
        P = scr[[a, b, c]]
        x0, x1 = max(int(np.ceil(P[:, 0].min())), 0), min(int(np.floor(P[:, 0].max())), W - 1)
        y0, y1 = max(int(np.ceil(P[:, 1].min())), 0), min(int(np.floor(P[:, 1].max())), H - 1)
        if x1 < x0 or y1 < y0:
            continue
        ys, xs = np.mgrid[y0:y1 + 1, x0:x1 + 1]
        area = (P[1, 0] - P[0, 0]) * (P[2, 1] - P[0, 1]) - (P[1, 1] - P[0, 1]) * (P[2, 0] - P[0, 0])
        if abs(area) < 1e-12:
            continue
        w0 = ((P[2, 0] - P[1, 0]) * (ys - P[1, 1]) - (P[2, 1] - P[1, 1]) * (xs - P[1, 0])) / area
        w1 = ((P[0, 0] - P[2, 0]) * (ys - P[2, 1]) - (P[0, 1] - P[2, 1]) * (xs - P[2, 0])) / area
        w2 = 1 - w0 - w1
        inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
        z = 1.0 / (w0 / P[0, 2] + w1 / P[1, 2] + w2 / P[2, 2])
        upd = inside & (z < best_z[ys, xs])
        best_z[ys[upd], xs[upd]] = z[upd]
        best_f[ys[upd], xs[upd]] = fi
    return best_f


@pytest.mark.parametrize("yaw, pitch", [(0.0, 0.0), (55.0, -10.0)])
def test_part_masks_brute_force(ict_model, ann, yaw, pitch):
    v, rot, t, cam = _posed(ict_model, ann, yaw_deg=yaw, pitch_deg=pitch, size=80,
                            expression={"jawOpen": 0.3})
    faces, labels = ann.part_mesh(ict_model.faces.numpy())
    vw = ann.cap_vertices(v) @ euler_to_matrix(rot).T + t
    masks = part_masks(vw, faces, labels, cam)
    vis = part_label_map(vw, faces, labels, cam)
    assert masks.shape == (8, 80, 80) and vis.shape == (80, 80) and vis.dtype == np.uint8
    scr = cam.project(vw).numpy()
    H = W = 80
    # seg: each part's mask is exactly the pixels some triangle of that part covers.
    for k in range(8):
        ref = _brute_force(scr, faces[labels == k], H, W) >= 0
        assert (ref != masks[k]).sum() <= 2, (k, (ref != masks[k]).sum())
    # seg_visible: the label of the front-most triangle (0 for OTHER and back faces).
    front = _brute_force(scr, faces, H, W)
    s = scr[faces][:, :, :2]
    area = (s[:, 1, 0] - s[:, 0, 0]) * (s[:, 2, 1] - s[:, 0, 1]) - (s[:, 1, 1] - s[:, 0, 1]) * (s[:, 2, 0] - s[:, 0, 0])
    lab = np.where((labels < 8) & (area <= 0), labels + 1, 0)
    ref = np.where(front >= 0, lab[np.maximum(front, 0)], 0)
    assert (ref != vis).mean() < 0.004, (ref != vis).sum()
    # visible ⊆ all, and the visible labels partition the rendered face's labelled pixels.
    for k in range(8):
        assert not ((vis == k + 1) & ~masks[k]).any()
    covered = rasterize(torch.as_tensor(scr), torch.as_tensor(faces), (H, W)).mask[0].numpy()
    assert not ((vis > 0) & ~covered).any()
    assert ((vis > 0) == (covered & (ref > 0))).mean() > 0.996
    if yaw == 0.0:
        assert all(masks[k].sum() > 0 for k in range(8)) and set(np.unique(vis)) == set(range(9))
    else:  # turned far away: the far eye hides behind the nose, but `seg` still draws it
        far = 1 if yaw > 0 else 0  # yaw > 0 turns the face towards image right: its left eye goes away
        assert masks[far].sum() > 0 and (vis == far + 1).sum() < masks[far].sum()


def test_pack_masks_round_trip():
    rng = np.random.default_rng(0)
    m = rng.random((8, 5, 7)) > 0.5
    assert np.array_equal(unpack_masks(pack_masks(m)), m)


# -------------------------------------------------------------------------- extracted texture

def test_extracted_texture_of_a_uniform_photo_is_uniform(ict_model, ann):
    from facerecon.models.annotations import mirror_vertices
    from facerecon.render.texture import extract_filled_uv_texture

    v, rot, t, cam = _posed(ict_model, ann, yaw_deg=50.0, size=128)
    vw = (v @ euler_to_matrix(rot).T + t).float()
    colour = torch.tensor([0.8, 0.5, 0.3])
    photo = colour.expand(128, 128, 3).clone()
    alb = ict_model.albedo_mean
    mirror = torch.as_tensor(mirror_vertices(ict_model.mean_shape))
    r = extract_filled_uv_texture(vw, ict_model.faces, ict_model.uv, cam, photo, alb, mirror, 128,
                                  uv_faces=ict_model.uv_faces)
    cov = r["covered"]
    # Photo samples, mirrored samples and the brightness-matched (constant) albedo are all `colour`
    # (but for a few texels at the layout's edges, whose samples mix in the photo's zero padding).
    assert ((r["texture"][cov] - colour).abs().amax(-1) > 0.02).float().mean() < 0.005
    # Grazing and hidden texels carry no weight; the turned-away half (mostly) has none.
    assert 0.2 < (r["weight"][cov] > 0.5).float().mean() < 0.8
    assert (r["weight"] <= 1).all() and (r["weight"][~cov] == 0).all()
    # The skin-mask hook: nothing is skin -> no photo sample is used, the albedo fills everything.
    r0 = extract_filled_uv_texture(vw, ict_model.faces, ict_model.uv, cam, photo, alb, None, 64,
                                   uv_faces=ict_model.uv_faces, skin_mask=np.zeros((128, 128)))
    assert r0["weight"].max() == 0
    assert torch.allclose(r0["texture"][r0["covered"]], r0["albedo"][r0["covered"]], atol=1e-6)


def test_mirror_vertices_is_an_involution_on_the_mean_face(ict_model):
    from facerecon.models.annotations import mirror_vertices

    m = mirror_vertices(ict_model.mean_shape)
    v = ict_model.mean_shape.numpy()
    assert (np.linalg.norm(v[m] * [-1, 1, 1] - v, axis=1) < 2.0).mean() > 0.98
    assert (m[m] == np.arange(len(m))).mean() > 0.9


# -------------------------------------------------------------------------- exporters

def test_seg_and_landmark_exporters(tmp_path):
    from facerecon.io.export import ExportItem, available_exporters, export

    rng = np.random.default_rng(1)
    S = 8
    masks = rng.random((8, S, S)) > 0.6
    labels = rng.integers(0, 9, (S, S)).astype(np.uint8)
    lms = {"lm106": {"crop_px": rng.random((106, 2)), "image_px": rng.random((106, 2)),
                     "model_mm": rng.random((106, 3)), "posed_mm": rng.random((106, 3))},
           "lm106_2d": {"crop_px": rng.random((106, 2)), "image_px": rng.random((106, 2))}}
    v = rng.random((4, 3)).astype(np.float32)
    it = ExportItem(vertices=v, vertices_posed=v, faces=np.array([[0, 1, 2], [0, 2, 3]]), colors=v, albedo=v,
                    crop_image=np.zeros((S, S, 3), np.uint8), lm68_crop=np.zeros((68, 2), np.float32), lm5_crop=None,
                    lm68_image=np.zeros((68, 2), np.float32), pose_deg={"yaw": 0.0, "pitch": 0.0, "roll": 0.0},
                    translation_mm=np.zeros(3), camera={}, box=np.zeros(4), landmarks=lms,
                    images={"seg_crop": pack_masks(masks), "seg_visible_crop": labels,
                            "seg_visible_image": labels[:, ::-1].copy()})
    assert {"seg", "seg_visible", "landmarks", "extracted"} <= set(available_exporters())
    paths = export(it, tmp_path, "f", ("seg", "seg_visible", "landmarks", "extracted"))
    assert [p.name for p in paths] == ["f_seg_crop.png", "f_seg_visible_crop.png", "f_seg_visible.png",
                                       "f_landmarks.json"]  # no seg_image, no texture: skipped
    assert np.array_equal(unpack_masks(np.asarray(PILImage.open(tmp_path / "f_seg_crop.png"))), masks)
    assert np.array_equal(np.asarray(PILImage.open(tmp_path / "f_seg_visible.png")), labels[:, ::-1])
    d = json.loads((tmp_path / "f_landmarks.json").read_text())
    assert np.allclose(d["lm106"]["posed_mm"], lms["lm106"]["posed_mm"]) and "convention" in d["lm106_2d"]
    # Without landmark sets there is no landmarks file.
    from dataclasses import replace

    assert export(replace(it, landmarks=None), tmp_path / "b", "f", ("landmarks",)) == []


# -------------------------------------------------------------------------- through Reconstruction

def test_reconstruction_outputs_in_crop_and_image_pixels(tmp_path, ict_model):
    from tests.test_export import _reconstruction

    rec, _ = _reconstruction(ict_model, (300, 400))
    crop = rec.crop
    # The 68 of the set equal the Reconstruction's own 68; every set maps crop -> image by the crop's similarity.
    assert np.allclose(rec.landmarks_2d("lm68", "image"), rec.lm68)
    l106 = rec.landmarks_2d("lm106", "crop")
    assert np.allclose(l106[[52, 55, 58, 61, 84, 90, 46]], rec.lm68_crop[[36, 39, 42, 45, 48, 54, 30]], atol=1e-3)
    for name in ("lm106", "lm106_2d", "lm134"):
        c, i = rec.landmarks_2d(name, "crop"), rec.landmarks_2d(name, "image")
        assert np.allclose(crop.crop_to_original(c.astype(np.float64)), i, atol=1e-2), name
    # Masks: the crop's and the photo's agree through the crop's similarity (nearest pixel).
    seg_c, seg_i = rec.part_masks("crop"), rec.part_masks("image")
    vis_c = rec.part_masks("crop", visible=True)
    assert seg_c.shape == (8, 224, 224) and seg_i.shape == (8, 300, 400) and vis_c.shape == (224, 224)
    ys, xs = np.nonzero(vis_c)
    p = np.round(crop.crop_to_original(np.c_[xs, ys].astype(np.float64))).astype(int)
    ok = (p[:, 0] >= 0) & (p[:, 0] < 400) & (p[:, 1] >= 0) & (p[:, 1] < 300)
    agree = seg_i[vis_c[ys, xs][ok].astype(int) - 1, p[ok, 1], p[ok, 0]]
    assert agree.mean() > 0.9
    # save() writes the new formats (the photo is attached: the texture too).
    paths = {q.name for q in rec.save(tmp_path, ("seg", "seg_visible", "landmarks", "extracted"), stem="f")}
    assert paths == {"f_seg_crop.png", "f_seg.png", "f_seg_visible_crop.png", "f_seg_visible.png", "f_landmarks.json",
                     "f_extracted.obj", "f_extracted.mtl", "f_extracted.png", "f_albedo.png"}
    assert np.array_equal(unpack_masks(np.asarray(PILImage.open(tmp_path / "f_seg.png"))), seg_i)
    d = json.loads((tmp_path / "f_landmarks.json").read_text())
    assert np.allclose(d["lm134"]["image_px"], rec.landmarks_2d("lm134", "image"), atol=1e-4)
    assert len(d["lm106_2d"]["crop_px"]) == 106 and "model_mm" not in d["lm106_2d"]


def test_extracted_texture_rejects_what_the_parser_calls_other(ict_model, monkeypatch):
    """The parser's 'other' (occluders) is carried from the crop to the photo and removes those photo
    samples from the extracted texture; the default `skin_mask="parser"` uses the shared parser."""
    from facerecon.detect import parsing
    from tests.test_export import _reconstruction

    rec, _ = _reconstruction(ict_model, (300, 400))

    class Stub:  # 'other' where `other` is True (crop pixels), skin elsewhere
        def __init__(self, other):
            self.other = torch.as_tensor(other)

        def probabilities(self, crops):
            p = torch.zeros(len(crops), 9, 224, 224)
            p[:, 0] = self.other.float()
            p[:, 8] = 1.0 - self.other.float()
            return p

    left = np.zeros((224, 224), bool)
    left[:, :112] = True
    m = parsing.face_probability_in_photo(Stub(left), rec.crop)
    assert m.shape == (300, 400) and m.dtype == np.float32
    (xl, yl), (xr, yr) = rec.crop.crop_to_original(np.array([[50.0, 100.0], [170.0, 100.0]]))
    assert m[round(yl), round(xl)] < 0.05 and m[round(yr), round(xr)] > 0.95
    outside = rec.crop.crop_to_original(np.array([[-40.0, -40.0]]))[0]
    if 0 <= outside[0] < 400 and 0 <= outside[1] < 300:
        assert m[int(outside[1]), int(outside[0])] == 1.0  # the parser did not see it: no rejection

    colour_only = rec.extracted_texture(64, skin_mask=None)["texture_extracted"]
    monkeypatch.setattr(parsing, "shared_parser", lambda: Stub(np.zeros((224, 224), bool)))
    assert np.array_equal(rec.extracted_texture(64)["texture_extracted"], colour_only)  # all face: no change
    everything = Stub(np.ones((224, 224), bool))  # an occluder over the whole crop
    monkeypatch.setattr(parsing, "shared_parser", lambda: everything)
    hidden = rec.extracted_texture(64)["texture_extracted"]
    m_all = parsing.face_probability_in_photo(everything, rec.crop)
    assert m_all[round(yl), round(xl)] == 0.0 and m_all[round(yr), round(xr)] == 0.0
    assert np.array_equal(hidden, rec.extracted_texture(64, skin_mask=m_all)["texture_extracted"])
    assert (hidden != colour_only).any(axis=-1).mean() > 0.3  # most texels now come from the albedo fill
