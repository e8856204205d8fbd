"""Benchmarks. `aflw2000`: 68-point NME on AFLW2000-3D (3DDFA protocol); `methods`: the registry of
landmark methods (name -> factory) the benchmarks run."""

from .aflw2000 import (
    AFLW2000Set,
    DatasetError,
    Result,
    Summary,
    evaluate,
    load_aflw2000,
    nme,
    score,
    yaw_bins,
)
from .methods import available_methods, get_method, register_method

__all__ = [
    "AFLW2000Set",
    "DatasetError",
    "Result",
    "Summary",
    "available_methods",
    "evaluate",
    "get_method",
    "load_aflw2000",
    "nme",
    "register_method",
    "score",
    "yaw_bins",
]
