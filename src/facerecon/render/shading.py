"""Deep3D's spherical-harmonics lighting (9 bands = order 2, one set of coefficients per colour).

Irradiance at a surface with unit normal n = (nx, ny, nz) is ``E_c(n) = Y(n) · γ_c`` with Deep3D's
basis (constants folded in, including its sign flips on the odd terms):

    Y = [a0 c0,  -a1 c1 ny,  a1 c1 nz,  -a1 c1 nx,  a2 c2 nx ny,  -a2 c2 ny nz,
         a2 c2 0.5/√3 (3 nz² - 1),  -a2 c2 nx nz,  a2 c2 0.5 (nx² - ny²)]

with a0 = π, a1 = 2π/√3, a2 = 2π/√8, c0 = 1/√(4π), c1 = √3/√(4π), c2 = 3√5/√(12π), and the
colour is ``albedo · E``. The coefficients γ are (B, 27) laid out as Deep3D's: reshape to (B, 3, 9)
= 9 for red, then 9 for green, then 9 for blue. Deep3D adds 0.8 to the constant coefficient of each
channel (`init_lit`) so that γ = 0 means a uniform, slightly dimmed white light (E = 0.8·a0·c0 =
0.4·√π ≈ 0.709).
"""

from __future__ import annotations

import math

import torch

A0 = math.pi
A1 = 2.0 * math.pi / math.sqrt(3.0)
A2 = 2.0 * math.pi / math.sqrt(8.0)
C0 = 1.0 / math.sqrt(4.0 * math.pi)
C1 = math.sqrt(3.0) / math.sqrt(4.0 * math.pi)
C2 = 3.0 * math.sqrt(5.0) / math.sqrt(12.0 * math.pi)

#: Deep3D's default light offset, added to coefficient 0 of each colour channel.
DEEP3D_INIT_LIT = 0.8


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """Deep3D's 9 SH basis values (constants included) for unit normals.

    Args:
        normals: (..., 3) unit normals (nx, ny, nz), in the space the light is expressed in
            (Deep3D: camera/world space after the pose rotation).

    Returns:
        (..., 9) basis values, same dtype and device; differentiable w.r.t. `normals`.
    """
    nx, ny, nz = normals.unbind(-1)
    k1, k2 = A1 * C1, A2 * C2
    return torch.stack([
        torch.full_like(nx, A0 * C0),
        -k1 * ny,
        k1 * nz,
        -k1 * nx,
        k2 * nx * ny,
        -k2 * ny * nz,
        k2 * 0.5 / math.sqrt(3.0) * (3.0 * nz * nz - 1.0),
        -k2 * nx * nz,
        k2 * 0.5 * (nx * nx - ny * ny),
    ], dim=-1)


def sh_coefficients(gamma: torch.Tensor, init_lit: float | torch.Tensor = DEEP3D_INIT_LIT) -> torch.Tensor:
    """Deep3D's flat light vector -> per-channel coefficients with the light offset applied.

    Args:
        gamma: (B, 27) = (B, 3 channels × 9 coefficients), channel-major.
        init_lit: added to every channel's coefficients: a float for coefficient 0 only (Deep3D:
            0.8), or a (9,) tensor added to all nine.

    Returns:
        (B, 3, 9) coefficients.
    """
    g = sh_channels(gamma)
    if isinstance(init_lit, torch.Tensor):
        return g + init_lit.to(g).reshape(1, 1, 9)
    if init_lit != 0:
        offset = torch.zeros(9, dtype=g.dtype, device=g.device)
        offset[0] = init_lit
        g = g + offset
    return g


def sh_channels(gamma: torch.Tensor) -> torch.Tensor:
    """(B, 27) flat light vector -> (B, 3, 9) per-channel coefficients (a view; no offset applied)."""
    return gamma.reshape(gamma.shape[0], 3, 9)


def sh_flatten(coefficients: torch.Tensor) -> torch.Tensor:
    """(B, 3, 9) per-channel coefficients -> (B, 27) flat light vector, the inverse of `sh_channels`."""
    return coefficients.reshape(coefficients.shape[0], 27)


