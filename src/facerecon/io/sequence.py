"""A video's per-frame results as one sequence, and the files made from it: CSV + NPZ, a Live Link
Face-style ARKit CSV, and an animated GLB (morph targets + node animation). Plain numpy; every
file is written atomically.

Frame of reference: the video's camera (`FaceSequence.camera`, one for the whole clip), in the
world frame of `geometry.camera` (x right, y up, z towards the viewer, the camera on +z at
`distance_mm`): a model-space point v is at R v + t, R = Rz(roll) Ry(yaw) Rx(pitch).
"""

from __future__ import annotations

import csv
import io
import json
import struct
from dataclasses import dataclass

import numpy as np

from .atomic import write_bytes, write_text

#: Live Link Face's CSV columns after Timecode and BlendShapeCount: ARKit's 52 shapes in its order,
#: then head and eye angles.
LIVE_LINK_COLUMNS = (
    "EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft", "EyeLookOutLeft", "EyeLookUpLeft", "EyeSquintLeft",
    "EyeWideLeft", "EyeBlinkRight", "EyeLookDownRight", "EyeLookInRight", "EyeLookOutRight", "EyeLookUpRight",
    "EyeSquintRight", "EyeWideRight", "JawForward", "JawLeft", "JawRight", "JawOpen", "MouthClose",
    "MouthFunnel", "MouthPucker", "MouthLeft", "MouthRight", "MouthSmileLeft", "MouthSmileRight",
    "MouthFrownLeft", "MouthFrownRight", "MouthDimpleLeft", "MouthDimpleRight", "MouthStretchLeft",
    "MouthStretchRight", "MouthRollLower", "MouthRollUpper", "MouthShrugLower", "MouthShrugUpper",
    "MouthPressLeft", "MouthPressRight", "MouthLowerDownLeft", "MouthLowerDownRight", "MouthUpperUpLeft",
    "MouthUpperUpRight", "BrowDownLeft", "BrowDownRight", "BrowInnerUp", "BrowOuterUpLeft", "BrowOuterUpRight",
    "CheekPuff", "CheekSquintLeft", "CheekSquintRight", "NoseSneerLeft", "NoseSneerRight", "TongueOut",
    "HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll", "RightEyeYaw",
    "RightEyePitch", "RightEyeRoll",
)


@dataclass(frozen=True)
class FaceSequence:
    """The reconstructed face of T video frames (frames without a face are absent).

    frame: (T,) int64 frame numbers in the video; time: (T,) float64 seconds from its first frame.
    pose_deg: (T, 3) float64 yaw, pitch, roll in degrees; rotation: (T, 3, 3) float64 R.
    translation_mm: (T, 3) float64 t, mm, in the video camera's world frame (module doc).
    blendshapes: (T, K) float32 expression weights named by `blendshape_names` (ARKit names for
        ICT; K = 0 for a model without named expressions).
    lm68: (T, 68, 2) float32 fitted landmarks in video pixels (centres at integers).
    camera: the video camera as `export.camera_json` makes it ("focal_px", "cx", "cy", "width",
        "height", "distance_mm"). fps: the video's frame rate. source, method, model: names.
    """

    frame: np.ndarray
    time: np.ndarray
    pose_deg: np.ndarray
    rotation: np.ndarray
    translation_mm: np.ndarray
    blendshapes: np.ndarray
    blendshape_names: tuple[str, ...]
    lm68: np.ndarray
    camera: dict
    fps: float
    source: str = ""
    method: str = ""
    model: str = ""

    def __post_init__(self):
        T = len(self.frame)
        shapes = {"time": (T,), "pose_deg": (T, 3), "rotation": (T, 3, 3), "translation_mm": (T, 3),
                  "blendshapes": (T, len(self.blendshape_names)), "lm68": (T, 68, 2)}
        for name, want in shapes.items():
            if np.shape(getattr(self, name)) != want:
                raise ValueError(f"FaceSequence.{name} must be {want}, got {np.shape(getattr(self, name))}")

    def __len__(self) -> int:
        return len(self.frame)


def sequence_columns(seq: FaceSequence) -> list[str]:
    """The sequence CSV's header."""
    return (["frame", "time_s", "yaw_deg", "pitch_deg", "roll_deg", "tx_mm", "ty_mm", "tz_mm"]
            + list(seq.blendshape_names) + [f"lm{i}_{a}" for i in range(68) for a in "xy"])


