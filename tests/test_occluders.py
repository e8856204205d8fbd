"""Synthetic occluders for the parser's training (detect/occluders.py) and the parser network's
optional full-resolution level (nets/parser.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from facerecon.detect.occluders import KINDS, occluder_mask, paste_occluders
from facerecon.models.annotations import PART_NAMES
from facerecon.nets.parser import PartNet, PartNetConfig

SKIN = PART_NAMES.index("skin") + 1


def _face(seed: int = 0, size: int = 128):
    """A textured crop with a skin-labelled face disc, two eyes, a nose and a noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    c = size / 2
    lab = np.zeros((size, size), np.uint8)
    lab[(yy - c) ** 2 + (xx - c) ** 2 < (0.35 * size) ** 2] = SKIN
    for k, ex in ((1, 0.38), (2, 0.62)):
        lab[(yy - 0.42 * size) ** 2 / 4 + (xx - ex * size) ** 2 < (0.05 * size) ** 2] = k
    lab[(np.abs(xx - c) < 0.05 * size) & (np.abs(yy - 0.55 * size) < 0.1 * size)] = PART_NAMES.index("nose") + 1
    img = rng.integers(30, 220, (size, size, 3)).astype(np.uint8)
    skin = lab == SKIN
    img[skin] = np.array([200, 150, 120]) + rng.integers(-12, 13, (int(skin.sum()), 3))  # textured skin
    return img, lab


@pytest.mark.parametrize("kind", KINDS)
def test_each_occluder_covers_the_face_and_labels_its_pixels_zero(kind):
    img, lab = _face()
    donor, donor_lab = _face(1)
    rng = np.random.default_rng(3)
    alpha, colour = occluder_mask(kind, img, lab, rng, donor, donor_lab)
    assert alpha.shape == lab.shape and colour.shape == img.shape
    assert alpha.min() >= 0 and alpha.max() <= 1
    assert ((alpha >= 0.5) & (lab > 0)).sum() > 20, f"{kind} does not reach the face"
    if kind == "hand":
        # The skin colour (median of the skin pixels, ±15 % per channel + shading): a colour test
        # cannot tell it from the face.
        med = colour[alpha >= 0.5].mean(0)
        assert np.all(np.abs(med - np.array([200, 150, 120])) < 0.35 * np.array([200, 150, 120]))
    if kind == "glasses":
        # Rims (or tinted lenses) around the labelled eyes.
        eyes = (lab == 1) | (lab == 2)
        ring = F.max_pool2d(torch.as_tensor(eyes, dtype=torch.float32)[None, None], 15, 1, 7)[0, 0].numpy() > 0
        assert ((alpha >= 0.5) & ring).sum() > 10


def test_paste_occluders_changes_only_what_it_covers():
    ims, labs = zip(*[_face(s) for s in range(6)])
    ims, labs = np.stack(ims), np.stack(labs)
    before = ims.copy(), labs.copy()
    out_i, out_l = paste_occluders(ims, labs, np.random.default_rng(0), p=1.0)
    assert np.array_equal(ims, before[0]) and np.array_equal(labs, before[1])  # inputs untouched
    assert out_i.dtype == np.uint8 and out_l.dtype == np.uint8
    # Labels only ever become 0, and each crop lost some face pixels to its occluder.
    changed = out_l != labs
    assert np.all(out_l[changed] == 0)
    assert all(changed[i].sum() > 20 for i in range(len(ims)))
    # Where a label was cleared the image changed there too (the occluder is drawn, not only labelled).
    diff = np.abs(out_i.astype(int) - ims.astype(int)).sum(-1)
    assert (diff[changed] > 0).mean() > 0.9
    # p = 0: nothing happens.
    same_i, same_l = paste_occluders(ims, labs, np.random.default_rng(0), p=0.0)
    assert np.array_equal(same_i, ims) and np.array_equal(same_l, labs)
    with pytest.raises(ValueError, match="unknown occluder"):
        occluder_mask("scarf", ims[0], labs[0], np.random.default_rng(0))


def test_full_resolution_level_starts_as_the_warm_started_network():
    torch.manual_seed(0)
    base = PartNet(PartNetConfig(input_size=64)).eval()
    full = PartNet(PartNetConfig(input_size=64, full_width=8)).eval()
    missing, unexpected = full.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and {k.split(".")[0] for k in missing} == {"stem0", "dec0", "head0"}
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        y_full, y_base = full(x), base(x)
    assert y_full.shape == (2, 9, 64, 64) and y_base.shape == (2, 9, 32, 32)
    # head0 is zero: exactly the base logits upsampled bilinearly.
    up = F.interpolate(y_base, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(y_full, up)
    # ... and it learns: one step moves the full-resolution head.
    full.train()
    loss = full(x)[:, 1].mean()
    loss.backward()
    assert full.head0.weight.grad.abs().sum() > 0
    # Configs round-trip; an old file's config (no full_width) reads as 0.
    cfg = PartNetConfig(full_width=8)
    assert PartNetConfig.from_dict(cfg.to_dict()) == cfg
    old = {k: v for k, v in PartNetConfig().to_dict().items() if k != "full_width"}
    assert PartNetConfig.from_dict(old).full_width == 0