def solve_sh_light(colors: torch.Tensor, normals: torch.Tensor, albedo: torch.Tensor, weights: torch.Tensor,
                   init_lit: float = DEEP3D_INIT_LIT, ridge: float = 1e-3) -> torch.Tensor:
    """Closed-form SH light: the γ that best explains observed colours under `sh_shade`.

    Per colour channel c, weighted ridge least squares over the samples (e.g. vertices):
    ``min_γc Σ_i w_i (albedo_ic · Y(n_i) · (γc + init_lit·e0) − colors_ic)² + ridge ‖γc + init_lit·e0‖²``,
    solved by the 9×9 normal equations; the light offset is then removed so that the result is
    a Deep3D light vector (shading it with `init_lit` reproduces the fit).

    Args:
        colors: (B, N, 3) observed colours; normals: (B, N, 3) unit normals (light space);
        albedo: (B, N, 3) reflectance; weights: (B, N) non-negative sample weights (0 ignores a sample).
        init_lit: the shader's offset on coefficient 0 (see `sh_coefficients`); ridge: Tikhonov
            term keeping the solve well-posed when few normals are seen.

    Returns:
        (B, 27) coefficients, channel-major.
    """
    Y = sh_basis(normals)  # (B, N, 9)
    sw = weights.sqrt()
    out = []
    for c in range(3):
        A = Y * albedo[..., c:c + 1] * sw[..., None]
        rhs = colors[..., c] * sw
        AtA = A.transpose(1, 2) @ A + ridge * torch.eye(9, dtype=A.dtype, device=A.device)
        out.append(torch.linalg.solve(AtA, (A.transpose(1, 2) @ rhs[..., None]))[..., 0])
    g = torch.stack(out, 1)  # (B, 3, 9) absolute coefficients
    g[..., 0] -= init_lit
    return sh_flatten(g)


def sh_shade(albedo: torch.Tensor, normals: torch.Tensor, gamma: torch.Tensor,
             init_lit: float | torch.Tensor = DEEP3D_INIT_LIT) -> torch.Tensor:
    """Lambertian SH shading, Deep3D's ``compute_color``: ``albedo · (Y(n) @ γ)`` per channel.

    Args:
        albedo: (B, ..., 3) reflectance in [0, 1] (per vertex (B, V, 3) or per pixel (B, H, W, 3));
            a tensor without the batch dimension broadcasts.
        normals: (B, ..., 3) unit normals matching `albedo` (not renormalised here).
        gamma: (B, 27) SH coefficients, channel-major (see module doc).
        init_lit: light offset, see `sh_coefficients`.

    Returns:
        (B, ..., 3) colour (not clamped). Differentiable w.r.t. all three tensors.
    """
    coef = sh_coefficients(gamma, init_lit)  # (B, 3, 9)
    Y = sh_basis(normals)  # (B, ..., 9)
    lead = Y.shape[1:-1]
    # matmul broadcasts a batch-1 normal set over B light vectors (and vice versa).
    irr = torch.matmul(Y.reshape(Y.shape[0], -1, 9), coef.transpose(1, 2))  # (B, P, 3)
    return albedo * irr.reshape(irr.shape[0], *lead, 3)


def ambient_light(batch: int, dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """(B, 27) zero coefficients: only the shader's ambient `init_lit` (a method without a light estimate)."""
    return sh_flatten(torch.zeros(batch, 3, 9, dtype=dtype, device=device))


def key_light(batch: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None, *,
              front: float = 0.35, vertical: float = 0.1) -> torch.Tensor:
    """A soft frontal key light, the same white light for every face (shows geometry only).

    Sets, in every colour channel, coefficient 2 (the ``n_z`` term: light from the camera's side)
    to `front` and coefficient 1 (the ``-n_y`` term) to `vertical`; all other coefficients are 0
    (the shader still adds its ambient `init_lit`).

    Args:
        batch: B, number of light vectors.
        dtype, device: of the result.
        front, vertical: the two coefficients (0.35 and 0.1: the grey geometry view of the outputs).

    Returns:
        (B, 27) SH coefficients, channel-major (see module doc).
    """
    light = torch.zeros(batch, 3, 9, dtype=dtype, device=device)
    light[:, :, 2] = front
    light[:, :, 1] = vertical
    return sh_flatten(light)
