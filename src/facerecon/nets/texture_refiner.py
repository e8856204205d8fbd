"""The graph-convolutional texture decoder and refiner of Lin et al. (CVPR 2020), sized for a CPU.

Both work on a COMA mesh hierarchy (`geometry.hierarchy.MeshHierarchy`, levels 0..L, level 0 = the
model's face mesh) with Chebyshev convolutions (`nets.graph.ChebConv`):

- `TextureDecoder`: image features (B, F) -> FC to the coarsest level -> [ChebConv, ELU, up-sample]
  per level -> (B, V0, 3) coarse per-vertex albedo, a residual on the basis mean (so an untrained
  decoder gives the mean texture).
- `TextureRefiner`: per-vertex inputs (B, V0, C_in) -> a small ChebConv encoder-decoder over levels
  0..2 with skip connections -> (B, V0, 4): a colour correction (3) and a gate (1).
- `GCNTexture` = decoder + refiner + the combine step:

      albedo = clamp((1 - g) * coarse + g * photo + 0.25 * tanh(delta), 0, 1),  g = sigmoid(gate) * seen

  where `photo` is the de-lit photo colour at each vertex (its mirror vertex's where only that one is
  seen) and `seen` is 1 where either side was seen: the refiner decides per vertex how much of the
  photo to keep and corrects what remains; unseen vertices take the coarse texture plus the correction.

The refiner's inputs (`REFINER_INPUTS`, channel order): de-lit photo colour (3), seen (1), the mirror
vertex's de-lit colour (3), its seen flag (1), the decoder's coarse colour (3).

The hierarchy's matrices travel inside the weights file (`GCNTexture.hierarchy_arrays`), so loading
does not rebuild the hierarchy. `load_texture_refiner` finds the file like the other weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .graph import ChebConv, Resample

#: names of the refiner's per-vertex input channels, in order (11 in all)
REFINER_INPUTS = ("photo_r", "photo_g", "photo_b", "seen", "mirror_r", "mirror_g", "mirror_b", "mirror_seen",
                  "coarse_r", "coarse_g", "coarse_b")

DEFAULT_FILE = "texture_refiner/refiner.pt"
ENV = "FACERECON_TEXTURE_REFINER"


def _csr_to_arrays(m) -> dict:
    import scipy.sparse as sp

    c = sp.coo_matrix(m)
    return {"row": c.row.astype(np.int32), "col": c.col.astype(np.int32), "val": c.data.astype(np.float32),
            "shape": np.array(c.shape, np.int64)}


def _arrays_to_sparse(d: dict) -> torch.Tensor:
    idx = torch.stack([torch.as_tensor(np.asarray(d["row"]), dtype=torch.int64),
                       torch.as_tensor(np.asarray(d["col"]), dtype=torch.int64)])
    shape = tuple(int(s) for s in np.asarray(d["shape"]))
    return torch.sparse_coo_tensor(idx, torch.as_tensor(np.asarray(d["val"]), dtype=torch.float32), shape,
                                   check_invariants=True).coalesce()


def hierarchy_arrays(hierarchy) -> dict:
    """The matrices a `GCNTexture` needs from a `MeshHierarchy`, as plain arrays (saved with the
    weights): {"laplacians": [...], "down": [...], "up": [...]} of COO dicts (row, col, val, shape)."""
    return {"laplacians": [_csr_to_arrays(m) for m in hierarchy.laplacians()],
            "down": [_csr_to_arrays(m) for m in hierarchy.down],
            "up": [_csr_to_arrays(m) for m in hierarchy.up]}


def _cheb(conv: ChebConv, x: torch.Tensor) -> torch.Tensor:
    """`conv` on vertex-major features x (V, B, C_in) -> (V, B, C_out): the same sum as
    `ChebConv.forward`, without its per-term batch transposes (the sparse product reads x as is)."""
    V, B, _ = x.shape
    L = conv.laplacian.to(x.dtype)

    def lap(t):
        return torch.sparse.mm(L, t.reshape(V, -1)).view(V, B, -1)

    tx0 = x
    out = tx0 @ conv.weight[0]
    if conv.K > 1:
        tx1 = lap(x)
        out = out + tx1 @ conv.weight[1]
        for k in range(2, conv.K):
            tx2 = 2.0 * lap(tx1) - tx0
            out = out + tx2 @ conv.weight[k]
            tx0, tx1 = tx1, tx2
    return out if conv.bias is None else out + conv.bias


def _resample(r: Resample, x: torch.Tensor) -> torch.Tensor:
    """`r` on vertex-major features (V_in, B, C) -> (V_out, B, C)."""
    V, B, C = x.shape
    return torch.sparse.mm(r.matrix.to(x.dtype), x.reshape(V, B * C)).view(-1, B, C)


class TextureDecoder(nn.Module):
    """Image features -> coarse per-vertex albedo on level 0.

    Args:
        feature_dim: F. laplacians / up: per-level torch sparse matrices (`hierarchy_arrays` decoded),
        up[k]: (n_k, n_{k+1}). mean_albedo: (V0, 3) the residual's base. channels: per level 0..L.
        K: Chebyshev order.

    Shape: (B, F) -> (B, V0, 3).
    """

    def __init__(self, feature_dim: int, laplacians, up, mean_albedo: torch.Tensor, channels=(16, 16, 16, 32, 32),
                 K: int = 6):
        super().__init__()
        L = len(laplacians) - 1
        if len(channels) != L + 1:
            raise ValueError(f"channels needs {L + 1} entries (one per level), got {len(channels)}")
        self.sizes = [int(lap.shape[0]) for lap in laplacians]
        self.c_top = channels[L]
        self.fc = nn.Linear(feature_dim, self.sizes[L] * channels[L])
        self.convs = nn.ModuleList()
        self.ups = nn.ModuleList()
        for k in range(L, 0, -1):  # level k conv, then up to k-1
            self.convs.append(ChebConv(channels[k], channels[k - 1], laplacians[k], K))
            self.ups.append(Resample(up[k - 1]))
        self.out = ChebConv(channels[0], 3, laplacians[0], K)
        nn.init.zeros_(self.out.weight)  # untrained: exactly the mean texture
        self.register_buffer("mean_albedo", mean_albedo.float().reshape(-1, 3).clone())
        self.act = nn.ELU()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.fc(features).view(features.shape[0], self.sizes[-1], self.c_top).transpose(0, 1).contiguous()
        for conv, up in zip(self.convs, self.ups):
            x = _resample(up, self.act(_cheb(conv, x)))
        return self.mean_albedo.to(x) + _cheb(self.out, x).transpose(0, 1)


class TextureRefiner(nn.Module):
    """Per-vertex inputs on level 0 -> (correction (3), gate (1)) on level 0: a ChebConv U-net over
    levels 0, 1, 2 (down-sampling by selection, up-sampling barycentric, skips by concatenation).

    Shape: (B, V0, in_channels) -> (B, V0, 4).
    """

    def __init__(self, laplacians, down, up, in_channels: int = len(REFINER_INPUTS), channels=(16, 32, 32),
                 K: int = 6):
        super().__init__()
        c0, c1, c2 = channels
        self.e0 = ChebConv(in_channels, c0, laplacians[0], K)
        self.d01 = Resample(down[0])
        self.e1 = ChebConv(c0, c1, laplacians[1], K)
        self.d12 = Resample(down[1])
        self.e2 = ChebConv(c1, c2, laplacians[2], K)
        self.u21 = Resample(up[1])
        self.m1 = ChebConv(c2 + c1, c0, laplacians[1], K)
        self.u10 = Resample(up[0])
        self.m0 = ChebConv(c0 + c0, c0, laplacians[0], K)
        self.out = ChebConv(c0, 4, laplacians[0], K)
        nn.init.zeros_(self.out.weight)  # untrained: gate 0.5 on seen vertices, no correction
        self.act = nn.ELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(0, 1).contiguous()  # vertex-major inside (see `_cheb`)
        a0 = self.act(_cheb(self.e0, x))
        a1 = self.act(_cheb(self.e1, _resample(self.d01, a0)))
        a2 = self.act(_cheb(self.e2, _resample(self.d12, a1)))
        b1 = self.act(_cheb(self.m1, torch.cat([_resample(self.u21, a2), a1], -1)))
        b0 = self.act(_cheb(self.m0, torch.cat([_resample(self.u10, b1), a0], -1)))
        return _cheb(self.out, b0).transpose(0, 1)


class GCNTexture(nn.Module):
    """Decoder + refiner + combine (module doc).

    Args:
        arrays: `hierarchy_arrays(...)` (levels 0..L; the refiner uses 0..2). mean_albedo: (V0, 3).
        feature_dim: F of the image features. config: {"decoder_channels", "refiner_channels", "K"}.

    forward(features (B, F), photo (B, V0, 3), seen (B, V0) bool/float, mirror (V0,) int64)
        -> (albedo (B, V0, 3) in [0, 1], coarse (B, V0, 3)).
    """

    def __init__(self, arrays: dict, mean_albedo: torch.Tensor, feature_dim: int, config: dict | None = None):
        super().__init__()
        cfg = {"decoder_channels": (16, 16, 16, 32, 32), "refiner_channels": (16, 32, 32), "K": 6} | (config or {})
        self.config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
        self.feature_dim = int(feature_dim)
        laps = [_arrays_to_sparse(d) for d in arrays["laplacians"]]
        down = [_arrays_to_sparse(d) for d in arrays["down"]]
        up = [_arrays_to_sparse(d) for d in arrays["up"]]
        self.arrays = arrays
        self.decoder = TextureDecoder(feature_dim, laps, up, mean_albedo, tuple(cfg["decoder_channels"]), cfg["K"])
        self.refiner = TextureRefiner(laps, down, up, len(REFINER_INPUTS), tuple(cfg["refiner_channels"]), cfg["K"])

    @property
    def n_vertices(self) -> int:
        return self.decoder.sizes[0]

    @staticmethod
    def photo_channels(photo: torch.Tensor, seen: torch.Tensor, mirror: torch.Tensor):
        """The photo part of the refiner's input and the photo colour the combine step uses:
        (B, V, 8) channels, (B, V, 3) photo colour (own, else mirror's, else 0), (B, V) seen-by-either."""
        s = seen.to(photo.dtype)
        m = mirror.to(photo.device)
        pm, sm = photo[:, m], s[:, m]
        x = torch.cat([photo * s[..., None], s[..., None], pm * sm[..., None], sm[..., None]], -1)
        src = torch.where(s[..., None] > 0, photo, pm * sm[..., None])
        return x, src, torch.maximum(s, sm)

    def forward(self, features: torch.Tensor, photo: torch.Tensor, seen: torch.Tensor, mirror: torch.Tensor):
        coarse = self.decoder(features)
        x, src, either = self.photo_channels(photo, seen, mirror)
        o = self.refiner(torch.cat([x, coarse], -1))
        g = torch.sigmoid(o[..., 3:]) * either[..., None]
        albedo = ((1 - g) * coarse + g * src + 0.25 * torch.tanh(o[..., :3])).clamp(0.0, 1.0)
        return albedo, coarse

    # -- files -------------------------------------------------------------------------------
    def save(self, path, meta: dict | None = None, half: bool = True) -> Path:
        """Write parameters (float16 if `half`), the hierarchy arrays, the mean and config (atomic)."""
        from ..io.atomic import atomic_path

        params = {k: (v.half() if half and v.is_floating_point() else v).clone()
                  for k, v in self.state_dict().items() if k in dict(self.named_parameters())}
        # tensors only (no numpy), so the file loads with torch.load(weights_only=True)
        hier = {k: [{n: torch.as_tensor(np.asarray(a)) for n, a in d.items()} for d in v]
                for k, v in self.arrays.items()}
        ck = {"texture_refiner": {"config": self.config, "feature_dim": self.feature_dim,
                                  "hierarchy": hier, "mean_albedo": self.decoder.mean_albedo.half().clone()},
              "model": params, "meta": meta or {}}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(ck, tmp)
        return path

    @staticmethod
    def from_file(path) -> GCNTexture:
        """Read a file written by `save` (AssetError when it is not one)."""
        from ..errors import AssetError

        try:
            ck = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
            raise AssetError(f"{path}: cannot read texture refiner weights ({e})") from None
        if not isinstance(ck, dict) or "texture_refiner" not in ck or "model" not in ck:
            raise AssetError(f"{path}: not a facerecon texture refiner file (needs 'texture_refiner' and 'model')")
        t = ck["texture_refiner"]
        net = GCNTexture(t["hierarchy"], torch.as_tensor(t["mean_albedo"]).float(),
                         t["feature_dim"], t["config"])
        sd = {k: v.float() for k, v in ck["model"].items()}
        missing = set(dict(net.named_parameters())) - set(sd)
        if missing:
            raise AssetError(f"{path}: texture refiner weights lack {sorted(missing)[:3]}")
        net.load_state_dict(sd, strict=False)
        net.meta = ck.get("meta", {})
        return net.eval()


def default_refiner_paths() -> list[Path]:
    """Where the refiner is looked for, in order: $FACERECON_TEXTURE_REFINER, the repository's
    `weights/texture_refiner/refiner.pt`, $FACERECON_ASSETS/texture_refiner/, ~/.cache/facerecon/assets/."""
    from ..assets import weights_paths

    return weights_paths(ENV, DEFAULT_FILE)


def load_texture_refiner(path: str | os.PathLike | None = None) -> GCNTexture:
    """The trained `GCNTexture` (eval mode, float32). AssetError listing the searched paths when absent."""
    from .checkpoint import find_weights

    p = find_weights(path, default_refiner_paths(), "texture refiner",
                     ". Train one (`facerecon albedo refiner-train`, docs/albedo.md) or set "
                     f"{ENV}=FILE.")
    return GCNTexture.from_file(p)


__all__ = [
    "DEFAULT_FILE",
    "ENV",
    "REFINER_INPUTS",
    "GCNTexture",
    "TextureDecoder",
    "TextureRefiner",
    "default_refiner_paths",
    "hierarchy_arrays",
    "load_texture_refiner",
]
