"""Annotate the ICT face mesh: 3DDFA_V3's eight facial parts, 106 and 134 landmarks, jaw contour lines.

Everything is derived from ICT-FaceKit's own data: the mean face of the "face" variant (vertices
0..9408), its topology (the two eye openings are holes whose rims are the lid margins) and the
68 landmarks facerecon already defines on it (BFM/3DDFA convention, `ict_landmarks_bfm.json`).
No third-party annotation is used (3DDFA_V3's BFM annotation is not ours to redistribute).

Parts (3DDFA_V3's order and names; "right" = the SUBJECT's right, image left in an unmirrored
frontal photo, which is how V3's demo output labels them — its `right_eye` mask lies on the
image-left eye — and how iBUG-68 names points 36-41):
  0 right_eye, 1 left_eye   the lid-margin rim of ICT's eye opening; the opening itself is closed
                            by "cap" triangles (a fan over the rim) made at run time
  2 right_brow, 3 left_brow the band from 1.5 mm above the 68's brow points (which follow the
                            brow's upper edge) down by a thickness tapering 5 -> 9 mm outer -> inner
  4 nose                    polygon: nasion (68/27) down the bridge to the alae and the nose base
  5 upper_lip, 6 lower_lip  inside the outer lip contour (68/48-59), split by the mouth line
                            (halfway between the inner lip contours 68/60-64 and 64-67)
  7 skin                    the rest of the face inside the jaw contour and up to the forehead
  8 other                   neck, ears, the sides of the head (not one of V3's parts; never drawn)
Labels are chosen in the frontal projection (model x, y) of the mean face.

Landmarks are points `sum_k w_k v[i_k] + offset` over up to 6 vertices (the 68's own points are
(vertex, offset) pairs, copied where a convention shares the point); see docs/landmarks.md.

    python scripts/make_ict_annotations.py          # writes src/facerecon/data/ict_annotations.json
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
if "FACERECON_ASSETS" not in os.environ and (ROOT.parent / "shared" / "assets").is_dir():
    os.environ["FACERECON_ASSETS"] = str(ROOT.parent / "shared" / "assets")

import trimesh

from facerecon.models.ict import VARIANTS, load_ict_data

OUT = ROOT / "src" / "facerecon" / "data" / "ict_annotations.json"
PARTS = ("right_eye", "left_eye", "right_brow", "left_brow", "nose", "upper_lip", "lower_lip", "skin")
OTHER = 8
K = 6  # vertices per landmark definition (zero-padded)


def in_poly(pts: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule: (N, 2) points inside the closed polygon (M, 2)."""
    x, y = pts[:, 0], pts[:, 1]
    inside = np.zeros(len(pts), bool)
    for (x0, y0), (x1, y1) in zip(poly, np.roll(poly, -1, 0)):
        cross = (y0 > y) != (y1 > y)
        xi = x0 + (y - y0) * (x1 - x0) / np.where(y1 == y0, 1e-12, y1 - y0)
        inside ^= cross & (x < xi)
    return inside


