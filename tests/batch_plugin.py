"""A cheap method and detector for the batch tests, imported by each batch worker (`plugins`).

The detector finds one face filling the image, except: an all-black image has none, and an image
whose top-left pixel is (1, 2, 3) kills the worker process (a crash in "native code").
The method is the model's mean face, after `delay` seconds."""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from facerecon.detect.base import Face
from facerecon.methods import from_params, register_method

CRASH_PIXEL = (1, 2, 3)


class BoxDetector:
    name = "box"

    def detect(self, image: np.ndarray) -> list[Face]:
        if tuple(int(v) for v in image[0, 0]) == CRASH_PIXEL:
            os._exit(7)
        if image.max() == 0:
            return []
        h, w = image.shape[:2]
        s = min(w, h)
        # Deep3D-like 5 points for a face that fills a square of side s at the image centre.
        rel = np.array([[0.34, 0.42], [0.66, 0.42], [0.5, 0.58], [0.37, 0.75], [0.63, 0.75]], np.float32)
        lm5 = rel * s + np.array([(w - s) / 2, (h - s) / 2], np.float32)
        return [Face(np.array([0, 0, w - 1, h - 1], np.float32), 0.9, lm5, source="box")]


class MeanFace:
    name = "test-meanface"
    needs_landmarks = False
    detector = "fast"

    def __init__(self, context, delay: float = 0.0):
        self.context, self.delay = context, delay

    def reconstruct(self, crops, faces, request):
        time.sleep(self.delay)
        model, cam = self.context.model, self.context.camera
        p = model.zeros(len(crops))
        with torch.no_grad():
            lm = model.project_landmarks(p, cam)
        return from_params(model, cam, p, lm, crops, faces, self.name, {"mean": 0.0})


register_method("test-meanface", MeanFace, "test: the mean face after a delay", overwrite=True)
