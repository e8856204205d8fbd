"""Held-out scores of regressor weights (issue 14): aflw-lm68's MERL-RAV test split and a data-engine
folder's val split, as `facerecon train --val-set aflw-lm68-test --engine ...` validates.

    python benchmarks/regress_heldout.py --weights weights/regressor_ict_mbv1.pt \
        --engine /work/scratch_parser/ds [--lm68-root $FACERECON_DATA/aflw-lm68] [--cache crops.npz]

Prints one JSON object: lm68_test (NME % on visible manual points per |yaw| bin, also without the
jaw) and engine_val (vertex error in mm after a 3-D similarity, landmark NME).
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from facerecon.eval.validation import AflwLm68Validator, EngineValidator
from facerecon.models import load_model
from facerecon.regress import load_regressor


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default=None, help="regressor file (default: load_regressor's search)")
    p.add_argument("--engine", nargs="*", default=[], help="data-engine folder(s): score their val split")
    p.add_argument("--lm68-root", default=os.path.join(os.environ.get("FACERECON_DATA", "."), "aflw-lm68"))
    p.add_argument("--cache", default=None, help="npz cache of the test crops' transforms")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = load_model("ict")
    reg = load_regressor(a.weights).eval()
    out = {"weights": a.weights, "lm68_test": AflwLm68Validator(a.lm68_root, a.cache, model, "test")(reg)}
    if a.engine:
        out["engine_val"] = EngineValidator(a.engine, model, "val")(reg)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
