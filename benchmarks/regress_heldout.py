"""Held-out scores of regressor weights (issue 14): aflw-lm68's MERL-RAV test split and a data-engine
folder's val split, as `facerecon train --val-set aflw-lm68-test --engine ...` validates.

    python benchmarks/regress_heldout.py --weights weights/regressor_ict_mbv1.pt \
        --engine /work/scratch_parser/ds [--lm68-root $FACERECON_DATA/aflw-lm68] [--cache crops.npz]

Prints one JSON object: lm68_test (NME % on visible manual points per |yaw| bin, also without the
jaw) and engine_val (vertex error in mm after a 3-D similarity, landmark NME). With `--parts`, also
engine_parts: the mean part IoU (8 parts, by |yaw| bin) of the regressed face's projected parts
(`seg_visible` rule, the Deep3D 224² camera) on the engine val crops against their exact labels and
against the face parser's maps (`--parser`, default load_parser's search).
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from facerecon.eval.validation import AflwLm68Validator, EngineValidator
from facerecon.models import load_model
from facerecon.regress import load_regressor


def engine_part_iou(reg, model, roots, parser) -> dict:
    """Mean part IoU of the regressed faces on the engine folders' val crops, vs exact labels and vs
    the parser; by |yaw| bin ([0,30], (30,60], >60) and their mean."""
    from pathlib import Path

    import numpy as np

    from facerecon.dataset import load_sample
    from facerecon.detect.parsing import sample_label_map
    from facerecon.geometry.camera import PerspectiveCamera
    from facerecon.models.annotations import annotations_for
    from facerecon.objective.prdl import PartMesh, part_iou
    from facerecon.regress.engine_data import load_engine_sample, read_engine_manifest

    crops, exact, yaw = [], [], []
    for root in map(Path, roots):
        for row in read_engine_manifest(root):
            if row.get("split") == "val":
                crops.append(load_engine_sample(root, row)["crop"])
                exact.append(sample_label_map(load_sample(root / row["sample"])))
                yaw.append(abs(float(row["yaw"])))
    crops, exact, yaw = np.stack(crops), np.stack(exact), np.array(yaw)
    params = reg.predict(crops)
    pm = PartMesh(annotations_for(model), model.faces)
    cam = PerspectiveCamera.deep3d(224)
    with torch.no_grad():
        world = model.pose(model.shape(params.identity, params.expression), params.rotation, params.translation)
        pred = np.concatenate([pm.label_maps(world[s:s + 32], cam) for s in range(0, len(world), 32)])
    parsed = np.concatenate([parser.parse(crops[s:s + 32]) for s in range(0, len(crops), 32)])
    out = {"n": len(crops)}
    for name, ref in (("vs_exact", exact), ("vs_parser", parsed)):
        iou = np.nanmean(part_iou(pred, ref), 1)
        bins = [float(np.nanmean(iou[m])) for m in (yaw <= 30, (yaw > 30) & (yaw <= 60), yaw > 60)]
        out[name] = {"0_30": bins[0], "30_60": bins[1], "60_90": bins[2], "mean": float(np.mean(bins))}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default=None, help="regressor file (default: load_regressor's search)")
    p.add_argument("--engine", nargs="*", default=[], help="data-engine folder(s): score their val split")
    p.add_argument("--lm68-root", default=os.path.join(os.environ.get("FACERECON_DATA", "."), "aflw-lm68"))
    p.add_argument("--cache", default=None, help="npz cache of the test crops' transforms")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--parts", action="store_true", help="also the part IoU on the engine val crops (needs --engine)")
    p.add_argument("--parser", default=None, help="face-parser weights for --parts")
    p.add_argument("--no-lm68", action="store_true", help="skip the aflw-lm68 test split")
    p.add_argument("--flip-tta", action="store_true",
                   help="score with flip test-time augmentation (regress.predict.FlipTTA: regress+refine's default, off in regress)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = load_model("ict")
    reg = load_regressor(a.weights).eval()
    out = {"weights": a.weights, "flip_tta": a.flip_tta}
    if a.flip_tta:
        from facerecon.regress.predict import FlipTTA

        reg = FlipTTA(reg, model)
    if not a.no_lm68:
        out["lm68_test"] = AflwLm68Validator(a.lm68_root, a.cache, model, "test")(reg)
    if a.engine:
        out["engine_val"] = EngineValidator(a.engine, model, "val")(reg)
    if a.parts and a.engine:
        from facerecon.detect.parsing import load_parser

        out["engine_parts"] = engine_part_iou(reg, model, a.engine, load_parser(a.parser))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
