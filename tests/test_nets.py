"""Backbones (torchvision layout), zero-initialised head, MobileFaceNet identity features, ONNX export."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from facerecon import assets
from facerecon.geometry.transforms2d import warp_affine
from facerecon.nets.heads import CoefficientHead, CoefficientNet, build_backbone
from facerecon.nets.mobilefacenet import (
    IdentityEncoder,
    MobileFaceNet,
    TEMPLATE_112x96,
    load_mobilefacenet,
    similarity_to_template,
)
from facerecon.nets.mobilenet_v3 import MobileNetV3
from facerecon.nets.resnet import load_torchvision_state_dict, resnet

SHARED = Path(__file__).resolve().parents[2] / "shared"
LFW = SHARED / "data" / "identity-sets" / "lfw"


def _nparams(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# Parameter counts of torchvision's models (published in its model docs): same architecture.
@pytest.mark.parametrize("make,count", [
    (lambda: resnet("resnet18"), 11_689_512),
    (lambda: resnet("resnet50"), 25_557_032),
    (lambda: MobileNetV3("large"), 5_483_032),
    (lambda: MobileNetV3("small"), 2_542_856),
])
def test_backbones_match_torchvision_sizes(make, count):
    assert _nparams(make()) == count


def test_torchvision_key_names():
    r = resnet("resnet50").state_dict()
    for k in ("conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight", "layer4.2.conv3.weight",
              "layer3.5.bn2.num_batches_tracked", "fc.weight"):
        assert k in r
    m = MobileNetV3("large").state_dict()
    for k in ("features.0.0.weight", "features.1.block.0.0.weight", "features.4.block.2.fc1.weight",
              "features.16.0.weight", "classifier.0.weight", "classifier.3.bias"):
        assert k in m
    assert m["features.4.block.2.fc1.weight"].shape == (24, 72, 1, 1)


@pytest.mark.parametrize("name,dim", [("resnet18", 512), ("mobilenet_v3_small", 1024)])
def test_backbone_loads_full_checkpoint_and_runs(name, dim):
    full = resnet(name) if name.startswith("resnet") else MobileNetV3("small")
    backbone, d = build_backbone(name)
    assert d == dim
    # A torchvision-style checkpoint (classifier included) loads strictly except the classifier.
    load_torchvision_state_dict(backbone, full.state_dict())
    sd = {k: v for k, v in backbone.state_dict().items()}
    for k, v in sd.items():
        assert torch.equal(v, full.state_dict()[k])
    bad = dict(full.state_dict())
    bad.pop(next(iter(bad)))
    with pytest.raises(RuntimeError):
        load_torchvision_state_dict(backbone, bad)
    out = backbone.eval()(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, dim) and torch.isfinite(out).all()


def test_coefficient_head_starts_at_zero_and_trains():
    net = CoefficientNet("resnet18", 257).eval()
    x = torch.rand(2, 3, 64, 64)
    y = net(x)
    assert y.shape == (2, 257) and torch.count_nonzero(y) == 0
    # Zero weights do not block learning: the gradient w.r.t. the head's weights is the features.
    head = CoefficientHead(16, 3)
    loss = (head(torch.ones(4, 16, 1, 1)) - 1).pow(2).sum()
    loss.backward()
    assert head.fc.weight.grad.abs().sum() > 0 and head.fc.bias.grad.abs().sum() > 0


def test_similarity_to_template_recovers_transform():
    ang, s, t = 0.3, 0.7, torch.tensor([5.0, -3.0], dtype=torch.float64)
    R = s * torch.tensor([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]], dtype=torch.float64)
    tmpl = torch.tensor(TEMPLATE_112x96, dtype=torch.float64)
    src = (tmpl - t) @ torch.linalg.inv(R).T  # points that R·src + t maps exactly onto the template
    m = similarity_to_template(src)
    assert torch.allclose(m[:, :2], R, atol=1e-10) and torch.allclose(m[:, 2], t, atol=1e-9)


def test_warp_affine_moves_a_dot():
    img = torch.zeros(1, 1, 50, 60)
    img[0, 0, 20, 30] = 1.0  # dot at (x, y) = (30, 20)
    a = torch.tensor([[0.5, 0.0, 3.0], [0.0, 0.5, 7.0]])  # source px -> output px
    out = warp_affine(img, a, (40, 40))[0, 0]
    ys, xs = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
    w = out / out.sum()
    assert abs(float((w * xs).sum()) - 18.0) < 0.5 and abs(float((w * ys).sum()) - 17.0) < 0.5


@pytest.fixture(scope="module")
def mfn_path():
    folder = assets.find("mobilefacenet", SHARED / "assets" / "mobilefacenet")
    if folder is None:
        pytest.skip("asset mobilefacenet not found")
    return folder / "mobilefacenet_068.ckpt"


@pytest.mark.assets
def test_mobilefacenet_strict_load(mfn_path):
    sd = torch.load(mfn_path, map_location="cpu", weights_only=True)["net_state_dict"]
    net = MobileFaceNet()
    assert set(net.state_dict()) == set(sd) and len(sd) == 333
    net = load_mobilefacenet(mfn_path)
    assert not net.training
    assert net(torch.rand(1, 3, 112, 96) * 2 - 1).shape == (1, 128)


@pytest.mark.assets
def test_identity_encoder_self_similarity_and_gradient(mfn_path):
    enc = IdentityEncoder(mfn_path).train()
    assert not enc.net.training  # BN stays in inference mode
    x = torch.rand(2, 3, 120, 100, requires_grad=True)
    lm5 = torch.tensor(TEMPLATE_112x96) + torch.tensor([4.0, 2.0])
    e = enc(x, similarity_to_template(lm5))
    assert e.shape == (2, 128)
    assert torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-5)
    with torch.no_grad():
        again = enc(x[:1], similarity_to_template(lm5))[0]
    assert abs(float(e[0].detach() @ again) - 1.0) < 1e-5
    e.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in enc.parameters())


# Mean 5 points of the deep-funneled LFW photos (250×250; MediaPipe FaceMesh over the 200 shared
# images): deep funneling aligns faces by similarity, so this is a usable fallback landmark set.
_LFW_MEAN_LM5 = [[103.6, 113.7], [144.6, 112.9], [124.9, 139.7], [107.5, 157.9], [142.6, 157.3]]


def _lfw_lm5(images: list[np.ndarray]) -> np.ndarray:
    """Per-image 5 points from MediaPipe FaceMesh when installed, else the mean landmark set."""
    try:
        import mediapipe as mp
    except ImportError:
        return np.tile(np.array(_LFW_MEAN_LM5), (len(images), 1, 1))
    out = []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=3) as fm:
        for im in images:
            res = fm.process(im)
            if not res.multi_face_landmarks:
                out.append(np.array(_LFW_MEAN_LM5))
                continue
            h, w = im.shape[:2]
            # MediaPipe's normalised coordinates have pixel centres at +0.5; the labelled person is centred.
            cands = [np.array([[p.x * w - 0.5, p.y * h - 0.5] for p in f.landmark]) for f in res.multi_face_landmarks]
            p = min(cands, key=lambda c: np.linalg.norm(c.mean(0) - [(w - 1) / 2, (h - 1) / 2]))
            out.append(np.stack([p[[33, 133]].mean(0), p[[362, 263]].mean(0), p[1], p[61], p[291]]))
    return np.stack(out)


@pytest.mark.assets
def test_identity_same_person_more_similar_than_different_people(mfn_path):
    if not LFW.is_dir():
        pytest.skip("LFW identity set not found")
    from PIL import Image

    people = ["Bill_Gates", "Hillary_Clinton", "Harrison_Ford", "Naomi_Watts"]
    images, labels = [], []
    for i, who in enumerate(people):
        files = sorted((LFW / who).glob("*.jpg"))[:3]
        if len(files) < 3:
            pytest.skip(f"LFW person {who} incomplete")
        for f in files:
            images.append(np.asarray(Image.open(f).convert("RGB")))
            labels.append(i)
    lm5 = torch.from_numpy(_lfw_lm5(images)).float()
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    enc = IdentityEncoder(mfn_path)
    with torch.no_grad():
        e = enc(x, similarity_to_template(lm5))
    sim = (e @ e.T).numpy()
    lab = np.array(labels)
    same = (lab[:, None] == lab[None, :]) & ~np.eye(len(lab), dtype=bool)
    diff = lab[:, None] != lab[None, :]
    genuine, impostor = sim[same], sim[diff]
    assert genuine.mean() > impostor.mean() + 0.3, (genuine.mean(), impostor.mean())
    # Ranking: nearly every same-person pair beats every different-person pair.
    assert (genuine[:, None] > impostor[None, :]).mean() > 0.95


def test_onnx_export_matches_torch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from facerecon.nets.onnx_export import export_onnx

    torch.manual_seed(0)
    net = CoefficientNet("mobilenet_v3_small", 12).eval()
    torch.nn.init.normal_(net.head.fc.weight, std=0.05)  # a zero head would make the check vacuous
    torch.nn.init.normal_(net.head.fc.bias, std=0.05)
    path = export_onnx(net, torch.rand(1, 3, 64, 64), tmp_path / "m.onnx", dynamic_batch=True)
    assert path.is_file() and not list(tmp_path.glob("*.tmp"))
    x = torch.rand(3, 3, 64, 64)  # another batch size than the example: the axis is dynamic
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = net(x).numpy()
    assert got.shape == (3, 12)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
