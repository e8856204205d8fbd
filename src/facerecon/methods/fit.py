"""Method "fit": analysis-by-synthesis of the morphable model from the landmarks (and the photo).

The default method. Landmark stages from the detector's 68 points (plus FaceMesh's dense points when
the detection has them), then, with `Request.photometric`, the photometric and per-vertex albedo
stages through the differentiable renderer (facerecon.fit).
"""

from __future__ import annotations

from dataclasses import replace

from ..align import Crop
from ..detect.base import Face
from ..fit import FitConfig, FitTargets, Fitter
from ..fit.dense import load_dense_map
from ..fit.targets import build_targets, default_parser
from ..models.frames import bfm_frame
from .base import MethodContext, Request
from .result import Reconstruction, from_params

#: `FitConfig.w_prdl` of the `prdl=True` option (docs/parts.md, PRDL).
PRDL_WEIGHT = 0.3


class FitMethod:
    """Fitting (`facerecon.fit.Fitter`) behind the method protocol.

    config: FitConfig (default `FitConfig()`); keyword overrides of its fields may be given directly
    (e.g. `w_dense=0`). identity_loss: add the MobileFaceNet identity-perceptual loss (needs its
    asset). mask: use the landmark/skin face mask in the photometric loss.
    prdl: add 3DDFA_V3's part re-projection distance loss against a face parser's part maps
    (`FitConfig.w_prdl`, `PRDL_WEIGHT` unless the config sets one); parser: the parser to use (any
    object with `parse(crops) -> label maps`; default `fit.targets.default_parser()`).
    """

    name = "fit"
    needs_landmarks = True
    detector = "default"

    def __init__(self, context: MethodContext, config: FitConfig | None = None, identity_loss: bool = False,
                 mask: bool = True, prdl: bool = False, parser=None, **overrides):
        self.context = context
        self.config = replace(config or FitConfig(), **overrides)
        if prdl and self.config.w_prdl <= 0:
            self.config = replace(self.config, w_prdl=PRDL_WEIGHT)
        # Built now, so a missing parser is reported before any photo is read.
        self._parser = parser if parser is not None or self.config.w_prdl <= 0 else default_parser()
        encoder = None
        if identity_loss:
            from ..nets.mobilefacenet import IdentityEncoder

            encoder = IdentityEncoder().to(context.device).eval()
        self.dense_map = load_dense_map(context.model.name)
        self.mask = mask
        self.fitter = Fitter(context.model, self.config, context.camera, identity_encoder=encoder,
                             dense_map=self.dense_map)

    def config_for(self, request: Request) -> FitConfig:
        """The schedule for a request: an image set or a video shares one identity (and smooths)."""
        if not (request.shared_identity or request.temporal or request.keep_identity):
            return self.config
        return replace(self.config, share_identity=request.shared_identity, w_temporal=request.temporal,
                       keep_identity=request.keep_identity and request.start is not None)

    @property
    def parser(self):
        """The face parser of PRDL's part maps (None when PRDL is off)."""
        if self.config.w_prdl <= 0:
            return None
        if self._parser is None:
            self._parser = default_parser()
        return self._parser

    def targets(self, crops: list[Crop], faces: list[Face], request: Request) -> FitTargets:
        return build_targets(crops, faces, self.context.model.mean_shape, self.config, self.dense_map,
                             photometric=request.photometric, mask=self.mask,
                             bfm_frame=bfm_frame(self.context.model.name), parser=self.parser)

    def run(self, targets: FitTargets, config: FitConfig):
        """Fit with `config` (the method's own Fitter when it is the method's config)."""
        fitter = self.fitter if config is self.config else Fitter(
            self.context.model, config, self.context.camera, self.fitter.encoder, dense_map=self.dense_map)
        return fitter.fit(targets)

    def reconstruct(self, crops: list[Crop], faces: list[Face], request: Request | None = None) -> list[Reconstruction]:
        request = request or Request()
        targets = self.targets(crops, faces, request)
        if request.start is not None:
            targets = replace(targets, init=request.start)
        res = self.run(targets, self.config_for(request))
        return from_params(self.context.model, self.context.camera, res.params, res.lm68, crops, faces, self.name,
                           {f"fit_{k}": v for k, v in res.times.items()})


def make_fit(context: MethodContext, **options) -> FitMethod:
    return FitMethod(context, **options)


__all__ = ["PRDL_WEIGHT", "FitMethod", "make_fit"]
