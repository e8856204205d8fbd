"""dlib backend: HOG (or CNN) face detector + the 68-point shape predictor (iBUG order).

Needs the optional extra `dlib` (`dlib-bin` wheels + `face-recognition-models`, which carries
`shape_predictor_68_face_landmarks.dat` and `mmod_human_face_detector.dat`); both are imported on
use and nothing is downloaded. The 68-point model is trained on iBUG-300W, so its points follow
the same definition as the benchmark's jaw contour for near-frontal faces; HOG finds faces up to
roughly +-40 degrees yaw.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ..errors import MissingExtraError
from ..geometry.landmarks import lm5_from_lm68_contour
from .base import Face, sort_by_size
from .retinaface import as_pixels


def _import_dlib():
    try:
        import dlib
    except ImportError:
        raise MissingExtraError("dlib", "dlib-bin", "the dlib backend") from None
    # face_recognition_models' __init__ imports pkg_resources, gone from recent setuptools: find the
    # package's model folder without importing it.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("dlib", "face-recognition-models", "the dlib backend's model files")
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    return dlib, models


class DlibLandmarker:
    """dlib detector + 68-point predictor.

    detector: "hog" (fast, frontal) or "cnn" (MMOD CNN, slower, more poses).
    upsample: image pyramid upsampling steps for the detector (None: 1 for images whose longer
              side is under 800 px, else 0) — HOG's smallest face is about 80 px.
    detect(image) -> list[Face] largest first; landmarks(image, box) -> Face for any given box.
    """

    name = "dlib"

    def __init__(self, detector: str = "hog", upsample: int | None = None) -> None:
        dlib, models = _import_dlib()
        self._dlib = dlib
        self.kind = detector
        if detector == "hog":
            self._det = dlib.get_frontal_face_detector()
        elif detector == "cnn":
            self._det = dlib.cnn_face_detection_model_v1(str(models / "mmod_human_face_detector.dat"))
        else:
            raise ValueError(f"dlib detector must be 'hog' or 'cnn', got {detector!r}")
        self._sp = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))
        self.upsample = upsample

    def boxes(self, image) -> list[tuple[np.ndarray, float]]:
        """[(box (4,) float32 [x0, y0, x1, y1] pixels, score)]: HOG scores are SVM margins, mapped
        to (0, 1) with a logistic so they compare with other backends' scores loosely."""
        pixels = as_pixels(image)
        up = self.upsample if self.upsample is not None else int(max(pixels.shape[:2]) < 800)
        out = []
        if self.kind == "hog":
            rects, scores, _ = self._det.run(pixels, up, 0.0)
            for r, s in zip(rects, scores):
                out.append((np.float32([r.left(), r.top(), r.right(), r.bottom()]), float(1 / (1 + np.exp(-s)))))
        else:
            for d in self._det(pixels, up):
                r = d.rect
                out.append((np.float32([r.left(), r.top(), r.right(), r.bottom()]), float(d.confidence)))
        return out

    def landmarks(self, image, box, score: float = 1.0) -> Face:
        """68 iBUG points (pixels) for the face in `box` [x0, y0, x1, y1]."""
        pixels = as_pixels(image)
        x0, y0, x1, y1 = (round(float(v)) for v in list(box)[:4])
        shape = self._sp(pixels, self._dlib.rectangle(x0, y0, x1, y1))
        lm68 = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
        return Face(
            box=np.asarray(box, dtype=np.float32)[:4], score=float(score), lm5=lm5_from_lm68_contour(lm68),
            lm68=lm68, source=self.name,
        )

    def detect(self, image) -> list[Face]:
        pixels = as_pixels(image)
        return sort_by_size([self.landmarks(pixels, b, s) for b, s in self.boxes(pixels)])
