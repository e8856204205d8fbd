"""The default detection pipeline: robust face boxes + the best 68 landmarks for the pose.

Boxes: RetinaFace; if it finds nothing, FaceBoxes; if that fails too, RetinaFace again on the
image padded by a border (faces cut by the frame or filling it) and on a 2x upscale (tiny
images). Landmarks: 3DDFA_V2 on every box (it also gives the head pose); when MediaPipe is
installed, FaceMesh landmarks are averaged in with weight 0.5 up to `blend_yaw[0]` = 30 degrees of
|yaw| (3DDFA's estimate), fading to 0 at `blend_yaw[1]` = 60. Alone FaceMesh is worse than 3DDFA
on AFLW2000-3D even for frontal faces (3.68 vs 3.10 NME), but their errors are independent enough
that the average wins (3.00); past 60 degrees FaceMesh often fails or drifts (docs/detection.md).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..errors import AssetError, MissingExtraError
from ..geometry.landmarks import lm5_from_lm68_contour, yaw_gate
from .base import Face, sort_by_size
from .crop import roi_box_from_landmarks
from .nms import box_area, box_intersection
from .retinaface import as_pixels

# Chosen on 480 MERL-RAV *train* faces placed like the benchmark's (benchmarks/detection_calibrate.py):
# RetinaFace's false boxes (>= 0.3) have a likeness of 0.06 (median; 90 % <= 0.32, max 0.50), boxes
# on the labelled face 0.92 (5 % <= 0.41).
FACE_LIKENESS = 0.5  # at or above: a face, ranked by size alone
RESCUE_LIKENESS = 0.25
# Landmarked boxes overlapping by more than this (intersection / the smaller box) are one face: the
# more face-like stays. Ranking face-like faces by size alone would otherwise let a box shifted off
# a profile (RetinaFace's NMS keeps pairs at IoU < 0.4) win by a few pixels.
DUPLICATE_OVERLAP = 0.4
RESCUE_MAX = 3  # weak boxes landmarked at most (the rescue's cost: ~20 ms each with TTA)


def suppress_contained(faces: list[Face], max_overlap: float = 0.6, key=None) -> list[Face]:
    """Drop a face whose box lies mostly (intersection / its own area > max_overlap) inside, or
    mostly covers, a better face's box, "better" by `key(face)` (default: the detector score).
    RetinaFace's IoU-NMS keeps such pairs on profile faces (a second, larger box over the face and
    the background beside it, score 0.5-0.98). That box can outscore the face itself, so the
    pipeline ranks nested boxes by `face_likeness` once they have landmarks."""
    key = key or (lambda f: f.score)
    kept: list[Face] = []
    for f in sorted(faces, key=lambda f: -key(f)):
        if kept:
            boxes = np.stack([k.box for k in kept])
            smaller = np.maximum(np.minimum(box_area(f.box[None]), box_area(boxes)), 1e-6)
            if (box_intersection(f.box, boxes)[0] / smaller > max_overlap).any():
                continue
        kept.append(f)
    return sort_by_size(kept)


def _shift_faces(faces: list[Face], dx: float, dy: float, scale: float = 1.0) -> list[Face]:
    """Map faces found on a padded/rescaled copy back: x_orig = (x + 0.5) / scale - 0.5 - dx."""
    out = []
    for f in faces:
        def m(p):
            p = np.asarray(p, np.float32).reshape(-1, 2)
            return ((p + 0.5) / scale - 0.5 - np.float32([dx, dy])).astype(np.float32)
        out.append(replace(f, box=m(f.box).reshape(4), lm5=m(f.lm5)))
    return out


class DefaultPipeline:
    """detect(image) -> list[Face] (largest first) with box, score, lm5, lm68 and 3DDFA_V2's
    `pose`, `lm68_3d` and `tddfa`, plus `mediapipe_weight` and the box detector's `detector_lm5`;
    landmarks(image, box) -> Face for a given box.

    strategy: "3ddfa" (default: 3DDFA_V2 with TTA; on AFLW2000-3D dev with GT boxes 3.51, while
              blending FaceMesh in gives 3.57 — the blend only helped the plain 3DDFA, 3.70 -> 3.69),
              "blend", "mediapipe" (FaceMesh, 3DDFA where it
              fails), "switch" (FaceMesh when |yaw| <= blend_yaw[0], else 3DDFA).
    blend_yaw: (full, zero) |yaw| in degrees (3DDFA's estimate) where FaceMesh's weight is
               `mediapipe_weight_max` / 0.
    use_mediapipe: None = when the FaceMesh weights (asset mediapipe-facemesh) are found; False =
                   never; True = required (AssetError when missing).
    dense: attach FaceMesh's 468 points as `Face.dense` (when MediaPipe is available and 3DDFA's
           |yaw| < 50°, `geometry.landmarks.yaw_gate`) for the fitter's dense correspondences; the 68
           landmarks are unchanged.
    tta: 3DDFA_V2 with test-time augmentation (`TDDFALandmarker.landmarks_tta`: image + mirror at
         two roi scales; 3.70 -> 3.51 NME on AFLW2000-3D dev with GT boxes) and per-point confidence.
    min_score: detector score threshold (0.9: on AFLW2000-3D profiles RetinaFace emits large
               false boxes beside the face at 0.5-0.9 that would win "largest face"; true faces
               score >= 0.99 almost always, and FaceBoxes/padding retries catch the rest).
    rescue_score, rescue_likeness: RetinaFace's boxes from rescue_score to min_score that are
               larger than every face-like face found are landmarked and kept if their
               `face_likeness` (score x mean TTA landmark confidence) reaches rescue_likeness:
               profiles that RetinaFace scores 0.5-0.9 (see `detect`; docs/detection.md,
               "Detection benchmark"). rescue_score >= min_score turns the rescue off.
    refine_roi: landmark each face a second time on 3DDFA_V2's landmark roi
               (`detect.crop.roi_box_from_landmarks`) instead of the detector box's roi: the box
               detector's size and centre conventions drop out (twice the landmark time). Chosen on
               aflw-lm68's MERL-RAV *train* faces (`benchmarks/detection.py --split train`, found-face
               NME 5.04 -> 4.77; `benchmarks/landmark_choice.py --split train`, protocol boxes,
               3.80 -> 3.75 on the inner points); False: one pass on the detector box's roi.
    detector_weights: RetinaFace's weights (`detect.retinaface.resolve_weights`): "auto" = facerecon's
               fine-tuned ones (weights/retinaface/) when present, else WIDER FACE's; "wider" = the
               original. The pipeline takes boxes and scores from it, never its 5 points.
    """

    name = "default"

    def __init__(
        self,
        strategy: str = "3ddfa",
        blend_yaw: tuple[float, float] = (30.0, 60.0),
        mediapipe_weight_max: float = 0.5,
        use_mediapipe: bool | None = None,
        min_score: float = 0.9,
        tta: bool = True,
        dense: bool = True,
        rescue_score: float = 0.5,
        rescue_likeness: float = RESCUE_LIKENESS,
        refine_roi: bool = True,
        detector_weights: str = "auto",
    ) -> None:
        from .retinaface import RetinaFaceDetector
        from .tddfa import TDDFALandmarker

        if strategy not in ("blend", "3ddfa", "mediapipe", "switch"):
            raise ValueError(f"unknown strategy {strategy!r}")
        self.strategy = strategy
        self.tta = tta
        self.refine_roi = bool(refine_roi)
        self.blend_yaw = blend_yaw
        self.mediapipe_weight_max = mediapipe_weight_max
        # One RetinaFace pass gives the boxes >= min_score and the weaker rescue candidates
        # (greedy NMS never lets a weaker box suppress a stronger one: the strong set is unchanged).
        self.retinaface = RetinaFaceDetector(detector_weights, score_threshold=min(min_score, rescue_score))
        self._faceboxes = None
        self.min_score = min_score
        self.rescue_score = rescue_score
        self.rescue_likeness = rescue_likeness
        self.tddfa = TDDFALandmarker()
        self.mediapipe = None
        self.dense = dense
        if (strategy != "3ddfa" or dense) and use_mediapipe is not False:
            try:
                from .mediapipe import MediaPipeLandmarker

                self.mediapipe = MediaPipeLandmarker()
            except (MissingExtraError, AssetError):  # no FaceMesh weights: 3DDFA alone
                if use_mediapipe:
                    raise

    # -- boxes -------------------------------------------------------------------------------
    @property
    def faceboxes(self):
        if self._faceboxes is None:  # loaded on first fallback only
            from .faceboxes import FaceBoxesDetector

            self._faceboxes = FaceBoxesDetector(score_threshold=self.min_score)
        return self._faceboxes

    def boxes(self, image) -> list[Face]:
        """Detector faces (box, score, lm5) in original pixels, largest first; [] if all retries fail.
        Nested boxes are resolved by detector score here; `detect` resolves them by face-likeness."""
        return suppress_contained(self._boxes(as_pixels(image))[0])

    def _boxes(self, pixels: np.ndarray) -> tuple[list[Face], list[Face]]:
        """(boxes >= min_score, weaker RetinaFace boxes >= rescue_score seen on the way), unsuppressed."""
        def split(faces):
            return ([f for f in faces if f.score >= self.min_score],
                    [f for f in faces if f.score < self.min_score])

        faces, weak = split(self.retinaface.detect(pixels))
        if faces:
            return faces, weak
        faces = self.faceboxes.detect(pixels)
        if faces:
            return faces, weak
        h, w = pixels.shape[:2]
        pad = int(0.25 * max(h, w))
        padded = np.zeros((h + 2 * pad, w + 2 * pad, 3), np.uint8)
        padded[pad:pad + h, pad:pad + w] = pixels
        faces, weak2 = split(_shift_faces(self.retinaface.detect(padded), pad, pad))
        weak += weak2
        if faces:
            return sort_by_size(faces), weak
        if max(h, w) < 400:
            from PIL import Image as PILImage

            big = np.asarray(PILImage.fromarray(pixels).resize((2 * w, 2 * h), PILImage.BILINEAR))
            faces, weak2 = split(_shift_faces(self.retinaface.detect(big), 0, 0, 2.0))
            weak += weak2
            if faces:
                return sort_by_size(faces), weak
        return [], weak

    # -- landmarks ---------------------------------------------------------------------------
    def mediapipe_weight(self, yaw: float) -> float:
        """FaceMesh's share of the blended landmarks for a |yaw| (degrees)."""
        if self.mediapipe is None or self.strategy == "3ddfa":
            return 0.0
        if self.strategy == "mediapipe":
            return 1.0
        lo, hi = self.blend_yaw
        if self.strategy == "switch":
            return float(abs(yaw) <= lo)
        return self.mediapipe_weight_max * float(np.clip((hi - abs(yaw)) / max(hi - lo, 1e-6), 0.0, 1.0))

    def _mesh(self, pixels: np.ndarray, box, yaw: float) -> np.ndarray | None:
        """FaceMesh's points (N, 3) for the face in a detector-like `box`, or None (no MediaPipe,
        a profile the fitter would ignore them on, or FaceMesh found nothing)."""
        if self.mediapipe is None or yaw_gate(yaw) <= 0:
            return None
        m = self.mediapipe.mesh_in_box(pixels, box)
        return None if m is None else m.astype(np.float32)

    def attach_dense(self, image, face: Face, box=None) -> Face:
        """`face` with FaceMesh's points in `dense`, run on `box` (default: face.box, a detector
        box). For faces whose landmarks came from elsewhere, e.g. 3DDFA on a protocol roi box."""
        if not self.dense:
            return face
        b = face.box if box is None else box
        return replace(face, dense=self._mesh(as_pixels(image), b, face.yaw))

    def landmarks(self, image, box, score: float = 1.0, detector_face: Face | None = None) -> Face:
        """68 landmarks for the face in `box` ([x0, y0, x1, y1] pixels, a detector-style box)."""
        pixels = as_pixels(image)
        b = np.asarray(box, np.float64)[:4]
        face = self._tddfa(pixels, b, score, box_is_roi=False)
        if self.refine_roi:  # again on the roi around the first landmarks (3DDFA_V2's tracking roi)
            face = self._tddfa(pixels, roi_box_from_landmarks(face.lm68), score, box_is_roi=True)
        w = self.mediapipe_weight(face.yaw)
        lm68, source, dense = face.lm68, "3ddfa", None
        if w > 0:
            mp = self.mediapipe.landmarks(pixels, box, score)
            if mp is not None:
                lm68 = (w * mp.lm68 + (1 - w) * face.lm68).astype(np.float32)
                source = "mediapipe" if w == 1 else "3ddfa+mediapipe"
                dense = mp.dense
        if dense is None and self.dense:
            dense = self._mesh(pixels, box, face.yaw)
        det = detector_face.source if detector_face is not None else ""
        det_lm5 = detector_face.lm5 if detector_face is not None else face.detector_lm5
        return replace(face, box=np.asarray(box, np.float32)[:4], score=float(score), lm68=lm68,
                       lm5=lm5_from_lm68_contour(lm68), dense=dense,
                       source=f"{det}+{source}" if det else source, mediapipe_weight=w, detector_lm5=det_lm5)

    def _tddfa(self, pixels: np.ndarray, box: np.ndarray, score: float, box_is_roi: bool) -> Face:
        if self.tta:  # mirrored + rescaled passes, averaged; also gives per-point confidence
            return self.tddfa.landmarks_tta(pixels, [box], box_is_roi=box_is_roi, scores=[score])[0]
        return self.tddfa.landmarks(pixels, box, box_is_roi=box_is_roi, score=score)

    def detect(self, image) -> list[Face]:
        """Faces, best first: faces whose `face_likeness` (detector score x mean TTA landmark
        confidence: the passes agree on a real face and scatter on a false box) reaches
        FACE_LIKENESS, largest first (`head_size`: the 3-D landmarks' extent, which a turned head keeps), then
        the others by size x likeness. Nested or overlapping
        boxes (DUPLICATE_OVERLAP) are resolved by face-likeness after landmarking: a false box around a profile face and the
        background beside it can outscore the face itself (0.98 vs 0.92). A weaker RetinaFace box
        (rescue_score..min_score) is landmarked when it is larger than every face-like face found
        (only then could it be the face returned first) and kept when its likeness reaches
        rescue_likeness: profiles that RetinaFace scores 0.5-0.9 (docs/detection.md)."""
        pixels = as_pixels(image)
        strong, weak = self._boxes(pixels)
        faces = suppress_contained([self.landmarks(pixels, f.box, f.score, f) for f in strong],
                                   DUPLICATE_OVERLAP, key=face_likeness)
        top = max((f.size for f in faces if face_likeness(f) >= FACE_LIKENESS), default=0.0)
        # Without TTA there is no landmark confidence to tell a weak face from a false box: no rescue.
        weak = [b for b in suppress_contained(weak) if b.size > top][:RESCUE_MAX] if self.tta else []
        if weak:
            rescued = [f for f in (self.landmarks(pixels, b.box, b.score, b) for b in weak)
                       if face_likeness(f) >= self.rescue_likeness]
            faces = suppress_contained(faces + rescued, DUPLICATE_OVERLAP, key=face_likeness)
        size = head_size if all(f.lm68_3d is not None for f in faces) else (lambda f: f.size)
        return sorted(faces, key=lambda f: _rank(f, size(f)), reverse=True)


