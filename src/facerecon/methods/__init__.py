"""Reconstruction methods behind one protocol (`base.Method`), found by name.

Built in: "fit" (analysis-by-synthesis, the default), "regress" (the learned regressor alone) and
"regress+refine" (regressor, then fitting). Adding a method takes one module with a factory and one
`register_method` line (here, in the new module, or an entry point in the "facerecon.methods"
group); the API, the CLI and the evaluator reach it by name.
"""

from .base import (
    METHODS,
    Method,
    MethodContext,
    Request,
    available_methods,
    build_method,
    check_landmarks,
    register_method,
)
from .result import Reconstruction, Topology, camera_for_original, from_params

register_method("fit", "facerecon.methods.fit:make_fit",
                "analysis-by-synthesis fit of the model to the landmarks (+ the photo's pixels)")
register_method("regress", "facerecon.methods.regress:make_regress",
                "the learned coefficient regressor alone (milliseconds per face)")
register_method("regress+refine", "facerecon.methods.regress:make_regress_refine",
                "the regressor, then fitting started from its parameters")
register_method("vrn", "facerecon.methods.vrn:make_vrn",
                "VRN: volumetric regression, marching cubes; landmarks/pose from registering the model")
register_method("prnet", "facerecon.methods.prnet:make_prnet",
                "PRNet's UV position-map network: a dense mesh read from a map, no model parameters")

__all__ = ["METHODS", "Method", "MethodContext", "Reconstruction", "Request", "Topology", "available_methods",
           "build_method", "camera_for_original", "check_landmarks", "from_params", "register_method"]
