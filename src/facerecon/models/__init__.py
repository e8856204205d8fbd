"""Morphable models: `load_model("ict")` (default, MIT) or `load_model("bfm")` (user-supplied BFM09)."""

import functools

from .layout import FaceParams, ParamLayout
from .morphable import FaceGeometry, ModelData, MorphableModel


def load_model(name: str = "ict", variant: str | None = None, asset_dir=None, albedo: str | None = None,
               albedo_path=None, **kw) -> MorphableModel:
    """Build a MorphableModel.

    name: 'ict' (variants 'face' default, 'narrow', 'head') or 'bfm' (Deep3D's BFM09 front face).
    albedo: ICT only: None / 'constant' (default: ICT's constant albedo, n_albedo = 0) or 'learned'
        (the learned PCA basis of `models.albedo`, n_albedo = K; `albedo_path` overrides its search).
    kw: n_identity / n_expression / n_albedo to truncate the bases.
    """
    if albedo not in (None, "constant", "learned"):
        raise ValueError(f"albedo must be 'constant' or 'learned', got {albedo!r}")
    if name == "ict":
        from .ict import load_ict_data
        data = load_ict_data(variant or "face", asset_dir)
        if albedo == "learned":
            from .albedo import load_albedo, with_learned_albedo
            data = with_learned_albedo(data, load_albedo(albedo_path))
        return MorphableModel(data, **kw)
    if albedo == "learned":
        raise ValueError("albedo='learned' exists for the ICT model only")
    if name == "bfm":
        from .bfm import load_bfm_data
        return MorphableModel(load_bfm_data(asset_dir), **kw)
    raise ValueError(f"unknown model '{name}'; choose 'ict' or 'bfm'")


def head_model(model: MorphableModel) -> MorphableModel | None:
    """The full-head model of `model`'s family, whose first `model.n_vertices` vertices are `model`'s,
    with the same basis sizes, dtype and device; None for a family without one (BFM).

    ICT: the 'face' and 'narrow' variants are vertex prefixes of the 26,719-vertex head (head, neck,
    mouth socket, eyes, teeth, lashes), decoded by the same identity and expression coefficients."""
    if not model.name.startswith("ict-"):
        return None
    head = _ict_head(model.layout.n_identity, model.layout.n_expression)
    ref = model.mean_shape
    if head.mean_shape.dtype != ref.dtype or head.mean_shape.device != ref.device:
        import copy

        head = copy.deepcopy(head).to(ref)
    return head


@functools.lru_cache(maxsize=2)
def _ict_head(n_identity: int, n_expression: int) -> MorphableModel:
    from .ict import load_ict_data

    return MorphableModel(load_ict_data("head"), n_identity=n_identity, n_expression=n_expression)


__all__ = ["FaceGeometry", "FaceParams", "ModelData", "MorphableModel", "ParamLayout", "head_model", "load_model"]
