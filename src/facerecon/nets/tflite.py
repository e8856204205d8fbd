"""A small reader for TensorFlow-Lite model files: tensors (weights) and the operator graph.

TFLite files are FlatBuffers (schema: tensorflow/lite/schema/schema.fbs). Only the tables and
fields needed to take the weights out of a float model are read here, so neither TensorFlow nor the
`flatbuffers`/`tflite` packages are needed. FP16 weights (stored as FLOAT16 tensors feeding
DEQUANTIZE ops) are returned as float32 under the name of the DEQUANTIZE output, which is the
tensor the consuming op reads.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

from ..errors import FaceReconError

# TensorType enum -> numpy dtype (the ones float models use).
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}
# BuiltinOperator enum values -> names, for the ops these models contain.
OP_NAMES = {
    0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D",
    6: "DEQUANTIZE", 14: "LOGISTIC", 17: "MAX_POOL_2D", 18: "MUL", 19: "RELU", 21: "RELU6",
    22: "RESHAPE", 34: "PAD", 54: "PRELU", 67: "TRANSPOSE_CONV", 100: "PADV2",
}
# Options fields by op name, in schema order (Conv2DOptions, DepthwiseConv2DOptions, Pool2DOptions, ...).
_OPTION_FIELDS = {
    "CONV_2D": ("padding", "stride_w", "stride_h", "activation", "dilation_w", "dilation_h"),
    "DEPTHWISE_CONV_2D": ("padding", "stride_w", "stride_h", "depth_multiplier", "activation",
                          "dilation_w", "dilation_h"),
    "MAX_POOL_2D": ("padding", "stride_w", "stride_h", "filter_w", "filter_h", "activation"),
    "AVERAGE_POOL_2D": ("padding", "stride_w", "stride_h", "filter_w", "filter_h", "activation"),
    "ADD": ("activation",),
}
# Byte size of each option field (all are int32 except the byte-sized enums).
_OPTION_SIZES = {"padding": 1, "activation": 1}
PADDING = {0: "SAME", 1: "VALID"}
ACTIVATION = {0: None, 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH"}


class TFLiteError(FaceReconError):
    """A file that is not a (supported) TFLite model."""


class _Table:
    """One FlatBuffers table: field i read through its vtable."""

    __slots__ = ("buf", "pos", "vt", "vt_size")

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        self.vt = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vt_size = struct.unpack_from("<H", buf, self.vt)[0]

    def _field(self, i: int) -> int:
        o = 4 + 2 * i
        if o >= self.vt_size:
            return 0
        return struct.unpack_from("<H", self.buf, self.vt + o)[0]

    def scalar(self, i: int, fmt: str, default=0):
        o = self._field(i)
        return default if o == 0 else struct.unpack_from("<" + fmt, self.buf, self.pos + o)[0]

    def _target(self, i: int) -> int | None:
        o = self._field(i)
        if o == 0:
            return None
        p = self.pos + o
        return p + struct.unpack_from("<I", self.buf, p)[0]

    def table(self, i: int) -> _Table | None:
        p = self._target(i)
        return None if p is None else _Table(self.buf, p)

    def vector(self, i: int, fmt: str) -> np.ndarray:
        p = self._target(i)
        if p is None:
            return np.zeros(0, dtype=fmt)
        n = struct.unpack_from("<I", self.buf, p)[0]
        return np.frombuffer(self.buf, dtype="<" + fmt, count=n, offset=p + 4)

    def tables(self, i: int) -> list[_Table]:
        p = self._target(i)
        if p is None:
            return []
        n = struct.unpack_from("<I", self.buf, p)[0]
        out = []
        for k in range(n):
            q = p + 4 + 4 * k
            out.append(_Table(self.buf, q + struct.unpack_from("<I", self.buf, q)[0]))
        return out

    def string(self, i: int) -> str:
        p = self._target(i)
        if p is None:
            return ""
        n = struct.unpack_from("<I", self.buf, p)[0]
        return bytes(self.buf[p + 4:p + 4 + n]).decode("utf-8", "replace")


@dataclass(frozen=True)
class Op:
    """One operator: name (e.g. "CONV_2D"), input/output tensor ids, decoded builtin options."""

    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict


@dataclass(frozen=True)
class TFLiteModel:
    """The first subgraph of a TFLite file.

    names:   tensor names by id; shapes: tensor shapes (NHWC activations; OHWI conv weights,
             1HWO depthwise weights); constants: {tensor id: float32/int array} for tensors with data
             (FP16 constants dequantized, also stored under their DEQUANTIZE output's id);
    ops:     operators in execution order (DEQUANTIZE ops of constants left out);
    inputs/outputs: graph input/output tensor ids.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    constants: dict[int, np.ndarray]
    ops: tuple[Op, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    def tensor(self, name: str) -> np.ndarray:
        """The constant tensor called `name` (KeyError if there is none)."""
        for i, n in enumerate(self.names):
            if n == name and i in self.constants:
                return self.constants[i]
        raise KeyError(name)


def _options(name: str, t: _Table | None) -> dict:
    fields = _OPTION_FIELDS.get(name, ())
    out = {}
    for i, f in enumerate(fields):
        default = 1 if f.startswith("dilation") or f == "depth_multiplier" else 0
        out[f] = t.scalar(i, "b" if _OPTION_SIZES.get(f) == 1 else "i", default) if t else default
    if "padding" in out:
        out["padding"] = PADDING[out["padding"]]
    if "activation" in out:
        out["activation"] = ACTIVATION.get(out["activation"], out["activation"])
    return out


def parse(data: bytes) -> TFLiteModel:
    """Parse a TFLite FlatBuffer (bytes) into a `TFLiteModel`. Raises TFLiteError when the bytes
    are not a TFLite model or use something this reader does not handle."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise TFLiteError("not a TFLite model (no 'TFL3' file identifier)")
    model = _Table(data, struct.unpack_from("<I", data, 0)[0])
    codes = []
    for oc in model.tables(1):
        code = max(oc.scalar(0, "b"), oc.scalar(3, "i"))  # new files keep both fields
        codes.append(OP_NAMES.get(code, f"OP{code}"))
    buffers = model.tables(4)
    subgraphs = model.tables(2)
    if not subgraphs:
        raise TFLiteError("TFLite model without a subgraph")
    sg = subgraphs[0]
    names, shapes, constants = [], [], {}
    for tid, t in enumerate(sg.tables(0)):
        names.append(t.string(3))
        shape = tuple(int(v) for v in t.vector(0, "i4"))
        shapes.append(shape)
        b = t.scalar(2, "I")
        if b == 0 or b >= len(buffers):
            continue
        if buffers[b].scalar(1, "Q"):
            raise TFLiteError("TFLite buffers stored outside the flatbuffer (offset/size) are not supported")
        raw = buffers[b].vector(0, "u1")
        if raw.size == 0:
            continue
        ttype = t.scalar(1, "b")
        if ttype not in _DTYPES:
            raise TFLiteError(f"tensor '{names[-1]}' has unsupported type {ttype}")
        arr = np.frombuffer(raw.tobytes(), dtype=np.dtype(_DTYPES[ttype]).newbyteorder("<"))
        constants[tid] = arr.reshape(shape) if shape else arr
    ops = []
    for op in sg.tables(3):
        name = codes[op.scalar(0, "I")]
        ins = tuple(int(v) for v in op.vector(1, "i4"))
        outs = tuple(int(v) for v in op.vector(2, "i4"))
        if name == "DEQUANTIZE" and ins[0] in constants:
            constants[outs[0]] = constants[ins[0]].astype(np.float32)
            continue
        ops.append(Op(name, ins, outs, _options(name, op.table(4))))
    for k, v in constants.items():
        if v.dtype == np.float16:
            constants[k] = v.astype(np.float32)
    return TFLiteModel(tuple(names), tuple(shapes), constants, tuple(ops),
                       tuple(int(v) for v in sg.vector(1, "i4")), tuple(int(v) for v in sg.vector(2, "i4")))


def read(path: str | os.PathLike) -> TFLiteModel:
    """Parse the TFLite file at `path` (see `parse`)."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return parse(data)
    except TFLiteError as e:
        raise TFLiteError(f"{path}: {e}") from None
    except (struct.error, ValueError, IndexError) as e:
        raise TFLiteError(f"{path}: corrupt TFLite file ({e})") from None
