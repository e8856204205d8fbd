"""Morphable models: `load_model("ict")` (default, MIT) or `load_model("bfm")` (user-supplied BFM09)."""

from .layout import FaceParams, ParamLayout
from .morphable import FaceGeometry, ModelData, MorphableModel


def load_model(name: str = "ict", variant: str | None = None, asset_dir=None, **kw) -> MorphableModel:
    """Build a MorphableModel.

    name: 'ict' (variants 'face' default, 'narrow', 'head') or 'bfm' (Deep3D's BFM09 front face).
    kw: n_identity / n_expression / n_albedo to truncate the bases.
    """
    if name == "ict":
        from .ict import load_ict_data
        return MorphableModel(load_ict_data(variant or "face", asset_dir), **kw)
    if name == "bfm":
        from .bfm import load_bfm_data
        return MorphableModel(load_bfm_data(asset_dir), **kw)
    raise ValueError(f"unknown model '{name}'; choose 'ict' or 'bfm'")


__all__ = ["FaceGeometry", "FaceParams", "ModelData", "MorphableModel", "ParamLayout", "load_model"]
