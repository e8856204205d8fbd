"""One training process for tests/test_ddp.py: `python tests/ddp_worker.py DATA OUT STEPS [--resume]`.

Rank and world size come from the environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT), as torchrun
sets them; the tiny synthetic model of test_regress keeps it asset-free and fast."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]  # this checkout's package, not another installed one

import torch

from facerecon.regress.data import Augment, PreprocessedDataset
from facerecon.regress.train import TrainConfig, train
from tests.test_regress import tiny_model


def main() -> None:
    data, out, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(1)
    cfg = TrainConfig(data=[data], out=out, backbone="mobilenet_v3_small", pretrained=False, steps=steps,
                      batch=4, lr=1e-3, warmup=1, workers=0, ckpt_every=1, val_every=0, log_every=1,
                      render_size=32, augment=True, seed=3)
    ds = PreprocessedDataset([data], augment=Augment(), seed=cfg.seed)
    train(cfg, resume="--resume" in sys.argv, model=tiny_model(), dataset=ds, progress=False)


if __name__ == "__main__":
    main()
