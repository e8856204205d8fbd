"""Fitting: Deep3D's hybrid losses through our renderer, single images, image sets and video.

`Fitter` (fitter.py) runs the schedule of `stages.py` on `FitTargets` (config.py); `sets.py` is the
image-set strategy; the objective's terms are `facerecon.objective`'s.
"""

from .config import FitConfig, FitResult, FitTargets
from .fitter import Fitter

__all__ = ["FitConfig", "FitResult", "FitTargets", "Fitter"]
