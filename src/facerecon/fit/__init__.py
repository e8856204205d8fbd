"""Fitting: Deep3D's hybrid losses through our renderer, single images, image sets and video."""

from .fitter import FitConfig, Fitter, FitResult, FitTargets

__all__ = ["Fitter", "FitConfig", "FitTargets", "FitResult"]