def write_sequence_csv(path, seq: FaceSequence) -> None:
    """One row per frame: frame number, time, yaw/pitch/roll (deg), translation (mm), the expression
    weights, then the 68 landmarks x, y (video px)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(sequence_columns(seq))
    for i in range(len(seq)):
        w.writerow([int(seq.frame[i]), f"{seq.time[i]:.4f}"] + [f"{x:.3f}" for x in seq.pose_deg[i]]
                   + [f"{x:.2f}" for x in seq.translation_mm[i]] + [f"{x:.4f}" for x in seq.blendshapes[i]]
                   + [f"{x:.2f}" for x in seq.lm68[i].reshape(-1)])
    write_text(path, buf.getvalue())


def intrinsics(camera: dict) -> np.ndarray:
    f, cx, cy = float(camera["focal_px"]), float(camera["cx"]), float(camera["cy"])
    return np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])


def write_sequence_npz(path, seq: FaceSequence) -> None:
    """The sequence's arrays (compressed) plus the camera's 3×3 K and 4×4 world-to-OpenCV-camera
    matrix and a JSON string 'meta' (names, fps, units, conventions)."""
    d = float(seq.camera["distance_mm"])
    meta = {"schema": 1, "source": seq.source, "method": seq.method, "model": seq.model, "fps": seq.fps,
            "camera": seq.camera, "units": {"translation": "mm", "angles": "degrees", "lm68": "video pixels"},
            "rotation": "R = Rz(roll) Ry(yaw) Rx(pitch); posed = R v + t (x right, y up, z towards the viewer)"}
    buf = io.BytesIO()
    np.savez_compressed(
        buf, frame=seq.frame.astype(np.int64), time=seq.time.astype(np.float64), pose_deg=seq.pose_deg,
        rotation=seq.rotation, translation_mm=seq.translation_mm, blendshapes=seq.blendshapes.astype(np.float32),
        blendshape_names=np.array(seq.blendshape_names, dtype=str), lm68=seq.lm68.astype(np.float32),
        K=intrinsics(seq.camera), world_to_camera_cv=np.array([[1.0, 0, 0, 0], [0, -1.0, 0, 0], [0, 0, -1.0, d],
                                                               [0, 0, 0, 1.0]]),
        meta=np.array(json.dumps(meta)))
    write_bytes(path, buf.getvalue())


def read_sequence_npz(path) -> FaceSequence:
    """A FaceSequence back from `write_sequence_npz`'s file."""
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
        return FaceSequence(z["frame"], z["time"], z["pose_deg"], z["rotation"], z["translation_mm"],
                            z["blendshapes"], tuple(str(s) for s in z["blendshape_names"]), z["lm68"],
                            meta["camera"], float(meta["fps"]), meta["source"], meta["method"], meta["model"])


def live_link_timecode(t: float, fps: float) -> str:
    """Live Link Face's 'HH:MM:SS:FF.mmm' timecode of `t` seconds (FF: frame within the second)."""
    fps = fps if fps > 0 else 30.0
    whole = int(t)
    frames = (t - whole) * fps
    h, m, s = whole // 3600, whole // 60 % 60, whole % 60
    return f"{h:02d}:{m:02d}:{s:02d}:{int(frames):02d}.{round((frames % 1) * 1000) % 1000:03d}"


def write_live_link_csv(path, seq: FaceSequence) -> None:
    """The ARKit weights in Live Link Face's CSV layout (Timecode, BlendShapeCount, 52 ARKit shapes,
    head and eye angles), which Unreal/Blender/Maya importers of Live Link Face recordings read.
    Shape names are matched by `live_link_index` (ICT's 'eyeBlink_L' -> EyeBlinkLeft); shapes the
    model lacks are 0; head yaw/pitch/roll are in radians; eye angles are 0 (not estimated)."""
    cols = live_link_index(seq.blendshape_names)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["Timecode", "BlendShapeCount", *LIVE_LINK_COLUMNS])
    rad = np.radians(seq.pose_deg)
    head = {"HeadYaw": 0, "HeadPitch": 1, "HeadRoll": 2}
    for i in range(len(seq)):
        row = []
        for col in LIVE_LINK_COLUMNS:
            if cols.get(col):
                row.append(f"{float(seq.blendshapes[i, cols[col]].mean()):.6f}")
            elif col in head:
                row.append(f"{float(rad[i, head[col]]):.6f}")
            else:
                row.append("0")
        w.writerow([live_link_timecode(float(seq.time[i]), seq.fps), len(LIVE_LINK_COLUMNS), *row])
    write_text(path, buf.getvalue())


