"""Write `src/facerecon/data/ict_bfm_frame.json`: the rotation from ICT's face frame to BFM's.

The rotation of a least-squares similarity taking ICT's mean-face 68 landmarks (facerecon's BFM-
convention landmarks, `models.ict.bfm_convention_landmarks`) onto BFM's mean-face 68 landmarks
(3DDFA_V2's bases, asset `3ddfa-v2`). Uses the two models only: no images, no benchmark data.

    python scripts/calibrate_bfm_frame.py
"""

from __future__ import annotations

import json
from pathlib import Path

from facerecon.eval.pose import landmark_frame_rotation
from facerecon.models import load_model

OUT = Path(__file__).resolve().parents[1] / "src" / "facerecon" / "data" / "ict_bfm_frame.json"


def main() -> None:
    Q = landmark_frame_rotation(load_model("ict"))
    from scipy.spatial.transform import Rotation

    ang = Rotation.from_matrix(Q).as_euler("xyz", degrees=True)
    doc = {"about": "ICT face frame -> BFM face frame (x_bfm = Q x_ict): similarity fit of the mean faces' 68 "
                    "landmarks (3DDFA convention); made by scripts/calibrate_bfm_frame.py",
           "rotation": [[round(float(v), 10) for v in row] for row in Q],
           "euler_xyz_deg": [round(float(v), 4) for v in ang]}
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{OUT}: rotation about x, y, z = {ang.round(3)} degrees")


if __name__ == "__main__":
    main()
