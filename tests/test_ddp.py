"""Data-parallel training computes the single-process step: the sampler's rank slices cover each
global batch, GlobalBatchNorm equals BatchNorm2d on the whole batch (forward and gradients), and
two gloo processes end with the weights one process reaches (and a resumed run with the weights an
uninterrupted one reaches)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from facerecon.regress.distributed import GlobalBatchNorm, GlobalBatchSampler, convert_batchnorm

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _take(it, n):
    return [next(it) for _ in range(n)]


def test_sampler_slices_cover_the_global_batch_and_resume_skips():
    one = _take(iter(GlobalBatchSampler(10, 4, seed=5)), 6)  # 2 batches per epoch, 3 epochs
    assert [len(b) for b in one] == [4] * 6
    assert len({i for i, _ in one[0] + one[1]}) == 8 and {e for _, e in one[2]} == {1}
    ranks = [_take(iter(GlobalBatchSampler(10, 4, seed=5, rank=r, world=2)), 6) for r in range(2)]
    for k in range(6):
        assert ranks[0][k] + ranks[1][k] == one[k]
    assert _take(iter(GlobalBatchSampler(10, 4, seed=5, start=3)), 3) == one[3:]
    with pytest.raises(ValueError, match="multiple"):
        GlobalBatchSampler(10, 3, world=2)


def test_global_batchnorm_is_batchnorm_in_one_process():
    torch.manual_seed(0)
    bn = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4, momentum=0.3)).train()
    g = convert_batchnorm(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4, momentum=0.3)))
    g.load_state_dict(bn.state_dict())
    assert isinstance(g[1], GlobalBatchNorm) and set(g.state_dict()) == set(bn.state_dict())
    x = torch.randn(5, 3, 6, 6)
    assert torch.equal(bn(x), g.train()(x))


_BN_WORKER = r"""
import sys, torch, torch.distributed as dist
sys.path.insert(0, sys.argv[3])
from facerecon.regress.distributed import GlobalBatchNorm
rank, out = int(sys.argv[1]), sys.argv[2]
dist.init_process_group("gloo", rank=rank, world_size=2)
torch.manual_seed(0)
x = torch.randn(6, 3, 5, 5, dtype=torch.float64)
w = torch.randn(6, 3, 5, 5, dtype=torch.float64)
bn = GlobalBatchNorm(3, momentum=0.5).double().train()
with torch.no_grad():
    bn.weight.copy_(torch.tensor([1.5, 0.5, 2.0])); bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
sl = slice(0, 2) if rank == 0 else slice(2, 6)  # unequal shares: 2 and 4 items
xs = x[sl].clone().requires_grad_()
y = bn(xs)
(y * w[sl]).sum().backward()
dist.all_reduce(bn.weight.grad); dist.all_reduce(bn.bias.grad)
torch.save({"y": y.detach(), "gx": xs.grad, "gw": bn.weight.grad, "gb": bn.bias.grad,
            "rm": bn.running_mean, "rv": bn.running_var}, f"{out}/bn{rank}.pt")