def live_link_index(names) -> dict[str, list[int]]:
    """Live Link column -> the indices of `names` it averages: names match case-insensitively with
    '_L'/'_R' read as Left/Right ('eyeBlink_L' -> EyeBlinkLeft); a column the model splits in two
    (ICT's browInnerUp_L/_R, cheekPuff_L/_R) is the mean of both."""
    side = {"_l": "left", "_r": "right"}
    norm = {}
    for k, n in enumerate(names):
        n = n.lower()
        norm[(n[:-2] + side[n[-2:]] if n[-2:] in side else n).replace("_", "")] = k
    out = {}
    for col in LIVE_LINK_COLUMNS:
        key = col.lower()
        if key in norm:
            out[col] = [norm[key]]
        elif key + "left" in norm and key + "right" in norm:
            out[col] = [norm[key + "left"], norm[key + "right"]]
    return out


# -- animated GLB ------------------------------------------------------------------------------

_FLOAT, _UINT = 5126, 5125
_ARRAY, _ELEMENTS = 34962, 34963


class _Buffer:
    """glTF buffer views and accessors over one binary blob (each view 4-byte aligned)."""

    def __init__(self):
        self.blob = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def add(self, array: np.ndarray, kind: str, ctype: int = _FLOAT, target: int | None = None,
            bounds: bool = False) -> int:
        data = np.ascontiguousarray(array, dtype=np.float32 if ctype == _FLOAT else np.uint32)
        self.blob += b"\0" * (-len(self.blob) % 4)
        view = {"buffer": 0, "byteOffset": len(self.blob), "byteLength": data.nbytes}
        if target is not None:
            view["target"] = target
        self.blob += data.tobytes()
        self.views.append(view)
        ncomp = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}[kind]
        acc = {"bufferView": len(self.views) - 1, "componentType": ctype, "count": int(data.size // ncomp),
               "type": kind}
        if bounds:
            flat = data.reshape(-1, ncomp)
            acc["min"] = [float(x) for x in flat.min(0)]
            acc["max"] = [float(x) for x in flat.max(0)]
        self.accessors.append(acc)
        return len(self.accessors) - 1


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions (x, y, z, w), glTF's order, w >= 0."""
    from scipy.spatial.transform import Rotation

    q = Rotation.from_matrix(np.asarray(R, np.float64).reshape(-1, 3, 3)).as_quat()
    q = q * np.where(q[:, 3:] < 0, -1.0, 1.0)
    return q.reshape(*np.shape(R)[:-2], 4)


def animated_glb(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray, morph_names, morph_deltas: np.ndarray,
                 weights: np.ndarray, seq: FaceSequence, name: str = "face") -> bytes:
    """A binary glTF of one mesh whose expression is animated over the sequence.

    Args:
        vertices: (V, 3) the identity's neutral mesh, model space, mm; faces: (F, 3) int.
        colors: (V, 3) vertex colours in [0, 1].
        morph_names: K names; morph_deltas: (K, V, 3) mm: the mesh of expression weight 1 on shape k
            minus the neutral one (the models' expressions are linear in their coefficients).
        weights: (T, K) the morph weights per frame (ICT: the ARKit weights; BFM: coefficients).
        seq: the sequence: its rotation and translation animate the mesh node, `time` is the clock.

    Returns the GLB bytes. Units are metres (glTF's); a perspective camera node at the video
    camera's place looks down −z like `geometry.camera`, so the animation is seen as in the video.
    """
    K = len(morph_names)
    if np.shape(morph_deltas) != (K, len(vertices), 3) or np.shape(weights) != (len(seq), K):
        raise ValueError(f"morph deltas {np.shape(morph_deltas)} and weights {np.shape(weights)} do not "
                         f"match {K} names and {len(vertices)} vertices")
    mm = 1e-3
    b = _Buffer()
    pos = b.add(np.asarray(vertices) * mm, "VEC3", target=_ARRAY, bounds=True)
    col = b.add(np.clip(colors, 0, 1), "VEC3", target=_ARRAY)
    idx = b.add(np.asarray(faces).reshape(-1), "SCALAR", _UINT, target=_ELEMENTS)
    targets = [{"POSITION": b.add(np.asarray(morph_deltas[k]) * mm, "VEC3", target=_ARRAY, bounds=True)}
               for k in range(K)]
    T = len(seq)
    t = np.asarray(seq.time, np.float64) - (float(seq.time[0]) if T else 0.0)
    samplers, channels = [], []
    if T:
        t_acc = b.add(t, "SCALAR", bounds=True)
        outputs = [("rotation", b.add(matrix_to_quaternion(seq.rotation), "VEC4")),
                   ("translation", b.add(np.asarray(seq.translation_mm) * mm, "VEC3"))]
        if K:
            outputs.insert(0, ("weights", b.add(np.asarray(weights).reshape(-1), "SCALAR")))
        for path, out in outputs:
            channels.append({"sampler": len(samplers), "target": {"node": 0, "path": path}})
            samplers.append({"input": t_acc, "output": out, "interpolation": "LINEAR"})
    prim = {"attributes": {"POSITION": pos, "COLOR_0": col}, "indices": idx, "mode": 4}
    mesh = {"name": name, "primitives": [prim]}
    if K:
        prim["targets"] = targets
        mesh["weights"] = [0.0] * K
        mesh["extras"] = {"targetNames": list(morph_names)}
    node = {"name": name, "mesh": 0}
    if T:
        node["rotation"] = [float(x) for x in matrix_to_quaternion(seq.rotation[0])]
        node["translation"] = [float(x) for x in np.asarray(seq.translation_mm[0]) * mm]
    cam = seq.camera
    yfov = 2.0 * float(np.arctan((float(cam["height"]) / 2.0) / float(cam["focal_px"])))
    gltf = {
        "asset": {"version": "2.0", "generator": "facerecon"},
        "scene": 0, "scenes": [{"nodes": [0, 1]}],
        "nodes": [node, {"name": "video_camera", "camera": 0,
                         "translation": [0.0, 0.0, float(cam["distance_mm"]) * mm]}],
        "cameras": [{"type": "perspective", "perspective": {
            "yfov": yfov, "aspectRatio": float(cam["width"]) / float(cam["height"]), "znear": 0.01, "zfar": 100.0}}],
        "meshes": [mesh],
        "buffers": [{"byteLength": 0}], "bufferViews": b.views, "accessors": b.accessors,
    }
    if channels:
        gltf["animations"] = [{"name": "video", "channels": channels, "samplers": samplers}]
    blob = bytes(b.blob) + b"\0" * (-len(b.blob) % 4)
    gltf["buffers"][0]["byteLength"] = len(blob)
    js = json.dumps(gltf, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 4)
    total = 12 + 8 + len(js) + 8 + len(blob)
    return (struct.pack("<4sII", b"glTF", 2, total) + struct.pack("<I4s", len(js), b"JSON") + js
            + struct.pack("<I4s", len(blob), b"BIN\0") + blob)


def read_glb(data: bytes) -> tuple[dict, bytes]:
    """(glTF JSON, binary chunk) of GLB bytes (ValueError when malformed)."""
    magic, version, total = struct.unpack_from("<4sII", data, 0)
    if magic != b"glTF" or version != 2 or total != len(data):
        raise ValueError("not a glTF 2.0 binary (bad header)")
    n, kind = struct.unpack_from("<I4s", data, 12)
    if kind != b"JSON":
        raise ValueError("GLB: first chunk is not JSON")
    js = json.loads(data[20:20 + n])
    off = 20 + n
    blob = b""
    if off < len(data):
        m, kind = struct.unpack_from("<I4s", data, off)
        if kind != b"BIN\0":
            raise ValueError("GLB: second chunk is not BIN")
        blob = data[off + 8: off + 8 + m]
    return js, blob


def accessor_array(gltf: dict, blob: bytes, index: int) -> np.ndarray:
    """The accessor's data as a numpy array (count, ncomp) (float32 or uint32)."""
    acc = gltf["accessors"][index]
    view = gltf["bufferViews"][acc["bufferView"]]
    ncomp = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[acc["type"]]
    dtype = {_FLOAT: np.float32, _UINT: np.uint32}[acc["componentType"]]
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    n = acc["count"] * ncomp
    if start + n * 4 > view.get("byteOffset", 0) + view["byteLength"] or start + n * 4 > len(blob):
        raise ValueError(f"accessor {index} runs past its buffer view")
    return np.frombuffer(blob, dtype, n, start).reshape(acc["count"], ncomp)


__all__ = ["LIVE_LINK_COLUMNS", "FaceSequence", "accessor_array", "animated_glb", "live_link_index", "live_link_timecode",
           "matrix_to_quaternion", "read_glb", "read_sequence_npz", "sequence_columns", "write_live_link_csv",
           "write_sequence_csv", "write_sequence_npz"]
