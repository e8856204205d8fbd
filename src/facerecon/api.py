"""The Python API: `FaceReconstructor(model="ict").reconstruct(image_or_path)`.

Composes exactly the documented flow: load_image → detect → align (224² Deep3D crop) → fit →
decode → (render / export on demand). Image sets share one identity; videos add temporal
smoothing. The CLI is a thin shell over this module; the evaluator's methods come from the
`make_*_method` factories at the end.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .align import Crop, align_face, face_mask
from .detect.base import Face
from .errors import NoFaceError
from .fit import FitConfig, FitResult, FitTargets, Fitter
from .geometry.camera import PerspectiveCamera
from .io.image import Image, load_image
from .models import FaceGeometry, FaceParams, MorphableModel, load_model


@dataclass(frozen=True)
class Reconstruction:
    """One reconstructed face.

    params: FaceParams (batch 1) in the crop camera's frame (translation mm, Euler radians).
    geometry: FaceGeometry (batch 1): model-space and posed vertices (mm), normals, albedo.
    lm68: (68, 2) float32 model landmarks projected into the ORIGINAL image (pixels).
    lm68_crop: (68, 2) the same in crop pixels.
    pose_deg: {'yaw', 'pitch', 'roll'} degrees (yaw > 0: face turned towards image right).
    camera_crop: PerspectiveCamera of the 224² crop; camera: the equivalent camera of the original
        image (the crop is a similarity of it), so `camera.project(vertices_world)` lands on the photo.
    face: the detection it came from; crop: the aligned crop.
    blendshapes: {ARKit name: weight} for ICT models, else None.
    times: seconds per step.
    """

    params: FaceParams
    geometry: FaceGeometry
    lm68: np.ndarray
    lm68_crop: np.ndarray
    pose_deg: dict
    camera_crop: PerspectiveCamera
    camera: PerspectiveCamera
    face: Face
    crop: Crop
    model_name: str
    blendshapes: dict | None = None
    times: dict = field(default_factory=dict)
    source: str = ""


def camera_for_original(crop_camera: PerspectiveCamera, crop: Crop) -> PerspectiveCamera:
    """The camera of the original image equivalent to `crop_camera` on a (rotation-free) crop."""
    M = crop.M
    s = float(M[0, 0])
    if abs(M[0, 1]) > 1e-9 or abs(M[1, 0]) > 1e-9:
        raise ValueError("crop has an in-plane rotation; no single pinhole camera matches it")
    h, w = crop.original_shape
    return PerspectiveCamera(crop_camera.focal / s, (crop_camera.cx - M[0, 2]) / s, (crop_camera.cy - M[1, 2]) / s,
                             int(w), int(h), crop_camera.distance, crop_camera.near)


class FaceReconstructor:
    """Reconstruct 3D faces from photos, photo sets and video frames.

    Args:
        model: 'ict' (default), 'bfm', or a MorphableModel.
        detector: a detector name (see `facerecon.detect.registry`) or an object with
            `detect(image) -> list[Face]`; "auto": "fast" (no landmark TTA) for method "regress",
            "default" for the fitting methods.
        fit_config: FitConfig (schedule, weights); `FitConfig()` by default.
        device: torch device for fitting.
        identity_loss: use the MobileFaceNet identity-perceptual loss when its asset is present.
        mask: use the landmark/skin face mask in the photometric loss.
        method: 'fit' (analysis-by-synthesis from the landmarks), 'regress' (the learned regressor
            alone: milliseconds per face), or 'regress+refine' (regressor, then fitting from it).
        regressor: path of regressor weights (default: the shipped ones) or a built regressor
            (anything with `predict(crops) -> FaceParams`, e.g. `regress.onnx.OnnxRegressor`).
    """

    METHODS = ("fit", "regress", "regress+refine")

    def __init__(self, model: str | MorphableModel = "ict", detector="auto", fit_config: FitConfig | None = None,
                 device: str | torch.device = "cpu", identity_loss: bool = False, mask: bool = True,
                 method: str = "fit", regressor=None):
        if method not in self.METHODS:
            raise ValueError(f"unknown method '{method}'; choose from {self.METHODS}")
        self.method = method
        self._regressor_spec = regressor
        self._regressor = None
        self.device = torch.device(device)
        self.model = (load_model(model) if isinstance(model, str) else model).to(self.device)
        self._detector_spec = detector
        self._detector = None
        self.config = fit_config or FitConfig()
        self.camera = PerspectiveCamera.deep3d(self.config.render_size)
        encoder = None
        if identity_loss:
            from .nets.mobilefacenet import IdentityEncoder
            encoder = IdentityEncoder().to(self.device).eval()
        from .fit.dense import load_dense_map

        self.dense_map = load_dense_map(self.model.name)
        self.fitter = Fitter(self.model, self.config, self.camera, identity_encoder=encoder, dense_map=self.dense_map)
        self.use_mask = mask
        self._lm5_ref = self.model.mean_lm5().detach().cpu().double().numpy()

    # -- detection -----------------------------------------------------------------------------
    @property
    def detector(self):
        if self._detector is None:
            from .detect.registry import resolve_detector

            self._detector = resolve_detector(self._detector_spec, self.method)
        return self._detector

    def detect(self, image: Image) -> list[Face]:
        return self.detector.detect(image.pixels)

    @property
    def regressor(self):
        if self._regressor is None:
            from .regress.predict import load_regressor
            spec = self._regressor_spec
            # A built regressor (torch Regressor, OnnxRegressor: anything with `predict`) is used as is.
            self._regressor = spec if hasattr(spec, "predict") else load_regressor(spec, device=self.device)
        return self._regressor

    # -- core ----------------------------------------------------------------------------------
    def crop(self, image: Image, face: Face) -> Crop:
        """The 224² Deep3D crop of `face` (aligned on its 5 points to the model's own)."""
        return align_face(image.pixels, face.lm5, self._lm5_ref, camera=self.camera, lm68=face.lm68,
                          source=image.name)

    def _targets(self, crops: list[Crop], faces: list[Face], photometric: bool) -> FitTargets:
        dt = self.model.mean_shape.dtype
        missing = [c.source or "image" for c in crops if c.lm68 is None]
        if missing and self.method != "regress":
            raise ValueError(f"{missing[0]}: the detector gave no 68 landmarks, which fitting needs; "
                             "use a landmark detector (e.g. 'default') or method='regress'")
        if missing:  # the regressor alone needs only the crop: landmark targets are unused
            lm = torch.zeros(len(crops), 68, 2, dtype=dt, device=self.device)
            return FitTargets(lm68=lm, lm_weights=torch.zeros(len(crops), 68, dtype=dt, device=self.device))
        lm = torch.tensor(np.stack([c.lm68 for c in crops]), dtype=dt, device=self.device)
        conf = None
        if all(f.lm68_conf is not None for f in faces):
            conf = torch.tensor(np.stack([f.lm68_conf for f in faces]), dtype=dt, device=self.device)
        dense, dense_w = self._dense_targets(crops, faces)
        lm3d = None
        if self.config.pose_from_3d and all("lm68_3d" in f.extra for f in faces):  # 3DDFA_V2's 3-D points
            pts = []
            for c, f in zip(crops, faces):
                p = np.asarray(f.extra["lm68_3d"], np.float64)
                pts.append(np.concatenate([c.original_to_crop(p[:, :2]), p[:, 2:] * c.scale], 1))
            lm3d = torch.tensor(np.stack(pts), dtype=dt, device=self.device)
        img = mask = None
        if photometric:
            img = torch.tensor(np.stack([c.image for c in crops]), dtype=dt, device=self.device) / 255.0
            if self.use_mask:
                mask = torch.tensor(np.stack([face_mask(c.image, c.lm68) for c in crops]), dtype=dt,
                                    device=self.device)
        return FitTargets(lm68=lm, lm_weights=conf, image=img, mask=mask, dense=dense, dense_weights=dense_w,
                          lm68_3d=lm3d)

    def _dense_targets(self, crops: list[Crop], faces: list[Face]):
        """FaceMesh points (B, N, 2) in crop pixels and their per-face trust (B, 1) from the head's
        yaw, or (None, None) when no face has them or the model has no dense map."""
        N = 0 if self.dense_map is None else self.dense_map.n_points
        if not N or all(f.dense is None or len(f.dense) < N for f in faces):
            return None, None
        from .fit.dense import yaw_gate

        dt = self.model.mean_shape.dtype
        pts = np.zeros((len(faces), N, 2))
        gate = np.zeros((len(faces), 1))
        for i, (c, f) in enumerate(zip(crops, faces)):
            if f.dense is not None and len(f.dense) >= N:
                pts[i] = c.original_to_crop(np.asarray(f.dense)[:N, :2])
                gate[i] = yaw_gate(float(f.extra.get("yaw", 0.0)))
        return (torch.tensor(pts, dtype=dt, device=self.device), torch.tensor(gate, dtype=dt, device=self.device))

    def _finish(self, res, crops, faces, images, times) -> list[Reconstruction]:
        out = []
        with torch.no_grad():
            geo_all = self.model(res.params)
        for i, (crop, face, image) in enumerate(zip(crops, faces, images)):
            p = res.params[i]
            geo = FaceGeometry(*(t[i:i + 1] for t in (geo_all.vertices, geo_all.vertices_world,
                                                        geo_all.normals, geo_all.albedo)))
            lm_crop = res.lm68[i].detach().cpu().double().numpy()
            lm_orig = crop.crop_to_original(lm_crop).astype(np.float32)
            pitch, yaw, roll = (math.degrees(float(a)) for a in p.rotation[0])
            bs = None
            if self.model.exp_prior == "unit_interval" and self.model.expression_names:
                bs = {n: float(w) for n, w in zip(self.model.expression_names, p.expression[0])}
            out.append(Reconstruction(
                params=p, geometry=geo, lm68=lm_orig, lm68_crop=lm_crop.astype(np.float32),
                pose_deg={"yaw": yaw, "pitch": pitch, "roll": roll}, camera_crop=self.camera,
                camera=camera_for_original(self.camera, crop), face=face, crop=crop, model_name=self.model.name,
                blendshapes=bs, times=dict(times), source=image.name))
        return out

    def reconstruct(self, image, max_faces: int = 1, photometric: bool = True) -> list[Reconstruction]:
        """Reconstruct up to `max_faces` faces (largest first) of one image (path, array, PIL, bytes).

        Raises InputImageError for an unreadable image and NoFaceError when no face is found.
        """
        img = load_image(image)
        t0 = time.perf_counter()
        faces = self.detect(img)[:max_faces]
        if not faces:
            raise NoFaceError(f"{img.name}: no face found")
        t_det = time.perf_counter() - t0
        return self.reconstruct_faces([img] * len(faces), faces, photometric=photometric,
                                      extra_times={"detect": t_det})

    def reconstruct_faces(self, images: list[Image], faces: list[Face], photometric: bool = True,
                          config: FitConfig | None = None, extra_times: dict | None = None) -> list[Reconstruction]:
        """Fit given detections (one per image, batched together)."""
        t0 = time.perf_counter()
        crops = [self.crop(im, f) for im, f in zip(images, faces)]
        t_align = time.perf_counter() - t0
        cfg = config or self.config
        targets = self._targets(crops, faces, photometric)
        if self.method != "fit":
            t1 = time.perf_counter()
            init = self.regressor.predict(np.stack([c.image for c in crops]))
            init = init.map(lambda t: t.to(device=self.device, dtype=self.model.mean_shape.dtype))
            if cfg.share_identity:
                from .regress.predict import aggregate_identity
                init = aggregate_identity(init)
            extra_times = {**(extra_times or {}), "regress": time.perf_counter() - t1}
            if self.method == "regress":
                # Keep the regressed parameters: no optimisation, only the landmark projection.
                from .regress.predict import project_landmarks

                with torch.no_grad():
                    lm = project_landmarks(self.model, init, self.camera)
                return self._finish(FitResult(init, lm), crops, faces, images,
                                    {**extra_times, "align": t_align})
            targets = replace(targets, init=init)
            full = {"n_identity": self.model.layout.n_identity}  # keep every regressed identity mode
            cfg = FitConfig(**{**cfg.__dict__, **full, "steps_shape": cfg.steps_shape // 2})
        fitter = (self.fitter if cfg is self.config
                  else Fitter(self.model, cfg, self.camera, self.fitter.encoder, dense_map=self.dense_map))
        res = fitter.fit(targets)
        times = {**(extra_times or {}), "align": t_align, **{f"fit_{k}": v for k, v in res.times.items()}}
        return self._finish(res, crops, faces, images, times)

    def reconstruct_set(self, images, photometric: bool = True) -> list[Reconstruction]:
        """Several photos of ONE person -> one shared identity (and albedo), per-photo expression,
        pose and light. Images without a face are skipped (reported in `self.last_skipped`)."""
        return self._multi(images, photometric, share=True, temporal=0.0)

    def reconstruct_video(self, frames, photometric: bool = False, smoothing: float = 1.0) -> list[Reconstruction]:
        """Frames (in order) of one person -> shared identity + temporally smoothed pose/expression.
        Frames where detection fails reuse the previous frame's detection."""
        return self._multi(frames, photometric, share=True, temporal=smoothing, carry=True)

    def _multi(self, items, photometric, share, temporal, carry=False):
        imgs, faces, self.last_skipped = [], [], []
        prev = None
        for it in items:
            img = load_image(it)
            found = self.detect(img)
            if not found and carry and prev is not None:
                found = [prev]
            if not found:
                self.last_skipped.append(img.name)
                continue
            prev = found[0]
            imgs.append(img)
            faces.append(found[0])
        if not faces:
            raise NoFaceError("no face found in any input")
        cfg = FitConfig(**{**self.config.__dict__, "share_identity": share, "w_temporal": temporal})
        return self.reconstruct_faces(imgs, faces, photometric=photometric, config=cfg)


def _eval_method(rec: FaceReconstructor, photometric: bool):
    """method(image, box|None) -> (68, 2) for the AFLW2000-3D evaluator. A given box is the
    protocol's 3DDFA roi box: 3DDFA_V2 runs on it directly as 3DDFA does, with test-time
    augmentation when the method's own detector uses it (not for "fast")."""
    from .detect.crop import bbox_from_roi_box
    from .detect.tddfa import TDDFALandmarker

    state = {}

    def method(image: np.ndarray, box) -> np.ndarray | None:
        img = load_image(image)
        method.last_input = None
        if box is None:
            faces = rec.detect(img)
            if not faces:
                return None
            face = faces[0]
        else:
            if "tddfa" not in state:
                pipe = rec.detector
                state["tddfa"] = getattr(pipe, "tddfa", None) or TDDFALandmarker()
                state["tta"] = getattr(pipe, "tta", True)
            tddfa = state["tddfa"]
            face = (tddfa.landmarks_tta(img.pixels, [box], box_is_roi=True)[0] if state["tta"]
                    else tddfa.landmarks(img.pixels, box, box_is_roi=True))
            if rec.method != "regress" and hasattr(rec.detector, "attach_dense"):
                face = rec.detector.attach_dense(img.pixels, face, bbox_from_roi_box(box))
        method.last_input = face.lm68  # scored beside the result by the evaluator
        return rec.reconstruct_faces([img], [face], photometric=photometric)[0].lm68

    method.reconstructor = rec
    method.last_input = None
    return method


def make_fit_method(photometric: bool = False, model: str = "ict", **fit_options):
    """Evaluator factory: fitting (landmark stages; `photometric=True` adds the photo stage)."""
    return _eval_method(FaceReconstructor(model, fit_config=FitConfig(**fit_options)), photometric)


def make_regress_method(model: str = "ict", regressor=None, refine: bool = False):
    """Evaluator factory: the learned regressor (`refine=True`: regressor, then fitting)."""
    method = "regress+refine" if refine else "regress"
    return _eval_method(FaceReconstructor(model, method=method, regressor=regressor), refine)


def make_regress_refine_method(model: str = "ict", regressor=None):
    """Evaluator factory: the regressor, then fitting (landmark + photometric) from it."""
    return make_regress_method(model, regressor, refine=True)


def make_fit_photo_method(model: str = "ict", **fit_options):
    """Evaluator factory: the full fit, photometric stage included."""
    return make_fit_method(True, model, **fit_options)