class FastPipeline(DefaultPipeline):
    """The default pipeline without test-time augmentation: one 3DDFA_V2 pass per face (~4 ms
    instead of ~20). Its landmarks are less accurate (AFLW2000-3D dev 3.70 vs 3.51 NME), which a
    crop for the regressor tolerates; the fitter, which uses every landmark, keeps the default.
    No FaceMesh points either (only the fitter uses them), and one landmark pass unless
    refine_roi=True is given (the second pass costs ~4 ms of the regress path's 30 ms budget and
    moved the regressor's held-out NME by 0.03 only: 5.03 -> 5.00 on aflw-lm68's MERL-RAV test faces)."""

    def __init__(self, **kw) -> None:
        super().__init__(**{"refine_roi": False, **kw, "tta": False, "dense": False})


def face_likeness(f: Face) -> float:
    """Detector score x mean landmark confidence (1 without confidences): in [0, 1]."""
    conf = float(np.mean(f.lm68_conf)) if f.lm68_conf is not None else 1.0
    return f.score * conf


def head_size(f: Face) -> float:
    """A face's size that turning the head does not change: the RMS distance (pixels) of its 68 3-D
    landmarks (`lm68_3d`: z scaled like x, y) from their centroid. A profile's box is ~30 % narrower
    than the same head's frontal box, so ranking by box size put a smaller frontal face beside it first
    (docs/detection.md)."""
    p = np.asarray(f.lm68_3d, np.float64)
    return float(np.sqrt(((p - p.mean(axis=0)) ** 2).sum(axis=1).mean()))


def _rank(f: Face, size: float) -> tuple[bool, float]:
    like = face_likeness(f)
    return (like >= FACE_LIKENESS, size if like >= FACE_LIKENESS else size * like)