def boundary_loops(faces: np.ndarray) -> list[list[int]]:
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)
    u, c = np.unique(e, axis=0, return_counts=True)
    adj = defaultdict(list)
    for a, b in u[c == 1]:
        adj[a].append(b)
        adj[b].append(a)
    seen, loops = set(), []
    for s in adj:
        if s in seen:
            continue
        loop, prev, cur = [s], None, s
        seen.add(s)
        while True:
            nxt = [n for n in adj[cur] if n != prev and n not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            loop.append(cur)
            seen.add(cur)
        loops.append([int(i) for i in loop])
    return loops


class Points:
    """Landmark definitions: rows of (K vertex ids, K weights, offset mm)."""

    def __init__(self, V, lm_vid, lm_off, mesh):
        self.V, self.lm_vid, self.lm_off, self.mesh = V, lm_vid, lm_off, mesh
        self.rows = []

    def of68(self, k):  # the 68's own definition of point k
        return ([int(self.lm_vid[k])], [1.0], self.lm_off[k])

    def blend(self, defs, ws):  # a weighted mean of definitions
        vid, w, off = [], [], np.zeros(3)
        for (dv, dw, do), a in zip(defs, ws):
            vid += dv
            w += [a * x for x in dw]
            off = off + a * np.asarray(do)
        return (vid, w, off)

    def surface(self, p):  # the mesh point closest to p, as barycentrics
        p = np.asarray(p, float)
        near = np.argsort(np.linalg.norm(self.V - p, axis=1))[:30]
        cand = np.nonzero(np.isin(self.mesh.faces, near).any(1))[0]
        tris = self.mesh.triangles[cand]
        q = trimesh.triangles.closest_point(tris, np.repeat(p[None], len(cand), 0))
        j = int(np.argmin(np.linalg.norm(q - p, axis=1)))
        b = trimesh.triangles.points_to_barycentric(tris[j:j + 1], q[j:j + 1])[0]
        return ([int(i) for i in self.mesh.faces[cand[j]]], [float(x) for x in b], np.zeros(3))

    def front(self, x, y):  # the front-most surface point at model (x, y), as barycentrics
        T = self.V[self.mesh.faces]
        a, b, c = T[:, 0, :2], T[:, 1, :2], T[:, 2, :2]
        det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
        det = np.where(np.abs(det) < 1e-12, 1e-12, det)
        w1 = ((x - a[:, 0]) * (c[:, 1] - a[:, 1]) - (y - a[:, 1]) * (c[:, 0] - a[:, 0])) / det
        w2 = ((b[:, 0] - a[:, 0]) * (y - a[:, 1]) - (b[:, 1] - a[:, 1]) * (x - a[:, 0])) / det
        w0 = 1 - w1 - w2
        hit = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
        z = np.where(hit, w0 * T[:, 0, 2] + w1 * T[:, 1, 2] + w2 * T[:, 2, 2], -np.inf)
        t = int(np.argmax(z))
        return ([int(i) for i in self.mesh.faces[t]], [float(w0[t]), float(w1[t]), float(w2[t])], np.zeros(3))

    def edge(self, a, b, t):  # the point at t in [0, 1] on the edge a-b
        return ([int(a), int(b)], [1.0 - t, t], np.zeros(3))

    def pos(self, d):
        vid, w, off = d
        return (self.V[vid] * np.asarray(w)[:, None]).sum(0) + off

    def add(self, d):
        self.rows.append(d)

    def table(self):
        vid = np.zeros((len(self.rows), K), np.int64)
        w = np.zeros((len(self.rows), K))
        off = np.zeros((len(self.rows), 3))
        for r, (dv, dw, do) in enumerate(self.rows):
            merged = defaultdict(float)
            for i, x in zip(dv, dw):
                merged[i] += x
            items = [(i, x) for i, x in merged.items() if abs(x) > 1e-9]
            assert len(items) <= K, items
            for c, (i, x) in enumerate(items):
                vid[r, c], w[r, c] = i, x
            off[r] = do
        return {"vertices": vid.tolist(), "weights": np.round(w, 6).tolist(), "offsets_mm": np.round(off, 4).tolist()}


def arc_sample(P: np.ndarray, n: int) -> list[tuple[int, float]]:
    """n points at equal arc length along the polyline P (M, 3), ends included: (segment, t)."""
    seg = np.linalg.norm(np.diff(P, axis=0), axis=1)
    s = np.concatenate([[0], np.cumsum(seg)])
    out = []
    for target in np.linspace(0, s[-1], n):
        j = int(np.clip(np.searchsorted(s, target, side="right") - 1, 0, len(seg) - 1))
        out.append((j, float((target - s[j]) / max(seg[j], 1e-12))))
    return out


def catmull_rom(P: np.ndarray, per: int = 20, closed: bool = False) -> np.ndarray:
    """A dense Catmull-Rom curve through the points P (M, 3)."""
    Q = np.vstack([P[-1:], P, P[:2]]) if closed else np.vstack([2 * P[:1] - P[1:2], P, 2 * P[-1:] - P[-2:-1]])
    segs = len(P) if closed else len(P) - 1
    out = []
    for i in range(segs):
        p0, p1, p2, p3 = Q[i], Q[i + 1], Q[i + 2], Q[i + 3]
        for t in np.linspace(0, 1, per, endpoint=False):
            out.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t * t
                              + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
    out.append(Q[segs + 1])
    return np.array(out)


def main() -> None:
    data = load_ict_data("face")
    assert data.mean_shape.shape[0] == VARIANTS["face"]
    V = data.mean_shape.astype(np.float64)
    F = np.asarray(data.faces, np.int64)
    lm_vid = np.asarray(data.landmarks68)
    lm_off = np.asarray(data.landmark_offsets, np.float64)
    L = V[lm_vid] + lm_off  # (68, 3) the 68 on the mean face
    xy = V[:, :2]
    mesh = trimesh.Trimesh(V, F, process=False)
    pts = Points(V, lm_vid, lm_off, mesh)

    # -- eye openings: the two holes whose centres are nearest the 68's eye centres -------------------
    loops = boundary_loops(F)
    eye_loops = {}
    for name, idx in (("right_eye", range(36, 42)), ("left_eye", range(42, 48))):
        c = L[list(idx)].mean(0)
        best = min(loops, key=lambda lp: np.linalg.norm(V[lp].mean(0) - c))
        lp = np.array(best)
        # Start at the outer corner (largest |x|), run over the upper lid first.
        start = int(np.argmax(np.abs(V[lp, 0])))
        lp = np.roll(lp, -start)
        if V[lp[1], 1] < V[lp[-1], 1]:
            lp = np.concatenate([lp[:1], lp[1:][::-1]])
        eye_loops[name] = [int(i) for i in lp]

    labels = np.full(len(V), OTHER, np.int64)

    # -- skin: inside the jaw contour, closed over the forehead; front of the ears ---------------------
    jaw = L[0:17, :2]
    top = V[:, 1].max() + 1
    face_poly = np.vstack([jaw, [[jaw[-1, 0] + 4, jaw[-1, 1]], [jaw[-1, 0] + 4, top], [jaw[0, 0] - 4, top],
                                 [jaw[0, 0] - 4, jaw[0, 1]]]])
    front = V[:, 2] > min(L[0, 2], L[16, 2]) - 22.0
    labels[in_poly(xy, face_poly) & front] = 7

    # -- brows ---------------------------------------------------------------------------------
    thick = np.array([5.0, 7.0, 8.5, 9.0, 9.0])  # outer -> inner, mm
    brow_lower = {}
    for name, idx, part in (("right_brow", list(range(17, 22)), 2), ("left_brow", list(range(26, 21, -1)), 3)):
        up = L[idx, :2] + [0, 1.5]
        lo = L[idx, :2] - np.c_[np.zeros(5), thick]
        poly = np.vstack([up, lo[::-1]])
        sel = in_poly(xy, poly) & (labels == 7)
        labels[sel] = part
        brow_lower[name] = (idx, L[idx] - np.c_[np.zeros(5), thick, np.zeros(5)])

    # -- nose -------------------------------------------------------------------------------------
    n27, n29, n30, n31, n33, n35 = L[27], L[29], L[30], L[31], L[33], L[35]
    half_top = 0.22 * abs(L[42, 0] - L[39, 0])
    alar = 0.5 * abs(n35[0] - n31[0]) + 5.0
    right = [[-half_top, n27[1] + 1.0], [-(half_top + 2.0), n29[1]], [-alar, n30[1] - 2.0],
             [-alar, n31[1] + 1.0], [n31[0] - 2.5, n31[1] - 2.0], [L[32, 0], L[32, 1] - 1.5], [0.0, n33[1] - 1.5]]
    right = np.array(right)
    nose_poly = np.vstack([right, (right[:-1] * [-1, 1])[::-1]])
    labels[in_poly(xy, nose_poly) & (labels == 7) & (V[:, 2] > n31[2] - 12)] = 4

    # -- lips ----------------------------------------------------------------------------------------
    outer = catmull_rom(L[48:60, :2], closed=True)
    # Grow the outer contour by 0.8 mm so the vermilion border's vertices fall inside.
    c = L[48:60, :2].mean(0)
    d = outer - c
    outer_g = outer + 0.8 * d / np.linalg.norm(d, axis=1, keepdims=True)
    in_lips = in_poly(xy, outer_g)
    # The mouth line: halfway between the upper and lower halves of the rim of ICT's mouth opening
    # (split at its corners, the rim's extremes in x), as a function of x.
    mouth_loop = min(loops, key=lambda lp: np.linalg.norm(V[lp].mean(0) - L[60:68].mean(0)))
    ml = np.array(mouth_loop)
    a, b = int(np.argmin(V[ml, 0])), int(np.argmax(V[ml, 0]))
    half1 = ml[min(a, b):max(a, b) + 1]
    half2 = np.concatenate([ml[max(a, b):], ml[:min(a, b) + 1]])
    up_h, lo_h = (half1, half2) if V[half1, 1].mean() > V[half2, 1].mean() else (half2, half1)

    def curve_y(idx, x):
        o = np.argsort(V[idx, 0])
        return np.interp(x, V[idx[o], 0], V[idx[o], 1])

    mouth_y = 0.5 * (curve_y(up_h, xy[:, 0]) + curve_y(lo_h, xy[:, 0]))
    lip_sel = in_lips & np.isin(labels, (7, OTHER))
    labels[lip_sel & (xy[:, 1] >= mouth_y)] = 5
    labels[lip_sel & (xy[:, 1] < mouth_y)] = 6
    # The lips' inner surfaces curl back into the mouth: the rim of the opening belongs to the lips.
    labels[up_h] = 5
    labels[lo_h] = 6

    # -- eyes: the rim vertices ---------------------------------------------------------------------
    for part, name in ((0, "right_eye"), (1, "left_eye")):
        labels[eye_loops[name]] = part

    # ------------------------------------------------------------------------------------------
    # 106 points (JD "Grand Challenge of 106-Point Facial Landmark Localization" layout, image-left
    # first as in iBUG-68: index 0 is on the subject's right).
    P = pts
    for i in range(33):  # jaw: even = the 68's jaw, odd = halfway between its neighbours
        P.add(P.of68(i // 2) if i % 2 == 0 else P.blend([P.of68(i // 2), P.of68(i // 2 + 1)], [0.5, 0.5]))
    for k in range(17, 27):  # 33-42: brows' upper edge
        P.add(P.of68(k))
    for k in range(27, 31):  # 43-46: nose bridge (43 nasion ... 46 tip)
        P.add(P.of68(k))
    for k in range(31, 36):  # 47-51: nose base
        P.add(P.of68(k))
    for k in (36, 37, 38, 39, 40, 41):  # 52-57: image-left eye (52 outer corner, 55 inner corner)
        P.add(P.of68(k))
    for k in (42, 43, 44, 45, 46, 47):  # 58-63: image-right eye (58 inner corner, 61 outer corner)
        P.add(P.of68(k))
    # 64-71: the brows' lower edge, 4 points each, image-left to image-right.
    lower_defs = {}
    for name in ("right_brow", "left_brow"):
        idx, lo = brow_lower[name]
        curve = catmull_rom(lo, per=40)
        samples = [curve[round(t * (len(curve) - 1))] for t in (0.15, 0.4, 0.65, 0.9)]
        d = [P.surface(p) for p in samples]
        lower_defs[name] = (idx, curve)
        # curve runs outer -> inner; image order is left -> right
        P.rows.extend(d if name == "right_brow" else d[::-1])
    # 72-77: lid midpoints and eye centres.
    for a, b, lo_a, lo_b, corners in ((37, 38, 41, 40, range(36, 42)), (43, 44, 47, 46, range(42, 48))):
        P.add(P.blend([P.of68(a), P.of68(b)], [0.5, 0.5]))
        P.add(P.blend([P.of68(lo_a), P.of68(lo_b)], [0.5, 0.5]))
        P.add(P.blend([P.of68(k) for k in corners], [1 / 6] * 6))
    # 78-83: nose sides: 78/79 upper bridge sides, 80/81 above the alae, 82/83 the alae's outer points.
    half_bridge = 0.5 * half_top + 3.0
    for y, x in ((L[28, 1], half_bridge), (0.5 * (L[29, 1] + L[30, 1]), 0.75 * alar),
                 (L[31, 1] + 3.0, alar - 1.5)):
        for s in (-1, 1):
            P.add(P.front(s * x, y))
    for k in range(48, 68):  # 84-103: lips, outer then inner (84/90, 96/100 the corners)
        P.add(P.of68(k))
    for k in (72, 75):  # 104/105: pupils = the eye centres (our mesh has no iris)
        P.add(P.rows[74 if k == 72 else 77])
    assert len(P.rows) == 106
    table106 = P.table()

    # ------------------------------------------------------------------------------------------
    # 134 points: brows 2 x 10, eyes 2 x 24, lips 34 outer + 32 inner (see docs/landmarks.md).
    Q = Points(V, lm_vid, lm_off, mesh)
    for name, idx in (("right_brow", list(range(17, 22))), ("left_brow", list(range(22, 27)))):
        ups = [Q.of68(k) for k in idx]  # image left -> right
        _lo_idx, lo_curve = lower_defs[name]
        los = [Q.surface(lo_curve[round(t * (len(lo_curve) - 1))]) for t in np.linspace(0.0, 1.0, 5)]
        if name == "left_brow":
            los = los[::-1]
        Q.rows.extend(ups + los)
    for name, c_out, c_in in (("right_eye", 36, 39), ("left_eye", 45, 42)):
        lp = np.array(eye_loops[name])
        inner_j = int(np.argmin(np.abs(V[lp, 0])))  # the inner corner: smallest |x| on the rim
        upper = lp[: inner_j + 1]
        lower = np.concatenate([lp[inner_j:], lp[:1]])
        halves = []
        for chain in (upper, lower):
            s = arc_sample(V[chain], 13)[1:-1]  # 11 inner points
            halves.append([Q.edge(chain[j], chain[min(j + 1, len(chain) - 1)], t) for j, t in s])
        up_pts, lo_pts = halves  # outer -> inner along the upper lid; inner -> outer along the lower lid
        if name == "right_eye":  # image-left eye: start at the outer corner (image left), clockwise
            Q.rows.extend([Q.of68(c_out)] + up_pts + [Q.of68(c_in)] + lo_pts)
        else:  # image-right eye: start at the inner corner (image left), clockwise
            Q.rows.extend([Q.of68(c_in)] + up_pts[::-1] + [Q.of68(c_out)] + lo_pts[::-1])
    for ring, n_half, corners in ((list(range(48, 60)), 16, (48, 54)), (list(range(60, 68)), 15, (60, 64))):
        Lr = L[ring]
        curve = catmull_rom(Lr, per=40, closed=True)
        m = len(curve) // len(ring)
        i_r = ring.index(corners[1]) * m
        top, bottom = curve[: i_r + 1], np.vstack([curve[i_r:], curve[:1]])
        rows = [Q.of68(corners[0])]
        for half, corner in ((top, corners[1]), (bottom, None)):
            s = arc_sample(half, n_half + 2)[1:-1]
            rows += [Q.surface(half[j] + t * (half[min(j + 1, len(half) - 1)] - half[j])) for j, t in s]
            if corner is not None:
                rows.append(Q.of68(corner))
        Q.rows.extend(rows)
    assert len(Q.rows) == 134, len(Q.rows)
    table134 = Q.table()

    # ------------------------------------------------------------------------------------------
    # Contour lines for ldm106_2d (3DDFA_V3's "parallel"): for each jaw point i of the 106 but the
    # chin (16), the face vertices along the ray from the nose base (68/33) through it, inside the
    # face outline; per pose the outermost one (in the roll-free projection) is the contour point.
    centre = L[33, :2]
    c106 = np.array([pts.pos(r) for r in pts.rows[:33]])
    inside = in_poly(xy, face_poly) & front
    ang_v = np.arctan2(xy[:, 1] - centre[1], xy[:, 0] - centre[0])
    r_v = np.linalg.norm(xy - centre, axis=1)
    lines = []
    for i in range(33):
        if i == 16:
            lines.append([])
            continue
        d = c106[i, :2] - centre
        ang, r = np.arctan2(d[1], d[0]), np.linalg.norm(d)
        dang = np.abs((ang_v - ang + np.pi) % (2 * np.pi) - np.pi)
        sel = inside & (dang * r_v < 4.0) & (r_v > 0.45 * r) & (r_v < r + 3.0)
        lines.append([int(i) for i in np.nonzero(sel)[0]])

    counts = {p: int((labels == i).sum()) for i, p in enumerate(PARTS)}
    counts["other"] = int((labels == OTHER).sum())
    out = {
        "about": ("ICT-FaceKit face-variant annotations made by scripts/make_ict_annotations.py from ICT's mean "
                  "face, topology and facerecon's 68 landmarks; see docs/landmarks.md and docs/parts.md"),
        "n_vertices": len(V),
        "part_names": list(PARTS),
        "other_label": OTHER,
        "vertex_parts": "".join(str(int(x)) for x in labels),
        "eye_rims": eye_loops,
        "landmarks106": table106,
        "landmarks134": table134,
        "contour_lines": lines,
        "contour_fixed": [16],
        "contour_centre_68": 33,
        "part_vertex_counts": counts,
    }
    OUT.write_text(json.dumps(out, separators=(",", ":")))
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KB): {counts}")
    print("contour line sizes", [len(x) for x in lines])


if __name__ == "__main__":
    main()