"""


def _run_ranks(args_for_rank, env_extra=None, timeout=240):
    port = _free_port()
    procs = []
    for r in range(2):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(r),
               "LOCAL_RANK": str(r), "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1", **(env_extra or {})}
        procs.append(subprocess.Popen([sys.executable, *args_for_rank(r)], env=env, cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o


def test_global_batchnorm_over_two_processes_equals_one_batch(tmp_path):
    (tmp_path / "w.py").write_text(_BN_WORKER)
    _run_ranks(lambda r: [str(tmp_path / "w.py"), str(r), str(tmp_path), str(ROOT / "src")])
    torch.manual_seed(0)
    x = torch.randn(6, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 3, 5, 5, dtype=torch.float64)
    bn = torch.nn.BatchNorm2d(3, momentum=0.5).double().train()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, 0.5, 2.0]))
        bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    y = bn(x)
    (y * w).sum().backward()
    r0, r1 = (torch.load(tmp_path / f"bn{r}.pt") for r in range(2))
    torch.testing.assert_close(torch.cat([r0["y"], r1["y"]]), y.detach())
    torch.testing.assert_close(torch.cat([r0["gx"], r1["gx"]]), x.grad)
    for r in (r0, r1):
        torch.testing.assert_close(r["gw"], bn.weight.grad)
        torch.testing.assert_close(r["gb"], bn.bias.grad)
        torch.testing.assert_close(r["rm"], bn.running_mean)
        torch.testing.assert_close(r["rv"], bn.running_var)


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def _outputs(path, model, x):
    """The trained regressor's raw outputs (eval mode) on x."""
    from facerecon.regress.model import Regressor

    reg = Regressor("mobilenet_v3_small", model, pretrained=False)
    if path is not None:
        reg.load_state_dict(_weights(path))
    with torch.no_grad():
        return reg.eval().raw(x)


def _max_diff(a, b):
    assert set(a) == set(b)
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


@pytest.mark.slow  # ~40 s on an idle 2-core machine: five short training processes
def test_two_process_training_matches_one_process_and_resume(tmp_path):
    from tests.test_regress import _write_dataset, tiny_model

    data = tmp_path / "data"
    _write_dataset(data, tiny_model(), n=6)
    worker = str(ROOT / "tests" / "ddp_worker.py")
    env1 = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "1"}
    # Two steps: the zero-initialised head passes no gradient into the backbone before step 2.
    subprocess.run([sys.executable, worker, str(data), str(tmp_path / "one"), "2"], env=env1, check=True,
                   cwd=ROOT)
    _run_ranks(lambda r: [worker, str(data), str(tmp_path / "two"), "2"])
    one, two = _weights(tmp_path / "one" / "last.pt"), _weights(tmp_path / "two" / "last.pt")
    bn = "net.backbone.features.1.block.0.1.weight"
    assert float((one[bn] - 1).abs().max()) > 1e-4  # the backbone's batch norm did train
    # Weights agree to Adam's amplification of float noise: parameters whose exact gradient is 0 (a
    # bias followed by batch norm) take steps of ±lr·noise/(|noise| + eps). The function agrees.
    assert _max_diff(one, two) < 3e-4, _max_diff(one, two)
    from facerecon.regress.data import PreprocessedDataset

    model = tiny_model()
    x = torch.stack([it["image"] for it in PreprocessedDataset([data], augment=None)])
    y0, y1, y2 = (_outputs(p, model, x) for p in (None, tmp_path / "one" / "last.pt", tmp_path / "two" / "last.pt"))
    moved = float((y1 - y0).abs().max())
    assert moved > 1e-3 and float((y2 - y1).abs().max()) < 1e-3 * moved
    # Rank 0 alone logs: one record per step, as in one process.
    logs = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["step"] for s in logs] == [1, 2]
    # Stopped after 1 step (its checkpoint), resumed to 2: the uninterrupted run's weights.
    subprocess.run([sys.executable, worker, str(data), str(tmp_path / "res"), "1"], env=env1, check=True, cwd=ROOT)
    subprocess.run([sys.executable, worker, str(data), str(tmp_path / "res"), "2", "--resume"], env=env1,
                   check=True, cwd=ROOT)
    y3 = _outputs(tmp_path / "res" / "last.pt", model, x)
    assert float((y3 - y1).abs().max()) < 1e-3 * moved
    # The resumed step saw the uninterrupted run's batch (its loss, taken before the update, agrees).
    losses = [[json.loads(s)["total"] for s in (tmp_path / r / "metrics.jsonl").read_text().splitlines()]
              for r in ("one", "res")]
    assert len(losses[1]) == 2 and losses[1][1] == pytest.approx(losses[0][1], rel=1e-5)
