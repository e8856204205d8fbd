"""Video with any method: reconstruction in overlapping windows, and the files a video gives.

`reconstruct_windows` runs a method over a stream of frames W at a time (memory flat in the clip's
length): the first window estimates the identity (`Request(shared_identity=True)`: a fit averages
its frames' independent fits, the regressor its frames' identities); every later window keeps that
identity (`Request.keep_identity`), re-fits the last `overlap` frames of the window before together
with its new frames, starting from their earlier results, and cross-fades the two estimates over
the overlap, so pose and expression have no step at the border. Inside a window the fit's temporal
term smooths pose and expression (`Request.temporal`).

`VideoOutputs` turns the stream of results into a few files, written as it goes (the overlay
video) or at the end (the rest), each atomically: an overlay MP4, the sequence as CSV + NPZ
(`io.sequence`), an animated GLB (the identity's mesh with the expression blendshapes as morph
targets) and a Live Link Face-style ARKit CSV; per-frame files only on request.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage
from PIL import ImageDraw

from ..align import Crop
from ..detect.base import Face
from ..errors import FaceReconError
from ..geometry.camera import PerspectiveCamera
from ..geometry.rotations import matrix_to_euler
from ..io import sequence as seqio
from ..io.export import camera_json
from ..io.video import VideoFrame, VideoWriter
from ..render import views
from ..render.renderer import MeshRenderer
from .base import Method, MethodContext, Request
from .result import Reconstruction, from_params

log = logging.getLogger(__name__)

#: A stream item that ends the current run of frames (a gap without a face): the pending window is
#: reconstructed and nothing overlaps across the gap (the identity is kept).
BREAK = None


@dataclass(frozen=True)
class Windows:
    """size: frames per window (new + overlap); overlap: frames re-fitted from the window before and
    cross-faded (0 <= overlap < size). size 0: the whole clip in one window (memory grows with it)."""

    size: int = 32
    overlap: int = 8

    def __post_init__(self):
        if self.size < 0 or self.overlap < 0 or (self.size and (self.size < 2 or self.overlap >= self.size)):
            raise FaceReconError(f"video windows need size >= 2 (or 0: whole clip) and 0 <= overlap < size; "
                                 f"got size {self.size}, overlap {self.overlap}")


@dataclass
class _Item:
    crop: Crop
    face: Face
    tag: Any
    rec: Reconstruction | None = None


def blend(context: MethodContext, old: Reconstruction, new: Reconstruction, alpha: float) -> Reconstruction:
    """(1 − alpha) old + alpha new for the pose, translation, expression and light of one frame (the
    identity is shared); a method without model parameters gets `new` when alpha >= 0.5, else `old`."""
    if old.params is None or new.params is None:
        return new if alpha >= 0.5 else old
    a, b = old.params, new.params.map(lambda t: t.to(old.params.identity))
    mix = {k: (1 - alpha) * getattr(a, k) + alpha * getattr(b, k) for k in ("expression", "rotation", "translation",
                                                                          "light")}
    p = b.replace(**mix)
    with torch.no_grad():
        lm = context.model.project_landmarks(p, context.camera)
    return from_params(context.model, context.camera, p, lm, [new.crop], [new.face], new.method, new.times)[0]


def reconstruct_windows(method: Method, context: MethodContext, items: Iterable, request: Request,
                        windows: Windows = Windows()) -> Iterator[tuple[Any, Reconstruction]]:
    """Reconstruct a stream of frames of one person in overlapping windows (module doc).

    Args:
        method, context: the method and the context it was built with (model, crop camera).
        items: (crop, face, tag) per frame, in order, or `BREAK` to end a run of frames (a gap).
        request: the request of every window (`shared_identity` is set; `temporal` smooths inside).
        windows: window size and overlap.

    Yields:
        (tag, Reconstruction) per frame, in the order given, as soon as a frame is final; after each
        `BREAK`, (None, None) once every frame before it has been given back.
    """
    request = replace(request, shared_identity=True)
    size, overlap = windows.size, windows.overlap
    identity: Reconstruction | None = None  # a result of the first window: the identity kept
    tail: list[_Item] = []  # the window before's last frames, already reconstructed
    new: list[_Item] = []

    def run(final: bool) -> Iterator[tuple[Any, Reconstruction]]:
        nonlocal tail, new, identity
        batch = tail + new
        req = request
        if identity is not None and identity.params is not None:
            last = (tail[-1].rec if tail else identity).params
            starts = [it.rec.params for it in tail] + [last] * len(new)
            start = type(last).cat(starts).map(lambda t: t.detach())
            start = start.replace(identity=identity.params.identity.expand(len(batch), -1).to(start.expression),
                                  albedo=identity.params.albedo.expand(len(batch), -1).to(start.expression),
                                  albedo_offset=None)
            req = replace(request, start=start, keep_identity=True)
        recs = method.reconstruct([it.crop for it in batch], [it.face for it in batch], req)
        if len(recs) != len(batch):
            raise FaceReconError(f"method '{method.name}' returned {len(recs)} results for {len(batch)} faces")
        if identity is None:
            identity = recs[0]
        k = len(tail)
        for j, (it, r) in enumerate(zip(batch, recs)):
            # The overlap: from the window before's estimate (j = 0) towards this window's (j = k − 1).
            it.rec = blend(context, it.rec, r, (j + 1) / (k + 1)) if j < k else r
        keep = 0 if final else min(overlap, len(batch))
        done, tail, new = batch[:len(batch) - keep], batch[len(batch) - keep:], []
        for it in done:
            yield it.tag, it.rec

    for item in items:
        if item is BREAK:
            if new:
                yield from run(final=True)
            else:
                yield from ((it.tag, it.rec) for it in tail)
            tail = []
            yield None, None
            continue
        crop, face, tag = item
        new.append(_Item(crop, face, tag))
        if size and len(tail) + len(new) >= size:
            yield from run(final=False)
    if new:
        yield from run(final=True)
    else:
        yield from ((it.tag, it.rec) for it in tail)


# -- outputs -----------------------------------------------------------------------------------

#: The files of a video (name -> description); `VideoOutputs(outputs=...)` picks from these.
VIDEO_OUTPUTS = {
    "mp4": "S_overlay.mp4: the shaded face and its 68 landmarks over every frame (H.264)",
    "sequence": "S_sequence.csv + S_sequence.npz: per frame: frame number, time, pose, translation, "
                "expression (ARKit) weights, 68 landmarks; the NPZ adds K and the camera matrix",
    "glb": "S.glb: the identity's mesh with the expression blendshapes as morph targets, animated "
           "(weights, rotation, translation per frame) with the video's camera",
    "livelink": "S_livelink.csv: ARKit weights in Live Link Face's CSV layout (animation tools import it)",
}


def video_camera(rec: Reconstruction) -> PerspectiveCamera:
    """One camera for the whole clip: the first face's focal length, the principal point at the
    centre of the frame (each frame's own camera follows its crop)."""
    c = rec.camera
    return PerspectiveCamera(c.focal, (c.width - 1) / 2.0, (c.height - 1) / 2.0, c.width, c.height, c.distance, c.near)


def to_video_camera(rec: Reconstruction, cam: PerspectiveCamera) -> tuple[np.ndarray, np.ndarray]:
    """The head's pose in `cam`'s world frame: (R (3, 3), t (3,) mm).

    The frame's own camera (`rec.camera`: same centre, focal f and principal point p of its crop)
    sees camera-space points X where `cam` (F, p0) sees L X, L = [[1, 0, a_x], [0, 1, a_y], [0, 0, F/f]],
    a = (p − p0) / f (OpenCV axes; L keeps sizes). The head's origin O goes to L O exactly; the head
    around it turns with the ray (0, 0, 1) -> (a_x, a_y, 1), which matches L's shear to first order
    (the face is seen off-axis); what is left is second order in a and in the head's depth range."""
    c = rec.camera
    D = np.diag([1.0, -1.0, -1.0])  # world (y up, z to the viewer) <-> OpenCV camera axes, up to the shift
    R, t = np.asarray(rec.rotation_matrix, np.float64), np.asarray(rec.translation_mm, np.float64)
    O = D @ t + [0.0, 0.0, c.distance]
    a = np.array([c.cx - cam.cx, c.cy - cam.cy]) / c.focal
    L = np.array([[1.0, 0.0, a[0]], [0.0, 1.0, a[1]], [0.0, 0.0, cam.focal / c.focal]])
    Q = _turn_to(np.array([a[0], a[1], 1.0]))
    return D @ Q @ D @ R, D @ (L @ O - [0.0, 0.0, cam.distance])


def _turn_to(ray: np.ndarray) -> np.ndarray:
    """(3, 3) the rotation about the axis z × ray that turns (0, 0, 1) onto the direction of `ray`."""
    r = ray / np.linalg.norm(ray)
    axis = np.cross([0.0, 0.0, 1.0], r)
    s, c = np.linalg.norm(axis), r[2]
    if s < 1e-12:
        return np.eye(3)
    k = axis / s
    Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + s * Kx + (1 - c) * Kx @ Kx


def overlay_frame(rec: Reconstruction, pixels: np.ndarray, max_side: int | None = 1280,
                  renderer: MeshRenderer | None = None) -> np.ndarray:
    """The shaded face and its 68 fitted landmarks over one frame (H, W, 3) uint8 (downscaled like
    `views.photo_overlay` when larger than `max_side`); `renderer`: one to reuse across frames."""
    g = rec.geometry
    with torch.no_grad():
        ov = views.photo_overlay(g.vertices_world, g.albedo, rec.light, rec.topology.triangles, rec.camera, pixels,
                                 max_side, renderer)
    s = ov.shape[1] / pixels.shape[1]
    im = PILImage.fromarray(ov)
    d = ImageDraw.Draw(im)
    for x, y in np.asarray(rec.lm68, np.float64) * s:
        d.ellipse([x - 1.2, y - 1.2, x + 1.2, y + 1.2], fill=(0, 255, 80))
    return np.asarray(im)


def _resized(pixels: np.ndarray, max_side: int | None) -> np.ndarray:
    H, W = pixels.shape[:2]
    s = 1.0 if max_side is None else min(1.0, max_side / max(H, W))
    if s >= 1.0:
        return pixels
    return np.asarray(PILImage.fromarray(pixels).resize((round(W * s), round(H * s)), PILImage.BILINEAR))


class VideoOutputs:
    """Writes one video's results as they stream in (module doc); `close()` writes the rest.

    Args:
        out_dir, stem: files are `out_dir/stem*` (VIDEO_OUTPUTS).
        fps: the frame rate of the frames given (the video's / stride).
        outputs: names from VIDEO_OUTPUTS.
        frame_formats: exporter names (`io.export`) written per frame into `out_dir/frames/` as
            frame{index:06d}.* (e.g. ("obj",) for per-frame meshes); empty: none.
        source: the video's name; max_side: the overlay video's longer side at most (px).
    """

    def __init__(self, out_dir, stem: str, fps: float, outputs=tuple(VIDEO_OUTPUTS), frame_formats=(),
                 source: str = "", max_side: int | None = 1280, crf: int = 23):
        bad = sorted(set(outputs) - set(VIDEO_OUTPUTS))
        if bad:
            raise FaceReconError(f"unknown video outputs {bad}; choose from {','.join(VIDEO_OUTPUTS)}")
        self.out = Path(out_dir)
        self.stem, self.fps, self.outputs = stem, float(fps), tuple(outputs)
        self.frame_formats, self.source, self.max_side = tuple(frame_formats), source, max_side
        self.writer = VideoWriter(self.out / f"{stem}_overlay.mp4", self.fps, crf=crf) if "mp4" in outputs else None
        self.rows: list[dict] = []
        self.first: Reconstruction | None = None
        self.camera: PerspectiveCamera | None = None
        self.frames = 0
        self.paths: list[Path] = []
        self._renderer: MeshRenderer | None = None

    def add(self, frame: VideoFrame, rec: Reconstruction | None) -> None:
        """One frame and its result (None: no face: the frame goes into the overlay video as it is)."""
        self.frames += 1
        if rec is not None:
            if self.first is None:
                self.first, self.camera = rec, video_camera(rec)
            R, t = to_video_camera(rec, self.camera)
            pitch, yaw, roll = np.degrees(matrix_to_euler(torch.as_tensor(R)).numpy())
            self.rows.append({
                "frame": frame.index, "time": frame.time, "rotation": R, "pose": [yaw, pitch, roll], "t": t,
                "lm68": np.asarray(rec.lm68, np.float32),
                "bs": None if rec.blendshapes is None else np.array(list(rec.blendshapes.values()), np.float32),
                "exp": None if rec.params is None else rec.params.expression[0].detach().cpu().numpy()})
            if self.frame_formats:
                self.paths += rec.save(self.out / "frames", self.frame_formats, stem=frame.name)
        if self.writer is not None:
            if rec is not None and self._renderer is None:
                self._renderer = MeshRenderer(rec.camera, rec.topology.triangles, outputs=("overlay",), antialias=True)
            img = frame.pixels if rec is None else overlay_frame(rec, frame.pixels, self.max_side, self._renderer)
            self.writer.write(_resized(img, self.max_side) if rec is None else img)

    def sequence(self) -> seqio.FaceSequence:
        """The FaceSequence of the frames added so far."""
        rows, first = self.rows, self.first
        names = tuple(first.blendshapes) if first is not None and first.blendshapes else ()
        T = len(rows)
        cam = self.camera or PerspectiveCamera(1.0, 0.0, 0.0, 1, 1)
        return seqio.FaceSequence(
            frame=np.array([r["frame"] for r in rows], np.int64), time=np.array([r["time"] for r in rows], np.float64),
            pose_deg=np.array([r["pose"] for r in rows], np.float64).reshape(T, 3),
            rotation=np.array([r["rotation"] for r in rows], np.float64).reshape(T, 3, 3),
            translation_mm=np.array([r["t"] for r in rows], np.float64).reshape(T, 3),
            blendshapes=np.array([r["bs"] for r in rows], np.float32).reshape(T, len(names)),
            blendshape_names=names, lm68=np.array([r["lm68"] for r in rows], np.float32).reshape(T, 68, 2),
            camera=camera_json(cam), fps=self.fps, source=self.source,
            method=first.method if first else "", model=first.model_name if first else "")

    def close(self) -> list[Path]:
        """Finish the overlay video and write the sequence files; returns every path written."""
        if self.writer is not None:
            self.paths.append(self.writer.close())
            self.writer = None
        if self.first is None:
            return self.paths
        seq = self.sequence()
        if "sequence" in self.outputs:
            for suffix, write in ((".csv", seqio.write_sequence_csv), (".npz", seqio.write_sequence_npz)):
                path = self.out / f"{self.stem}_sequence{suffix}"
                write(path, seq)
                self.paths.append(path)
        if "livelink" in self.outputs and seq.blendshape_names:
            path = self.out / f"{self.stem}_livelink.csv"
            seqio.write_live_link_csv(path, seq)
            self.paths.append(path)
        if "glb" in self.outputs:
            path = self.out / f"{self.stem}.glb"
            from ..io.atomic import write_bytes

            exp = [r["exp"] for r in self.rows]
            weights = None if any(e is None for e in exp) else np.stack(exp)
            write_bytes(path, animated_glb(self.first, seq, weights))
            self.paths.append(path)
        return self.paths

    def abort(self) -> None:
        """Stop without finishing the overlay video (its temporary file is removed)."""
        if self.writer is not None:
            self.writer.abort()
            self.writer = None


def animated_glb(rec: Reconstruction, seq: seqio.FaceSequence, weights: np.ndarray | None) -> bytes:
    """The GLB of `seq`: `rec`'s identity at a neutral expression with one morph target per
    expression coefficient (coefficient 1 minus neutral), animated by `weights` (T, K), its albedo as
    vertex colours. A result without model parameters gives its own mesh, animated in pose only."""
    m = rec.model
    colors = rec.albedo
    if rec.params is None or m is None or rec.correspondence is not None or weights is None:
        return seqio.animated_glb(rec.vertices_model, rec.triangles, colors, (), np.zeros((0, len(colors), 3)),
                                  np.zeros((len(seq), 0)), seq)
    K = m.layout.n_expression
    with torch.no_grad():
        ident = rec.params.identity.to(m.mean_shape)
        neutral = m.shape(ident, torch.zeros(1, K).to(ident))
        deltas = m.shape(ident.expand(K, -1), torch.eye(K).to(ident)) - neutral
    names = tuple(m.expression_names) if len(m.expression_names or ()) == K else tuple(
        f"expression{k}" for k in range(K))
    return seqio.animated_glb(neutral[0].cpu().numpy(), rec.triangles, colors, names, deltas.cpu().numpy(), weights,
                              seq)


__all__ = ["BREAK", "VIDEO_OUTPUTS", "VideoOutputs", "Windows", "animated_glb", "blend", "overlay_frame",
           "reconstruct_windows", "to_video_camera", "video_camera"]
