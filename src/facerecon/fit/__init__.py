"""Fitting: Deep3D's hybrid losses through our renderer, single images, image sets and video."""

from .fitter import FitConfig, FitResult, FitTargets, Fitter

__all__ = ["FitConfig", "FitResult", "FitTargets", "Fitter"]
