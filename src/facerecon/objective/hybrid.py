"""The composite terms of Deep3D's hybrid objective, shared by fitting (`fit`) and regressor training
(`regress.train`): each driver calls these same functions with its own weights and reduces the (B,)
values its own way (a fit sums over its faces, training averages over a mini-batch).

    point_term      68 landmarks (Deep3D's per-point weights) + FaceMesh dense points, crop px²
    photo_term      render the decoded faces, skin/face-masked robust photometric loss
    identity_term   identity-perceptual loss: render and photo warped to the face-recognition
                    template by the same 5-point similarity, 1 − cosine of their embeddings
    temporal_term   video: smoothness of pose and expression over the frames

The coefficient priors and the light prior are the plain `terms.coefficient_prior` /
`terms.light_prior`.
"""

from __future__ import annotations

import torch

from ..models.morphable import FaceGeometry, MorphableModel
from ..nets.mobilefacenet import similarity_to_template
from ..render.renderer import MeshRenderer, RenderOutput
from .terms import identity_loss, landmark_loss, photometric_loss, temporal_smoothness


def point_term(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None,
               robust: float | None = None, dense: torch.Tensor | None = None,
               dense_weights: torch.Tensor | None = None, dense_trust: torch.Tensor | None = None,
               w_dense: float = 1.0) -> torch.Tensor:
    """Landmark term in crop px² (weighted mean over the 68) + w_dense × the dense-point term.

    Args:
        pred: (B, 68 [+ N], 2) projected model points: the 68 landmarks, then the N dense points.
        target: (B, 68, 2) landmarks; weights: (68,) or (B, 68) per-point weights (Deep3D's
            pattern × detector confidence), None = equal.
        robust: soft cap (px) on each point's error (`terms.landmark_loss`).
        dense: (B, N, 2) dense targets (FaceMesh points), or None for the landmarks alone.
        dense_weights: (N,) per-point weights (1/σ², mean 1); dense_trust: (B, 1) or (B, N) trust
            in each face's dense points (0 = ignore).

    Returns:
        (B,) px². The dense term is a weighted mean rescaled by the trust's share of the weights,
        so that the trust scales the term instead of cancelling out (a face whose points all have
        trust 0 contributes 0).
    """
    loss = landmark_loss(pred[:, :68], target, weights, image_size=1.0, robust=robust) / 68.0
    if dense is not None and w_dense > 0:
        wd = (dense_weights * dense_trust).expand(pred.shape[0], -1)
        dl = landmark_loss(pred[:, 68:], dense, wd, image_size=1.0, robust=robust) / 68.0
        loss = loss + w_dense * dl * (wd.sum(-1) / dense_weights.sum())
    return loss


def photo_term(renderer: MeshRenderer, geometry: FaceGeometry, light: torch.Tensor, image: torch.Tensor,
               mask: torch.Tensor | None = None) -> tuple[torch.Tensor, RenderOutput]:
    """Render the faces and compare them with the photos over the rendered (× mask) pixels.

    renderer: a MeshRenderer with outputs rgb and mask at the image's size; geometry: decoded
    faces (B); light: (B, 27); image: (B, S, S, 3) in [0, 1]; mask: (B, S, S) face/skin weights
    (None: all rendered pixels). Returns ((B,) `terms.photometric_loss`, the render).
    """
    out = renderer(geometry.vertices_world, geometry.albedo, light, normals=geometry.normals)
    m = out.mask if mask is None else out.mask * mask
    return photometric_loss(out.rgb, image, m), out


def identity_affine(lm68: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """(B, 2, 3) similarity from image pixels to MobileFaceNet's 112×96 template, from the 5 points
    of the (B, 68, 2) target landmarks (times `scale`, e.g. to a render smaller than the crop)."""
    lm5 = MorphableModel.lm5_from_lm68(lm68)
    if scale is not None:
        lm5 = lm5 * scale
    return similarity_to_template(lm5).to(lm68)


def identity_target(encoder, image: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """(B, D) embeddings of the photos (B, 3, S, S) in [0, 1], without gradient."""
    with torch.no_grad():
        return encoder(image, affine)


def identity_term(encoder, render: RenderOutput, image: torch.Tensor, affine: torch.Tensor,
                  target: torch.Tensor) -> torch.Tensor:
    """(B,) identity-perceptual loss: the render composited over the photo (B, 3, S, S) and warped
    by the same `affine` as the photo, so only the face content differs; `target` from
    `identity_target`."""
    comp = render.rgb.permute(0, 3, 1, 2) * render.mask[:, None] + image * (1 - render.mask[:, None])
    return identity_loss(encoder(comp, affine), target)


def temporal_term(rotation: torch.Tensor, translation: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
    """Scalar: smoothness of pose (rotation scaled ×100, radians to ~mm at a face's size) and
    expression (×10) over the batch taken as frames in order (`terms.temporal_smoothness`)."""
    return (temporal_smoothness(torch.cat([rotation * 100, translation], 1))
            + 10 * temporal_smoothness(expression))


__all__ = ["identity_affine", "identity_target", "identity_term", "photo_term", "point_term", "temporal_term"]
