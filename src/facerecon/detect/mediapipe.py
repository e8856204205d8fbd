"""MediaPipe backend: BlazeFace boxes + FaceMesh 468 points, mapped to iBUG-68 and 5 points.

Default (backend="torch"): our PyTorch ports of MediaPipe's networks (`nets/facemesh.py`,
`nets/blazeface.py`) inside a reproduction of its static-image FaceMesh graph (`detect/facemesh.py`),
weights read from the Apache-2.0 ``.tflite`` files of asset "mediapipe-facemesh" (found inside an
installed ``mediapipe`` wheel too). No mediapipe package is needed. backend="mediapipe-legacy" runs
mediapipe 0.10's legacy `mp.solutions` API instead, for comparison.

FaceMesh points are not iBUG landmarks: FaceMesh's jaw vertices are fixed on the surface while
iBUG's jaw line is a contour, eyebrows are defined differently, etc. `Mapping468To68` turns the
468 points into 68 with a learned sparse affine map (`data/mediapipe_468_to_68.json`, made by
`scripts/fit_mediapipe_68.py` on AFLW crops with MERL-RAV labels, AFLW2000-3D excluded); its
closest-vertex table is kept as the baseline (`mapping="nearest"`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from .. import assets
from ..errors import FaceReconError, MissingExtraError
from ..geometry.landmarks import lm5_from_lm68_contour
from ..log import native_stderr_to_log
from .base import Face, sort_by_size
from .retinaface import as_pixels

MAPPING_FILE = "mediapipe_468_to_68.json"
ASSET = "mediapipe-facemesh"
BACKENDS = ("torch", "mediapipe-legacy")


def _import_mediapipe():
    try:
        import mediapipe as mp
    except ImportError:
        raise MissingExtraError("mediapipe-legacy", "mediapipe", "the mediapipe-legacy backend") from None
    return mp


@dataclass(frozen=True)
class Mapping468To68:
    """lm68[k] = sum_j weights[k, j] * mesh[index[k, j], :2]  (+ yaw-dependent weights if present).

    index:   (68, K) int FaceMesh vertex ids (padded with repeats; padding weight 0).
    weights: (B, 68, K) float, B yaw bins (B = 1: pose-independent); each row sums to 1
             (an affine combination: translation- and scale-equivariant).
    yaw_centres: (B,) degrees of signed yaw proxy at which each weight set applies (linear blend between).
    nearest: (68,) int closest-vertex baseline.
    """

    index: np.ndarray
    weights: np.ndarray
    yaw_centres: np.ndarray
    nearest: np.ndarray
    name: str = "learned"

    @classmethod
    def load(cls, file: str | Path | None = None, kind: str = "learned") -> Mapping468To68:
        if file is None:
            text = resources.files("facerecon").joinpath("data", MAPPING_FILE).read_text()
        else:
            text = Path(file).read_text()
        d = json.loads(text)
        nearest = np.asarray(d["nearest"], dtype=np.int64)
        if kind == "nearest" or "sparse" not in d:
            return cls(nearest[:, None], np.ones((1, 68, 1)), np.zeros(1), nearest, "nearest")
        sp = d["sparse"]
        return cls(
            np.asarray(sp["index"], dtype=np.int64),
            np.asarray(sp["weights"], dtype=np.float64),
            np.asarray(sp.get("yaw_centres", [0.0]), dtype=np.float64),
            nearest,
            "learned",
        )

    def weights_for(self, yaw: float) -> np.ndarray:
        """(68, K) weights blended linearly between the two nearest yaw centres (clamped at the ends)."""
        c = self.yaw_centres
        if len(c) == 1:
            return self.weights[0]
        yaw = float(np.clip(yaw, c[0], c[-1]))
        i = int(np.clip(np.searchsorted(c, yaw) - 1, 0, len(c) - 2))
        t = (yaw - c[i]) / (c[i + 1] - c[i])
        return (1 - t) * self.weights[i] + t * self.weights[i + 1]

    def __call__(self, mesh: np.ndarray) -> np.ndarray:
        """mesh (468+, 2|3) pixels -> (68, 2) float32 iBUG points."""
        pts = np.asarray(mesh, dtype=np.float64)
        w = self.weights_for(mesh_yaw(pts))
        return np.einsum("kj,kjc->kc", w, pts[self.index, :2]).astype(np.float32)


def mesh_yaw(mesh: np.ndarray) -> float:
    """A yaw proxy from FaceMesh geometry, degrees (sign: + when the nose moves to image-right).

    Uses the horizontal position of the nose tip (vertex 1) between the two cheek extremes
    (234 image-left, 454 image-right): asin(2·t − 1) with t in [0, 1] its relative position.
    Not a calibrated angle; only used to blend pose-specific mapping weights.
    """
    x = np.asarray(mesh)[:, 0]
    left, right, nose = x[234], x[454], x[1]
    span = right - left
    if abs(span) < 1e-6:
        return 0.0
    t = np.clip((nose - left) / span, 0.0, 1.0)
    return float(np.degrees(np.arcsin(2 * t - 1)))


class MediaPipeLandmarker:
    """MediaPipe face detection + FaceMesh.

    detect(image) -> list[Face] (largest first) with box, lm5, lm68 (mapped), dense (468|478, 3).
    landmarks(image, box) -> Face | None: FaceMesh on a square crop around a given box (any
    detector's), None when FaceMesh finds no face there.

    refine_landmarks: adds 10 iris points (478 total) — slower, not used by the 68 mapping;
               mediapipe-legacy backend only.
    mapping: "learned" (default), "nearest", a path to a mapping JSON, or a `Mapping468To68`.
    crop_size: side in pixels of the square crop handed to FaceMesh (upscales small faces; FaceMesh's
               own detector misses faces that fill the frame, hence the `expand` margin).
    model_selection: the legacy backend's `boxes()` detector (1 = full range); the torch backend's
               `boxes()` always uses the short-range detector (the full-range model is not ported).
    backend: "torch" (default; our networks, no mediapipe package) or "mediapipe-legacy".
    asset_dir: folder of the "mediapipe-facemesh" asset (default: the asset search path).
    """

    name = "mediapipe"

    def __init__(
        self,
        refine_landmarks: bool = False,
        min_detection_confidence: float = 0.3,
        mapping: str | Path | Mapping468To68 = "learned",
        crop_size: int = 192,
        expand: float = 2.2,
        model_selection: int = 1,
        backend: str = "torch",
        asset_dir: str | Path | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise FaceReconError(f"unknown MediaPipe backend '{backend}'; known: {', '.join(BACKENDS)}")
        self.backend = backend
        self.refine_landmarks = refine_landmarks
        self.min_detection_confidence = min_detection_confidence
        self.crop_size = crop_size
        self.expand = expand
        if isinstance(mapping, Mapping468To68):
            self.mapping = mapping
        elif mapping in ("learned", "nearest"):
            self.mapping = Mapping468To68.load(kind=str(mapping))
        else:
            self.mapping = Mapping468To68.load(mapping)
        if backend == "torch":
            if refine_landmarks:
                raise FaceReconError("refine_landmarks (iris points) needs backend='mediapipe-legacy'")
            self._build_torch(asset_dir)
        else:
            mp = _import_mediapipe()
            with native_stderr_to_log():  # TFLite / absl start-up chatter
                self._build(mp, refine_landmarks, min_detection_confidence, model_selection)

    def _build_torch(self, asset_dir) -> None:
        from ..nets.blazeface import BlazeFaceShortRange
        from ..nets.facemesh import FaceMeshNet
        from .facemesh import BlazeFace, FaceMeshGraph

        def weights(name: str) -> Path:
            # Verified: the package fallback may hold another mediapipe version's files.
            f = assets.path(ASSET, name, asset_dir)
            assets.verify(ASSET, name, f)
            return f

        det = BlazeFace(BlazeFaceShortRange.from_tflite(weights("face_detection/face_detection_short_range.tflite")))
        net = FaceMeshNet.from_tflite(weights("face_landmark/face_landmark.tflite"))
        self._graph = FaceMeshGraph(det, net, min_detection=self.min_detection_confidence)

    def _build(self, mp, refine_landmarks, min_detection_confidence, model_selection) -> None:
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=refine_landmarks,
            min_detection_confidence=min_detection_confidence,
        )
        self._det = mp.solutions.face_detection.FaceDetection(
            model_selection=model_selection, min_detection_confidence=min_detection_confidence
        )
        # The graphs start their calculators on worker threads, whose start-up messages would land
        # after the caller's capture ends: run each once here, inside it.
        blank = np.zeros((64, 64, 3), np.uint8)
        self._mesh.process(blank)
        self._det.process(blank)

    def close(self) -> None:
        if self.backend == "mediapipe-legacy":
            self._mesh.close()
            self._det.close()

    # -- raw FaceMesh -------------------------------------------------------------------------
    def _normalised_mesh(self, pixels: np.ndarray) -> np.ndarray | None:
        """(N, 3) MediaPipe-normalised points (x / W, y / H, z in units of W) or None."""
        if self.backend == "torch":
            return self._graph(np.ascontiguousarray(pixels))
        with native_stderr_to_log():
            res = self._mesh.process(np.ascontiguousarray(pixels))
        if not res.multi_face_landmarks:
            return None
        return np.array([(p.x, p.y, p.z) for p in res.multi_face_landmarks[0].landmark], dtype=np.float64)

    def mesh(self, pixels: np.ndarray) -> np.ndarray | None:
        """FaceMesh on a whole (H, W, 3) RGB array: (468|478, 3) float32 (x, y pixels; z in pixels,
        relative, smaller = closer to the camera) or None."""
        a = self._normalised_mesh(pixels)
        if a is None:
            return None
        h, w = pixels.shape[:2]
        # Normalised coordinates have pixel edges at 0 and 1; our pixel centres sit at integers.
        return np.stack([a[:, 0] * w - 0.5, a[:, 1] * h - 0.5, a[:, 2] * w], axis=1).astype(np.float32)

    def mesh_in_box(self, pixels: np.ndarray, box) -> np.ndarray | None:
        """FaceMesh on a square crop (side = expand * max(box w, h), zero padded, resized to
        crop_size) around `box`; points mapped back to `pixels` coordinates."""
        x0, y0, x1, y1 = (float(v) for v in list(box)[:4])
        side = max(x1 - x0, y1 - y0) * self.expand
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        s = side / self.crop_size
        # Edge-based origin of the crop in the image (a centre-convention x maps to edge x + 0.5).
        ox, oy = cx - side / 2 + 0.5, cy - side / 2 + 0.5
        crop = PILImage.fromarray(pixels).transform(
            (self.crop_size, self.crop_size), PILImage.AFFINE, (s, 0, ox, 0, s, oy), resample=PILImage.BILINEAR
        )
        m = self.mesh(np.asarray(crop))
        if m is None:
            return None
        out = m.copy()
        out[:, 0] = ox + (m[:, 0] + 0.5) * s - 0.5
        out[:, 1] = oy + (m[:, 1] + 0.5) * s - 0.5
        out[:, 2] = m[:, 2] * s
        return out

    # -- Face boundary ---------------------------------------------------------------------------
    def _face(self, mesh: np.ndarray, score: float, box=None) -> Face:
        lm68 = self.mapping(mesh)
        if box is None:
            lo, hi = mesh[:, :2].min(0), mesh[:, :2].max(0)
            box = np.concatenate([lo, hi])
        return Face(
            box=np.asarray(box, dtype=np.float32)[:4],
            score=float(score),
            lm5=lm5_from_lm68_contour(lm68),
            lm68=lm68,
            dense=mesh.astype(np.float32),
            source=self.name,
        )

    def landmarks(self, image, box, score: float = 1.0) -> Face | None:
        """FaceMesh landmarks for the face in `box` ([x0, y0, x1, y1] pixels); None if not found."""
        pixels = as_pixels(image)
        m = self.mesh_in_box(pixels, box)
        return None if m is None else self._face(m, score, box)

    def boxes(self, image) -> list[tuple[np.ndarray, float]]:
        """BlazeFace boxes: [(box (4,) float32 pixels, score)], unsorted."""
        pixels = as_pixels(image)
        h, w = pixels.shape[:2]
        scale = np.float32([w, h, w, h])
        if self.backend == "torch":
            dets = self._graph.detector(pixels, max(0.5, self.min_detection_confidence))
            return [(np.float32(d.box) * scale - 0.5, d.score) for d in dets]
        with native_stderr_to_log():
            res = self._det.process(pixels)
        out = []
        for d in res.detections or []:
            b = d.location_data.relative_bounding_box
            box = np.float32([b.xmin, b.ymin, b.xmin + b.width, b.ymin + b.height]) * scale - 0.5
            out.append((box, float(d.score[0])))
        return out

    def detect(self, image) -> list[Face]:
        """BlazeFace boxes, FaceMesh in each; falls back to FaceMesh on the whole image."""
        pixels = as_pixels(image)
        faces = []
        for box, score in self.boxes(pixels):
            f = self.landmarks(pixels, box, score)
            if f is not None:
                faces.append(f)
        if not faces:
            m = self.mesh(pixels)
            if m is not None:
                faces.append(self._face(m, 0.5))
        return sort_by_size(faces)
